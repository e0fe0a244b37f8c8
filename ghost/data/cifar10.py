"""CIFAR-10 from a local copy, decoded once into uint8 tensors and cached on disk.

Two layouts are read:

- the official python batches (``cifar-10-batches-py/``, torchvision's format), at ``root`` or inside it;
- a class-folder image copy: ``root/train/<class>/*`` and ``root/test/<class>/*`` with the ten official
  class names as folder names (any image format Pillow decodes, 32x32).

The decoded tensors are cached in ``cache_dir`` (default: ``$GHOST_CACHE_DIR`` or the repository's
``.cache/``) under a key built from the copy's resolved path and the name, size and modification time of
every file, so a different or modified copy never reuses a stale cache.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ghost.data.roots import DataNotFoundError, data_root
from ghost.io import save_torch_atomic

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
#: Per-channel mean and standard deviation of the CIFAR-10 training images, on the 0..1 scale.
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

ENV_VAR = "GHOST_CIFAR10"
CACHE_ENV_VAR = "GHOST_CACHE_DIR"
OFFICIAL_DIR = "cifar-10-batches-py"
_OFFICIAL_FILES = {True: [f"data_batch_{i}" for i in range(1, 6)], False: ["test_batch"]}
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}
_CACHE_VERSION = 1
_HOW_TO_FIX = (
    f"point to (or set {ENV_VAR} to) a folder holding '{OFFICIAL_DIR}/' (official python batches) "
    "or 'train/<class>/' and 'test/<class>/' image folders, or download the official copy into a folder"
)


def resolve_root(root: str | Path | None) -> Path:
    """The CIFAR-10 root to use: ``root`` or else ``$GHOST_CIFAR10``; raises if neither is set."""
    return data_root(root, ENV_VAR, "CIFAR-10 location", _HOW_TO_FIX).resolve()


def find_layout(root: Path) -> tuple[str, Path]:
    """Detect the layout of a CIFAR-10 copy: ``("official", batches_dir)`` or ``("folders", root)``."""
    for candidate in (root, root / OFFICIAL_DIR):
        if (candidate / "test_batch").is_file() or (candidate / "data_batch_1").is_file():
            return "official", candidate
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "folders", root
    where = f"{root} (does not exist)" if not root.exists() else str(root)
    raise DataNotFoundError(
        f"CIFAR-10 not found: looked for '{OFFICIAL_DIR}/' or 'train/' + 'test/' class folders in {where}; "
        + _HOW_TO_FIX
    )


def download_cifar10(root: str | Path | None) -> Path:
    """Download the official python batches into ``root`` with torchvision (needs the network).

    ``root`` is required (``None`` raises): data is only ever downloaded into a folder the user named.
    """
    from torchvision.datasets import CIFAR10

    if root is None:
        raise ValueError("downloading CIFAR-10 needs the folder to download it into; name one")
    root = Path(root).expanduser().resolve()
    try:
        CIFAR10(str(root), train=True, download=True)
    except OSError as error:  # URLError is an OSError
        raise DataNotFoundError(
            f"downloading CIFAR-10 into {root} failed ({error}); {_HOW_TO_FIX}"
        ) from error
    return root


def _source_files(layout: str, base: Path, train: bool) -> list[Path]:
    if layout == "official":
        files = [base / name for name in _OFFICIAL_FILES[train]]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DataNotFoundError(
                f"CIFAR-10 official batches in {base} are incomplete: missing {', '.join(missing)}; "
                + _HOW_TO_FIX
            )
        return files
    split_dir = base / ("train" if train else "test")
    folders = sorted(p.name for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []
    if folders != sorted(CIFAR10_CLASSES):
        raise DataNotFoundError(
            f"CIFAR-10 class folders in {split_dir} are malformed: expected exactly the folders "
            f"{', '.join(CIFAR10_CLASSES)}, found {', '.join(folders) or 'none'}; " + _HOW_TO_FIX
        )
    files = []
    for name in CIFAR10_CLASSES:
        images = sorted(p for p in (split_dir / name).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not images:
            raise DataNotFoundError(
                f"CIFAR-10 class folder {split_dir / name} holds no images; " + _HOW_TO_FIX
            )
        files.extend(images)
    return files


def cache_key(root: str | Path, train: bool) -> str:
    """Key of the decoded cache of one split: hashes the resolved path, layout and every file's stat."""
    layout, base = find_layout(Path(root).expanduser().resolve())
    return _cache_key(layout, base, _source_files(layout, base, train), train)


