"""Training throughput on the CPU: every model of the tables in every setting the engine can train it with.

    python -m experiments.bench_train                      # writes results/train_throughput_cpu.{csv,md}
    python -m experiments.bench_train --groups resnet56 --rounds 3 --results-dir /tmp/bench

One SGD step of the engine (``ghost.train.Engine``, ``train_one_epoch``) on a fixed random batch of the model's
input size, per (model, setting). The models of one group (a host and its Ghost variants) are timed side by side
in one process (``ghost.benchmark.time_interleaved``: warm-up steps first, untimed, where ``torch.compile``
compiles; then ``--rounds`` rounds that alternate the order), so that their ratios are fair; images/s is the
batch over the median step time, with the p10-p90 range of the rounds. ``chosen`` marks the setting the engine
trains the model with: the one its recipe pins (``imagenette-64px`` for the ImageNet-format models), or, where
the recipe leaves torch.compile to the engine's probe (``budget``, for CIFAR-10), the faster of the two measured
here (the run's record names what its own probe picked); ``speedup_vs_baseline`` is a model's chosen-setting
images/s over its host's (GhostNet's host is MobileNetV3-Large). Measured on ``--threads`` threads (default 1, as
each job of the campaign trains); the data pipeline is not included.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from experiments._cli import check_device, check_results_dir, cli_errors, results_dir
from experiments.plotting import display_name
from ghost.benchmark import time_interleaved
from ghost.io import write_text_atomic
from ghost.provenance import git_commit, hardware
from ghost.train import DeviceSettings, Engine, Recipe, build_model, load_recipe, train_one_epoch


@dataclass(frozen=True)
class Config:
    """One model of a group: name, s, d and the recipe whose input size, batch and setting it trains with."""

    model: str
    ratio: int | None = None
    dw_size: int | None = None
    recipe: str = "budget"


_IMAGENETTE = "imagenette-64px"
GROUPS: dict[str, tuple[Config, ...]] = {
    "vgg16": (Config("vgg16_cifar"), *(Config("ghost_vgg16_cifar", s, 3) for s in (2, 3, 4, 5)),
              *(Config("ghost_vgg16_cifar", 2, d) for d in (1, 5, 7))),
    "resnet56": (Config("resnet56_cifar"), Config("ghost_resnet56_cifar", 2, 3)),
    "resnet50": (Config("resnet50", recipe=_IMAGENETTE), Config("ghost_resnet50", 2, 3, _IMAGENETTE)),
    "ghostnet": (Config("mobilenet_v3_large", recipe=_IMAGENETTE), Config("ghostnet_100", recipe=_IMAGENETTE)),
}
HOSTS = {"ghostnet_100": "mobilenet_v3_large"}
EAGER_SETTINGS = (DeviceSettings(False, False, False), DeviceSettings(False, True, False),
                  DeviceSettings(True, False, False), DeviceSettings(True, True, False))
COMPILED = DeviceSettings(True, True, True)
STEM = "train_throughput_cpu"


def host(config: Config) -> str:
    """The model a configuration's speed is compared with."""
    return HOSTS.get(config.model, config.model.removeprefix("ghost_"))


def _input(recipe: Recipe) -> tuple[int, int, int]:
    return (3, 32, 32) if recipe.train_crop is None else (3, recipe.train_crop, recipe.train_crop)


def random_batch(recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random batch (images, labels of 10 classes) of the recipe's batch and input size."""
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(recipe.batch_size, *_input(recipe), generator=generator),
            torch.randint(0, 10, (recipe.batch_size,), generator=generator))


def step_function(config: Config, settings: DeviceSettings, recipe: Recipe, batch: tuple[torch.Tensor, torch.Tensor]):
    """One optimizer step of the engine for ``config`` in ``settings`` (a fresh model, seeded)."""
    torch.manual_seed(0)
    engine = Engine.create(build_model(config.model, config.ratio, config.dw_size, num_classes=10), recipe,
                           torch.device("cpu"), settings=settings)
    x, y = batch
    x = x.contiguous(memory_format=torch.channels_last) if settings.channels_last else x.contiguous()
    batches = itertools.repeat((x, y))

    def step() -> None:
        train_one_epoch(engine, batches, range(1), lambda _: recipe.lr)

    return step


def bench_group(configs: tuple[Config, ...], settings: tuple[DeviceSettings, ...], args: argparse.Namespace
                ) -> list[dict[str, object]]:
    """Rows of one group, timed side by side."""
    recipes = {c.recipe: load_recipe(c.recipe) for c in configs}
    batches = {name: random_batch(r) for name, r in recipes.items()}
    calls = {(c, s): step_function(c, s, recipes[c.recipe], batches[c.recipe]) for c in configs for s in settings}
    times = time_interleaved(calls, "cpu", warmup=args.warmup, repeats=args.rounds)
    rows = []
    for (config, setting), seconds in times.items():
        recipe = recipes[config.recipe]
        deciles = statistics.quantiles(seconds, n=10) if len(seconds) > 1 else [seconds[0]] * 9
        rows.append({
            "model": config.model, "name": display_name(config.model, config.ratio, config.dw_size),
            "ratio": config.ratio, "dw_size": config.dw_size, "recipe": recipe.name,
            "input": "x".join(map(str, _input(recipe)[1:])), "batch": recipe.batch_size, "setting": setting.label,
            "images_per_s": round(recipe.batch_size / statistics.median(seconds), 1),
            "images_per_s_p10": round(recipe.batch_size / deciles[-1], 1),
            "images_per_s_p90": round(recipe.batch_size / deciles[0], 1),
            "candidate": setting in recipe.device_candidates("cpu"), "host": host(config),
        })
    return rows


