"""Provenance of a result: git commit, software versions and hardware, recorded beside every number."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

__all__ = ["command_line", "git_commit", "hardware", "provenance"]

_REPO = Path(__file__).resolve().parent.parent


def git_commit(repo: str | os.PathLike = _REPO) -> str:
    """``HEAD``'s hash, suffixed ``-dirty`` when tracked files other than the generated ``results/`` differ
    from it; ``"unknown"`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=repo, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def hardware(device: torch.device | str | None = None) -> str:
    """A one-line description of the machine: the GPU's name when ``device`` is CUDA, else the CPU."""
    if device is not None and torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, CPU only"


def provenance(device: torch.device | str | None = None) -> dict[str, str]:
    """Commit, versions, hardware and the command line, as a flat dict of strings."""
    return {
        "commit": git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "hardware": hardware(device),
        "command": command_line(),
    }


def command_line() -> str:
    """The command that started this process, as ``python -m package.module args`` when run with ``-m``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = f"python -m {spec.name}" if spec is not None else f"python {sys.argv[0]}"
    return " ".join([program, *sys.argv[1:]])
