"""Where a CPU training step's time goes: a torch.profiler breakdown of every model of the throughput table.

    python -m experiments.profile_train                    # writes results/train_profile_cpu.{csv,md}
    python -m experiments.profile_train --groups resnet56 --steps 2 --results-dir /tmp/profile

The step is the one ``experiments.bench_train`` times (the engine's SGD step on a fixed random batch), in the
setting that table chose for the model (read from ``--throughput``); a chosen ``+compile`` setting is profiled
in its eager form, because compiled kernels hide the operators. Each operator's CPU self time is summed by kind
(``ghost.benchmark.step_kind_times``: conv, depthwise conv, BatchNorm, activation, add/sum, concat/slice...) and
averaged over ``--steps`` profiled steps. The profiler slows every operator a little and leaves out Python
between them, so the totals are not the table's speed: the breakdown says where the time goes, and the
``extra vs host`` table how a Ghost model's time differs from its host's, kind by kind.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from experiments._cli import check_results_dir, cli_errors, results_dir
from experiments.bench_train import GROUPS, Config, host, parse_names, random_batch, step_function
from experiments.plotting import display_name
from ghost.benchmark import STEP_OP_KINDS, step_kind_times
from ghost.io import write_text_atomic
from ghost.provenance import git_commit, hardware
from ghost.train import DeviceSettings, load_recipe

STEM = "train_profile_cpu"


def chosen_settings(throughput: pd.DataFrame) -> dict[tuple[str, int | None, int | None], DeviceSettings]:
    """``{(model, ratio, dw_size): eager form of the chosen setting}`` from a ``bench_train`` table."""
    out = {}
    for row in throughput[throughput["chosen"]].itertuples():
        label = row.setting.split("+")
        key = (row.model, None if pd.isna(row.ratio) else int(row.ratio),
               None if pd.isna(row.dw_size) else int(row.dw_size))
        out[key] = DeviceSettings(bf16=label[0] == "bf16", channels_last="channels_last" in label, compile=False)
    return out


def _read_throughput(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"no throughput table at {path}; run python -m experiments.bench_train first, or pass "
                         "the table's path")
    df = pd.read_csv(path)
    missing = {"model", "ratio", "dw_size", "setting", "chosen"} - set(df.columns)
    if missing:
        raise ValueError(f"{path} is not a bench_train table (no column {', '.join(sorted(missing))})")
    return df


def profile_config(config: Config, settings: DeviceSettings, steps: int) -> dict[str, float]:
    """Milliseconds per step of each operator kind for one model."""
    recipe = load_recipe(config.recipe)
    return step_kind_times(step_function(config, settings, recipe, random_batch(recipe)), warmup=1, repeats=steps)


def extra_vs_host(df: pd.DataFrame) -> pd.DataFrame:
    """Per Ghost model and kind: its milliseconds per step minus its host's (same kind)."""
    hosts = df.set_index(["model", "kind"])["ms_per_step"]
    ghosts = df[df["host"] != df["model"]].copy()
    ghosts["extra_ms"] = [ms - hosts[(h, kind)] for ms, h, kind in
                          zip(ghosts["ms_per_step"], ghosts["host"], ghosts["kind"], strict=True)]
    return ghosts


def _kind_table(df: pd.DataFrame, column: str, signed: bool) -> list[str]:
    lines = ["| Model | profiled setting | " + " | ".join(STEP_OP_KINDS) + " | total |",
             "|---|---|" + "---:|" * (len(STEP_OP_KINDS) + 1)]
    fmt = "{:+.0f}" if signed else "{:.0f}"
    for name, rows in df.groupby("name", sort=False):
        ms = rows.set_index("kind")[column]
        cells = [fmt.format(ms[k]) for k in STEP_OP_KINDS] + [f"**{fmt.format(ms.sum())}**"]
        lines.append(f"| {name} | {rows['profiled_setting'].iloc[0]} | " + " | ".join(cells) + " |")
    return lines


def _markdown(df: pd.DataFrame, meta: dict[str, str]) -> str:
    lines = ["# Where a CPU training step's time goes (torch.profiler, ms of operator self time per step)", "",
             f"Machine: {meta['hardware']}; {meta['threads']} thread(s); torch {meta['torch']}; commit "
             f"{meta['commit']}; {meta['steps']} profiled steps per model after one untimed step; the engine's SGD "
             "step of `experiments.bench_train` on a random batch of the model's input size and batch, in the "
             "setting that table chose for it (a `+compile` setting profiled eager). Self times of the operators "
             "of each kind; the profiler adds a little to each operator and leaves Python out, so totals are "
             "above the throughput table's step times.", ""]
    lines += _kind_table(df, "ms_per_step", signed=False)
    lines += ["", "## Extra time of each Ghost model over its host, by kind (ms per step; negative: faster)", ""]
    lines += _kind_table(extra_vs_host(df), "extra_ms", signed=True)
    lines += ["", f"Written by `{meta['command']}`."]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", default=",".join(GROUPS), help=f"comma-separated groups of {', '.join(GROUPS)}")
    p.add_argument("--throughput", type=Path, default=Path("results/train_throughput_cpu.csv"),
                   help="the bench_train table whose chosen settings are profiled")
    p.add_argument("--steps", type=int, default=3, help="profiled steps per model (default 3)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1, as bench_train)")
    p.add_argument("--results-dir", type=Path, default=Path("results"), help="where the table goes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with cli_errors():
        if args.steps < 1 or args.threads < 1:
            raise ValueError("--steps and --threads must be >= 1")
        groups = parse_names(args.groups, GROUPS, "group")
        settings = chosen_settings(_read_throughput(args.throughput))
        check_results_dir(args.results_dir)
        torch.set_num_threads(args.threads)
        rows = []
        for config in (c for g in groups for c in GROUPS[g]):
            key = (config.model, config.ratio, config.dw_size)
            if key not in settings:
                raise ValueError(f"{args.throughput} has no chosen setting for {display_name(*key)}; rerun "
                                 "python -m experiments.bench_train with its group")
            kinds = profile_config(config, settings[key], args.steps)
            rows += [{"model": config.model, "name": display_name(*key), "ratio": config.ratio,
                      "dw_size": config.dw_size, "host": host(config), "profiled_setting": settings[key].label,
                      "kind": kind, "ms_per_step": round(ms, 2)} for kind, ms in kinds.items()]
            print(f"profiled {display_name(*key)}", flush=True)
        df = pd.DataFrame(rows).astype({"ratio": "Int64", "dw_size": "Int64"})
        command = " ".join(["python -m experiments.profile_train", *(argv if argv is not None else sys.argv[1:])])
        meta = {"hardware": hardware("cpu"), "threads": str(args.threads), "torch": torch.__version__,
                "commit": git_commit(), "steps": str(args.steps), "command": command}
        for key, value in meta.items():
            df[key] = value
        out = results_dir(args.results_dir)
        write_text_atomic(out / f"{STEM}.csv", df.to_csv(index=False))
        write_text_atomic(out / f"{STEM}.md", _markdown(df, meta))
    print(f"wrote {out / STEM}.csv/.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