def mark_chosen(df: pd.DataFrame) -> pd.DataFrame:
    """``chosen``: per model, the setting its recipe pins, or of the settings the recipe leaves to the engine's
    probe the fastest measured here (what the probe picks at the start of a run; the run's record names what it
    really picked)."""
    df = df.copy()
    fastest = df[df["candidate"]].groupby(["model", "ratio", "dw_size"], dropna=False)["images_per_s"].idxmax()
    df["chosen"] = df.index.isin(fastest.values)
    return df.drop(columns="candidate")


def with_speedups(df: pd.DataFrame) -> pd.DataFrame:
    """``speedup_vs_baseline``: each row's images/s over its host's in the host's chosen setting."""
    chosen = df[df["chosen"]].set_index("model")["images_per_s"]
    df = df.copy()
    df["speedup_vs_baseline"] = [round(ips / chosen[h], 3) if row_chosen and h in chosen else float("nan")
                                 for ips, h, row_chosen in zip(df["images_per_s"], df["host"], df["chosen"],
                                                               strict=True)]
    return df


def _markdown(df: pd.DataFrame, meta: dict[str, str]) -> str:
    lines = ["# Training throughput on the CPU (images/s, one SGD step of the engine)", "",
             f"Machine: {meta['hardware']}; {meta['threads']} thread(s); torch {meta['torch']}; commit "
             f"{meta['commit']}; {meta['warmup']} warm-up steps and {meta['rounds']} interleaved timed rounds per "
             "(model, setting); median, p10-p90 in brackets. **bold** = the setting the engine trains the model "
             "with (the recipe's, or where it leaves torch.compile to the engine's probe, the faster of the two "
             "measured here); speed-up = chosen images/s over the host's chosen images/s.", ""]
    settings = list(dict.fromkeys(df["setting"]))
    lines += ["| Model | input, batch | " + " | ".join(settings) + " | speed-up vs host |",
              "|---|---|" + "---:|" * (len(settings) + 1)]
    for name, rows in df.groupby("name", sort=False):
        cells = []
        for setting in settings:
            row = rows[rows["setting"] == setting]
            if row.empty:
                cells.append("—")
                continue
            row = row.iloc[0]
            text = f"{row['images_per_s']:.0f} [{row['images_per_s_p10']:.0f}-{row['images_per_s_p90']:.0f}]"
            cells.append(f"**{text}**" if row["chosen"] else text)
        speedup = rows.loc[rows["chosen"], "speedup_vs_baseline"]
        first = rows.iloc[0]
        ratio = f"{speedup.iloc[0]:.2f}x" if len(speedup) and pd.notna(speedup.iloc[0]) else "—"
        lines.append(f"| {name} | {first['input']}, {first['batch']} | " + " | ".join(cells) + f" | {ratio} |")
    lines += ["", f"Written by `{meta['command']}`."]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", default=",".join(GROUPS), help=f"comma-separated groups of {', '.join(GROUPS)}")
    p.add_argument("--compile", default=",".join(GROUPS),
                   help="groups also timed with torch.compile (bf16+channels_last+compile; slow to warm up), "
                        "comma-separated, or none (default: all)")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2; compilation happens here)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu only: this table is about CPU training")
    p.add_argument("--results-dir", type=Path, default=Path("results"), help="where the table goes")
    return p


def parse_names(value: str, known: dict[str, object], flag: str) -> list[str]:
    """The comma-separated names of ``value`` (``none``: no names), each one of ``known``."""
    names = [] if value == "none" else [n.strip() for n in value.split(",") if n.strip()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown {flag} {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with cli_errors():
        if check_device(args.device) != "cpu":
            raise ValueError(f"this benchmark measures CPU training; --device must be cpu, got {args.device!r}")
        if args.rounds < 1 or args.warmup < 0 or args.threads < 1:
            raise ValueError("--rounds and --threads must be >= 1 and --warmup >= 0")
        groups, compiled = parse_names(args.groups, GROUPS, "group"), set(parse_names(args.compile, GROUPS, "group"))
        check_results_dir(args.results_dir)
        torch.set_num_threads(args.threads)
        rows = []
        for group in groups:
            settings = EAGER_SETTINGS + ((COMPILED,) if group in compiled else ())
            rows += bench_group(GROUPS[group], settings, args)
            print(f"timed {group}", flush=True)
        df = with_speedups(mark_chosen(pd.DataFrame(rows).astype({"ratio": "Int64", "dw_size": "Int64"})))
        meta = {"hardware": hardware("cpu"), "threads": str(args.threads), "torch": torch.__version__,
                "commit": git_commit(), "warmup": str(args.warmup), "rounds": str(args.rounds),
                "command": "python -m experiments.bench_train " + " ".join(argv if argv is not None else sys.argv[1:])}
        for key, value in meta.items():
            df[key] = value
        out = results_dir(args.results_dir)
        write_text_atomic(out / f"{STEM}.csv", df.to_csv(index=False))
        write_text_atomic(out / f"{STEM}.md", _markdown(df, meta))
    print(f"wrote {out / STEM}.csv/.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
