"""Convert trained CIFAR-10 models into their Ghost versions without retraining from scratch: weight transfer
(ghost.surgery.transfer_weights) and one epoch of fine-tuning with knowledge distillation from the host.

    python -m experiments.transfer --run runs/budget/vgg16_cifar/seed0 runs/budget/resnet56_cifar/seed0
    python -m experiments.transfer --model vgg16_cifar --weights vgg16.pt [--scratch-run runs/x/seed0]

For each trained host (a finished run folder of experiments.train / the table CLIs, or --model with --weights)
and its Ghost version (--ratio s, --dw-size d), it measures on the CIFAR-10 test set (--data or
$GHOST_CIFAR10), with the wall-clock and CPU time of each step:

- the host itself (the teacher);
- (a) the Ghost model right after the weight transfer, before any training (calibrated on --calibration
  class-balanced training images);
- (b) (a) after fine-tuning with distillation from the host (recipe --recipe, default `distill`: one epoch);
- (c) the Ghost model randomly initialised (as `create_model("ghost_<name>")` initialises it, with the seed a
  from-scratch run would use) after the same fine-tuning;
- (d) the Ghost model trained from scratch with the host's recipe, read from its finished run folder
  (`<runs>/<host recipe>/ghost_<name>-s<s>-d<d>/seed<k>` beside the host's, or --scratch-run) if there is one
  of the same recipe and data, else the row says "not run".

Writes results/cifar10_transfer.{csv,md}, results/cifar10_transfer_layers.csv (the fit of every converted
layer) and results/figures/cifar10_transfer.png. Rows of other hosts already in the CSVs are kept, so the hosts
can be measured one command at a time; a host measured again (the same model and recipe, with the same --seed,
s, d and data, wherever its run folder now lies) replaces its rows.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import torch
from torch import nn

from experiments._cli import check_device, check_results_dir, cli_errors, results_dir
from experiments._scale import noted, table_banner
from experiments.plotting import TRANSFER_METHODS, display_name, plot_transfer
from ghost.complexity import count_macs, count_params
from ghost.data import DeviceData, class_balanced_subset
from ghost.io import save_figure_atomic, write_text_atomic
from ghost.layers import check_dw_size, check_ratio
from ghost.models import GHOST_PREFIX, default_input_size
from ghost.provenance import command_line, provenance
from ghost.recipes import Scale
from ghost.runs import FINAL, ModelSpec, RunRecord
from ghost.surgery import transfer_weights
from ghost.train import (
    Dataset,
    Engine,
    EvalStats,
    Recipe,
    TrainConfig,
    TrainingData,
    build_model,
    derive_seed,
    distill,
    evaluate,
    list_recipes,
    load_data,
    load_recipe,
    load_trained,
    resolve_device,
    run_dir,
)

TABLE = "cifar10_transfer"
LAYERS = "cifar10_transfer_layers"
# what identifies a measurement: a host run moved to another folder and measured again replaces its rows
KEY = ["host_model", "host_recipe", "seed", "ratio", "dw_size", "data"]
_DETAILS = {  # what the scale note says of a transfer table
    Scale.SMOKE: "a fine-tuning recipe that only shows that the pipeline runs; not comparable to the paper's "
                 "accuracies.",
    Scale.BUDGET: "short fine-tuning (and hosts trained with short recipes); real accuracies on the CIFAR-10 test "
                  "set, not comparable to the paper's.",
}
T = TypeVar("T")


@dataclass
class Host:
    """A trained host: its model name, the model, where it comes from, and its run's record if any."""

    name: str
    model: nn.Module
    source: str
    final: RunRecord | None
    scratch: Path | None  # where the Ghost model trained from scratch on the host's recipe would be


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    hosts = parser.add_mutually_exclusive_group(required=True)
    hosts.add_argument("--run", nargs="+", type=Path, help="finished run folders of trained hosts")
    hosts.add_argument("--model", help="the host's model name (with --weights), e.g. vgg16_cifar")
    parser.add_argument("--weights", type=Path, help="the host's state_dict (or a checkpoint.pt), with --model")
    parser.add_argument("--scratch-run", type=Path,
                        help="run folder of the Ghost model trained from scratch (one host only; default: beside it)")
    parser.add_argument("--ratio", type=int, default=2, help="Ghost ratio s (default 2)")
    parser.add_argument("--dw-size", type=int, default=3, help="kernel size d of the cheap operation (default 3)")
    parser.add_argument("--recipe", default="distill",
                        help=f"fine-tuning recipe: {', '.join(list_recipes())} or a recipe JSON (default distill)")
    parser.add_argument("--epochs", type=int, help="override the fine-tuning recipe's length")
    parser.add_argument("--train-subset", type=int, help="override the fine-tuning recipe's training images")
    parser.add_argument("--calibration", type=int, default=256,
                        help="class-balanced training images the transfer is fitted on (default 256; the transfer's "
                             "time grows linearly with it)")
    parser.add_argument("--temperature", type=float, default=4.0, help="distillation temperature T (default 4)")
    parser.add_argument("--alpha", type=float, default=0.9, help="weight of the distillation term (default 0.9)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fine-tuning and the random init (default 0)")
    parser.add_argument("--data", help="the CIFAR-10 copy (default: $GHOST_CIFAR10)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="default results/")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _checked_host_name(name: str) -> str:
    if name.startswith(GHOST_PREFIX):
        raise ValueError(f"{name} is already a Ghost model; pass the trained plain model it was converted from")
    if default_input_size(name) != (3, 32, 32):
        raise ValueError(f"{name} is not a CIFAR-10 model (it takes {default_input_size(name)} inputs); the transfer "
                         "experiment runs on CIFAR-10 models such as vgg16_cifar or resnet56_cifar")
    return name


def _scratch_folder(run: Path, final: RunRecord, ratio: int, dw_size: int) -> Path | None:
    """Where ``run``'s Ghost model trained from scratch on the same recipe and seed lives (``None`` when the
    host's recipe cannot be rebuilt from its record)."""
    try:
        recipe = final.recipe
    except ValueError:
        return None
    ghost = TrainConfig(GHOST_PREFIX + final.model.name, recipe, seed=final.seed, ratio=ratio, dw_size=dw_size)
    return run_dir(ghost, run.parents[2])


def load_hosts(args: argparse.Namespace) -> list[Host]:
    """The trained hosts named on the command line."""
    if args.scratch_run is not None and args.run is not None and len(args.run) > 1:
        raise ValueError("--scratch-run names the from-scratch run of one host; pass one --run with it")
    if args.run is None:
        if args.weights is None:
            raise ValueError("--model needs --weights, the host's trained state_dict")
        name = _checked_host_name(args.model)
        host = load_trained(args.weights, name)
        return [Host(name, host.model, str(args.weights), host.record, args.scratch_run)]
    if args.weights is not None:
        raise ValueError("--weights goes with --model, not with --run (a run folder has its model.pt)")
    hosts = []
    for run in args.run:
        host = load_trained(run)
        if host.record is None:
            raise ValueError(f"{run} is not a finished run; pass the run folder of a trained host")
        name = _checked_host_name(host.record.model.name)
        scratch = args.scratch_run or _scratch_folder(Path(run), host.record, args.ratio, args.dw_size)
        hosts.append(Host(name, host.model, str(run), host.record, scratch))
    return hosts


def calibration_batches(train: DeviceData, images: int, batch_size: int) -> list[torch.Tensor]:
    """The first ``images`` training images of a class-balanced subset, normalised, not augmented."""
    index = class_balanced_subset(train.labels.cpu(), images).to(train.images.device)
    picked = train.images[index]
    return [train.normalize(picked[i:i + batch_size]) for i in range(0, len(picked), batch_size)]


def test_accuracy(model: nn.Module, recipe: Recipe, data: TrainingData, device: torch.device) -> EvalStats:
    """``model`` on the test split, with ``recipe``'s device settings and evaluation batch size."""
    engine = Engine.create(model, recipe, device)
    data.test.normalize.channels_last = engine.channels_last
    return evaluate(engine, data.test, recipe.eval_batch_size)


def timed(step: Callable[[], T]) -> tuple[T, float, float]:
    """``step()``, and the wall-clock and CPU seconds (this process, all threads) it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = step()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _scratch_result(host: Host, ratio: int, dw_size: int) -> tuple[dict[str, Any] | None, str]:
    """The from-scratch run's record if it exists and matches the host's recipe and data, and why not."""
    if host.scratch is None:
        return None, "not run: no run folder of the Ghost model trained from scratch is known (pass --scratch-run)"
    if not (host.scratch / FINAL).is_file():
        return None, f"not run: {host.scratch} holds no finished run"
    final = RunRecord.read(host.scratch)
    if final.model != ModelSpec(GHOST_PREFIX + host.name, ratio, dw_size):
        return None, f"not run: {host.scratch} trained {final.model.label}"
    if host.final is not None:
        for key in ("recipe_spec", "data"):
            if final.identity[key] != host.final.identity[key]:
                return None, f"not run: {host.scratch} was trained with another {key.replace('_', ' ')} than the host"
    return final.to_dict(), f"read from {host.scratch}"


def _row(method: str, model_name: str, label: str, model: nn.Module | None,
         result: EvalStats | dict[str, Any] | None, times: tuple[float, float, float], status: str) -> dict[str, Any]:
    """One row: the accuracy (evaluated here, or a finished run's ``final.json``), the size of the evaluated
    model, the ``(step, CPU, total)`` seconds, and how the row was obtained."""
    acc, size = {"test_acc": math.nan, "test_top5": math.nan}, {"params": math.nan, "macs": math.nan}
    if isinstance(result, EvalStats):
        acc = {"test_acc": round(result.top1, 2), "test_top5": round(result.top5, 2)}
    elif result is not None:
        acc, size = ({k: result[k] for k in keys} for keys in (("test_acc", "test_top5"), ("params", "macs")))
    if model is not None:
        size = {"params": count_params(model), "macs": count_macs(model, input_size=(3, 32, 32))}
    step_s, cpu_s, total_s = (round(t, 1) for t in times)
    return {"method": method, "step": TRANSFER_METHODS[method][0], "model": model_name, "name": label, **acc, **size,
            "step_s": step_s, "cpu_s": cpu_s, "total_s": total_s, "status": status}


def measure(host: Host, args: argparse.Namespace, recipe: Recipe, data: TrainingData,
            device: torch.device) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The table rows of one host (and the layer fits of its transfer)."""
    ghost_name, show, nan = GHOST_PREFIX + host.name, not args.no_progress, math.nan
    ghost_label = display_name(ghost_name, args.ratio, args.dw_size)
    host_s = host.final.wall_time_s if host.final else nan
    common = {"host": host.source, "host_model": host.name, "ratio": args.ratio, "dw_size": args.dw_size,
              "host_recipe": host.final.config["recipe"] if host.final else "unknown (--weights)"}
    rows = []

    def add(row: dict[str, Any]) -> None:
        rows.append({**common, **row})
        if not math.isnan(row["test_acc"]):
            print(f"{host.source}: {row['step']}: top-1 {row['test_acc']:.2f} % ({row['step_s'] / 60:.1f} min)",
                  flush=True)

    def finetune(student: nn.Module) -> nn.Module:
        return distill(student, host.model, recipe, data, device, temperature=args.temperature, alpha=args.alpha,
                       seed=args.seed, progress=show)

    host.model.to(device)
    add(_row("host", host.name, display_name(host.name), host.model, test_accuracy(host.model, recipe, data, device),
             (host_s, nan, host_s), "measured here" + ("; step time: the host's training" if host.final else "")))

    torch.manual_seed(derive_seed(args.seed, "init"))
    ghost = build_model(ghost_name, args.ratio, args.dw_size).to(device)
    calibration = calibration_batches(data.train, args.calibration, recipe.batch_size)
    fits, transfer_s, cpu = timed(lambda: transfer_weights(host.model, ghost, calibration, progress=show))
    add(_row("transfer", ghost_name, ghost_label, ghost, test_accuracy(ghost, recipe, data, device),
             (transfer_s, cpu, host_s + transfer_s), "measured here"))

    tuned, wall, cpu = timed(lambda: finetune(ghost))
    add(_row("transfer+distill", ghost_name, ghost_label, tuned, test_accuracy(tuned, recipe, data, device),
             (wall, cpu, host_s + transfer_s + wall), "measured here"))

    torch.manual_seed(derive_seed(args.seed, "init"))  # the init a from-scratch run of this seed starts from
    fresh = build_model(ghost_name, args.ratio, args.dw_size)
    tuned, wall, cpu = timed(lambda: finetune(fresh))
    add(_row("random+distill", ghost_name, ghost_label, tuned, test_accuracy(tuned, recipe, data, device),
             (wall, cpu, host_s + wall), "measured here"))

    scratch, status = _scratch_result(host, args.ratio, args.dw_size)
    seconds = scratch["wall_time_s"] if scratch else nan
    add(_row("scratch", ghost_name, ghost_label, None, scratch, (seconds, nan, seconds), status))
    return rows, [{**common, **asdict(fit)} for fit in fits]


def merged(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    """``new`` and the rows of the CSV at ``path`` (if any) of the hosts ``new`` does not measure."""
    if not path.is_file():
        return new
    try:
        old = pd.read_csv(path, dtype={"host": str, "name": str})  # layer names such as "3" stay names
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} cannot be read ({error}); delete it to start the table over") from error
    if not set(KEY) <= set(old.columns):
        raise ValueError(f"{path} is not a table of this experiment (no {', '.join(KEY)} columns); delete it")
    measured = set(map(tuple, new[KEY].astype(str).values.tolist()))
    keep = [tuple(key) not in measured for key in old[KEY].astype(str).values.tolist()]
    return pd.concat([old[keep], new], ignore_index=True)


def _minutes(seconds: float) -> str:
    return "—" if pd.isna(seconds) else f"{seconds / 60:.1f}"


def markdown(table: pd.DataFrame, layers: pd.DataFrame) -> str:
    """The table, what its rows and columns mean, the fit of every layer, and the provenance."""
    lines = ["# Converting a trained model into its Ghost version: weight transfer and distillation (CIFAR-10)", ""]
    lines += [table_banner(scale, _DETAILS[scale]) for scale in noted(table["finetune_scale"])][:1]
    lines += ["", "| Host | Model | Step | Top-1 (%) | Params (M) | FLOPs (M) | Step (min) | CPU (min) | Total (min) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for _, r in table.iterrows():
        acc = "not run" if pd.isna(r["test_acc"]) else f"{r['test_acc']:.2f}"
        size = ("—", "—") if pd.isna(r["params"]) else (f"{r['params'] / 1e6:.2f}", f"{r['macs'] / 1e6:.1f}")
        lines.append(f"| {display_name(r['host_model'])} | {r['name']} | {r['step']} | {acc} | {size[0]} | {size[1]} "
                     f"| {_minutes(r['step_s'])} | {_minutes(r['cpu_s'])} | {_minutes(r['total_s'])} |")
    lines += [
        "",
        "Rows: the trained host (the teacher); (a) its Ghost version right after the weight transfer "
        "(`ghost.surgery.transfer_weights`: host filters as intrinsic filters, cheap depthwise filters fitted by "
        "least squares on the calibration images, BatchNorm statistics recalibrated), before any training; (b) (a) "
        "fine-tuned with distillation from the host; (c) the Ghost model randomly initialised, with the same "
        "fine-tuning; (d) the Ghost model trained from scratch with the host's own recipe (read from its run folder; "
        "\"not run\" if there is none).",
        "",
        "Columns: Top-1: test accuracy (all test images of the fine-tuning recipe). Params, FLOPs: of the evaluated "
        "model, per 32x32 image (multiply-accumulates of conv and linear layers). Step: wall-clock minutes of that "
        "row's own step (host and (d): their training runs, from final.json; (a): the transfer; (b), (c): the "
        "fine-tuning), the test evaluation excluded. CPU: CPU minutes of this process (all threads) for the steps "
        "measured here. Total: wall-clock minutes from the data to that model ((a) host + transfer, (b) host + "
        "transfer + fine-tuning, (c) host, the teacher, + fine-tuning); — where a part is unknown.",
        "",
        "## Fit of each converted layer",
        "",
        "Normalised squared error of the converted layer's maps before the activation against the host's, on the "
        "calibration images (pooled over maps; 0 exact, 1 no better than each map's mean): the intrinsic maps (host "
        "filters), the ghost maps (least-squares cheap filters) and all maps.",
        "",
        "| Host | Layer | Maps | Intrinsic | Intrinsic NMSE | Ghost NMSE | All NMSE |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for _, r in layers.iterrows():
        lines.append(f"| {display_name(r['host_model'])} (s={r['ratio']}, d={r['dw_size']}) | {r['name']} | "
                     f"{r['channels']} | {r['intrinsic']} | {r['intrinsic_nmse']:.3f} | {r['ghost_nmse']:.3f} | "
                     f"{r['nmse']:.3f} |")
    lines += ["", "## Provenance", ""]
    for column, label in (("host", "hosts"), ("host_recipe", "host recipes"), ("finetune_recipe", "fine-tuning recipe"),
                          ("finetune_spec", "fine-tuning recipe spec"), ("finetune_images", "fine-tuning images"),
                          ("test_images", "test images"), ("calibration_images", "calibration images"),
                          ("temperature", "distillation temperature T"), ("alpha", "distillation weight alpha"),
                          ("data", "data"), ("hardware", "hardware"), ("torch", "torch"), ("commit", "commit"),
                          ("command", "command"), ("finished_at", "measured at")):
        values = "; ".join(sorted(set(table[column].astype(str))))
        lines.append(f"- {label}: {f'`{values}`' if column in ('command', 'finetune_spec') else values}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with cli_errors():
        check_device(args.device)
        check_results_dir(args.results_dir)
        if args.calibration < 1:
            raise ValueError(f"--calibration must be >= 1 images, got {args.calibration}")
        recipe = load_recipe(args.recipe).with_overrides(epochs=args.epochs, train_subset=args.train_subset)
        if recipe.dataset != Dataset.CIFAR10:
            raise ValueError(f"recipe {recipe.name!r} trains on {recipe.dataset}; the transfer experiment needs a "
                             "cifar10 recipe")
        check_ratio(args.ratio)
        check_dw_size(args.dw_size)
        hosts = load_hosts(args)
        device = resolve_device(args.device)
        data = load_data(recipe, args.data, device)
        record = {"finetune_recipe": recipe.name, "finetune_scale": str(recipe.scale),
                  "finetune_spec": json.dumps({k: v for k, v in recipe.to_dict().items() if k != "description"}),
                  "finetune_epochs": recipe.num_epochs(data.train.steps_per_epoch(recipe.batch_size)),
                  "finetune_images": len(data.train), "test_images": len(data.test),
                  "calibration_images": min(args.calibration, len(data.train)), "temperature": args.temperature,
                  "alpha": args.alpha, "seed": args.seed, "data": data.info["label"], **provenance(device)}
        rows, layers = [], []
        for host in hosts:
            host_rows, host_layers = measure(host, args, recipe, data, device)
            stamp = {**record, "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            rows += [{**r, **stamp} for r in host_rows]
            layers += [{**r, **stamp} for r in host_layers]
        folder = results_dir(args.results_dir)
        table = merged(folder / f"{TABLE}.csv", pd.DataFrame(rows))
        layer_table = merged(folder / f"{LAYERS}.csv", pd.DataFrame(layers))
        write_text_atomic(folder / f"{TABLE}.csv", table.to_csv(index=False))
        write_text_atomic(folder / f"{LAYERS}.csv", layer_table.to_csv(index=False))
        write_text_atomic(folder / f"{TABLE}.md", markdown(table, layer_table))
        save_figure_atomic(plot_transfer(table), folder / "figures" / f"{TABLE}.png")
    print(f"wrote {folder / TABLE}.csv/.md, {LAYERS}.csv and figures/{TABLE}.png ({command_line()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