def _cache_key(layout: str, base: Path, files: list[Path], train: bool) -> str:
    digest = hashlib.sha256(f"v{_CACHE_VERSION}|{layout}|{base}|{'train' if train else 'test'}".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"|{path.relative_to(base)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def data_fingerprint(root: str | Path | None) -> str:
    """Identity of a copy's contents, independent of where it lives: layout, file names and sizes.

    Runs record it, so that a run is never resumed or reused on a different copy of the data.
    """
    layout, base = find_layout(resolve_root(root))
    digest = hashlib.sha256(layout.encode())
    for train in (True, False):
        for path in _source_files(layout, base, train):
            digest.update(f"|{path.relative_to(base)}:{path.stat().st_size}".encode())
    return digest.hexdigest()[:20]


def _default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / ".cache"


def _decode_official(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for path in files:
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            batch_labels = np.asarray(batch["labels"], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as error:
            raise DataNotFoundError(
                f"CIFAR-10 batch {path} is malformed ({type(error).__name__}: {error}); " + _HOW_TO_FIX
            ) from error
        if len(data) != len(batch_labels):
            raise DataNotFoundError(
                f"CIFAR-10 batch {path} has {len(data)} images but {len(batch_labels)} labels"
            )
        images.append(data)
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def _decode_folders(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    labels = np.empty(len(files), dtype=np.int64)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except OSError as error:
            raise DataNotFoundError(
                f"CIFAR-10 image {path} cannot be decoded ({error}); " + _HOW_TO_FIX
            ) from error
        if pixels.shape != (32, 32, 3):
            raise DataNotFoundError(
                f"CIFAR-10 image {path} is {pixels.shape[1]}x{pixels.shape[0]}, expected 32x32; "
                + _HOW_TO_FIX
            )
        images[i] = pixels
        labels[i] = CIFAR10_CLASSES.index(path.parent.name)
    return images.transpose(0, 3, 1, 2), labels


def load_cifar10(
    root: str | Path | None, train: bool, cache_dir: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one CIFAR-10 split as uint8 images ``[N, 3, 32, 32]`` and int64 labels ``[N]``.

    Args:
        root: the copy (either layout, see the module docstring); ``None`` reads ``$GHOST_CIFAR10``.
        train: the training split (50,000 images) or else the test split (10,000).
        cache_dir: where decoded tensors are cached (default ``$GHOST_CACHE_DIR`` or the repo's ``.cache/``).

    Raises:
        DataNotFoundError: the copy is missing or malformed (the message says how to fix it).
    """
    root = resolve_root(root)
    layout, base = find_layout(root)
    files = _source_files(layout, base, train)
    cache = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    key = _cache_key(layout, base, files, train)
    cache_file = cache / f"cifar10-{'train' if train else 'test'}-{key}.pt"
    if cache_file.is_file():
        try:
            cached = torch.load(cache_file, map_location="cpu", weights_only=True)
            return cached["images"], cached["labels"]
        except (RuntimeError, EOFError, KeyError, pickle.UnpicklingError):
            pass  # an unreadable cache is rebuilt below
    images, labels = (_decode_official if layout == "official" else _decode_folders)(files)
    images_t = torch.from_numpy(np.ascontiguousarray(images))
    labels_t = torch.from_numpy(labels)
    if labels_t.numel() and (labels_t.min() < 0 or labels_t.max() >= len(CIFAR10_CLASSES)):
        raise DataNotFoundError(f"CIFAR-10 labels in {base} are outside 0..9; " + _HOW_TO_FIX)
    save_torch_atomic({"images": images_t, "labels": labels_t}, cache_file)
    return images_t, labels_t


def describe_cifar10(root: str | Path | None) -> dict[str, str]:
    """Provenance of a copy: its folder name (never the machine's absolute path), layout and the first heading and
    any "lossy" note of its SOURCE.md."""
    root = resolve_root(root)
    layout, base = find_layout(root)
    info = {
        "name": root.name,
        "layout": "official python batches" if layout == "official" else "class folders",
    }
    if layout == "folders":
        sample = _source_files(layout, base, train=False)[0]
        info["format"] = sample.suffix.lower().lstrip(".")
    source = root / "SOURCE.md"
    if source.is_file():
        lines = [line.strip() for line in source.read_text(encoding="utf-8", errors="replace").splitlines()]
        title = next((line.lstrip("# ").strip() for line in lines if line.startswith("#")), "")
        lossy = next((line.lstrip("- ").strip() for line in lines if "lossy" in line.lower()), "")
        info["source"] = title
        if lossy:
            info["note"] = lossy
    return info


def data_label(info: dict[str, str]) -> str:
    """One-line description of a copy for tables: name, layout, and whether it is a lossy copy."""
    name = info["name"]
    parts = [f"{name} ({info['layout']}"]
    if info.get("format"):
        parts[0] += f", {info['format'].upper()}"
    parts[0] += ")"
    if "note" in info or info.get("format") in {"jpg", "jpeg", "webp"}:
        parts.append("LOSSY copy of CIFAR-10, scores somewhat lower than on the original (see its SOURCE.md)")
    return "; ".join(parts)
