"""Measured inference latency of baselines and their Ghost versions in the runtimes they are deployed with.

    python -m experiments.bench_latency                       # CPU, writes results/latency_cpu.{csv,md}
    python -m experiments.bench_latency --models resnet50 --runtimes eager,onnxruntime --batch-sizes 1
    python -m experiments.bench_latency --device cuda --runtimes eager,folded,compile

Answers "why is my Ghost model not faster?" with numbers: the MACs fall by about s, but a Ghost module runs
two convolutions (one of them depthwise, which is memory-bound), a concatenation and a slice where the
original ran one dense convolution, so measured speed-ups are smaller than theoretical ones. Each model pair is
timed in PyTorch eager, PyTorch with BatchNorm folded + channels_last, torch.compile, ONNX Runtime and OpenVINO,
baseline and Ghost calls alternating; every runtime's outputs are checked against eager PyTorch; and the faster
of ONNX Runtime and OpenVINO profiles both models operator by operator (results/latency_cpu_ops.csv).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

from experiments._cli import check_device, check_results_dir, cli_errors, results_dir
from ghost.benchmark import TIMM_PREFIX, ModelPair, latency_stats, time_interleaved
from ghost.complexity import count_macs, count_params
from ghost.io import write_text_atomic
from ghost.layers import check_dw_size, check_ratio
from ghost.provenance import provenance
from ghost.runtimes import (
    OP_CATEGORIES,
    PROFILED_RUNTIMES,
    RUNTIMES,
    build_runner,
    check_runtimes,
    export_onnx,
    max_abs_diff,
    op_category,
    profile_operators,
    runtime_versions,
)
from ghost.train import resolve_device

DEFAULT_MODELS = (
    "vgg16_cifar", "resnet56_cifar", "resnet50", "mobilenet_v3_large:ghostnet", "mobilenet_v3_large:timm/ghostnet_100",
)
LABELS = ("baseline", "ghost")
TORCH_RUNTIMES = tuple(r for r in RUNTIMES if r not in PROFILED_RUNTIMES)


def _parse_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"values must be >= 1, got {text!r}")
    return values


def _positive(text: str) -> int:
    value = _parse_ints(text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"expected one integer, got {text!r}")
    return value[0]


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text[:200]}"


def _build(runtime, model, x, onnx_path, threads):
    """A runner, or the one-line reason it could not be built."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build_runner(runtime, model, x, onnx_path=onnx_path, threads=threads)
    except Exception as error:  # a runtime's own failure is a result to report, not a crash
        return _one_line(error)


def _export(model, size, folder, label):
    """The exported ONNX file, or the one-line reason the export failed."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = export_onnx(model, size, Path(folder) / f"{label}.onnx")
    except Exception as error:
        return f"ONNX export {_one_line(error)}"
    print(f"  exported {label} to ONNX in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def _measure(models, x, runtime, onnx, args, refs, device):
    """One row's measurements: build both runners, check their outputs, time them interleaved."""
    row, runners, failures = {}, {}, []
    for label in LABELS:
        path = onnx.get(label)
        built = path if isinstance(path, str) else _build(runtime, models[label], x, path, args.threads)
        if isinstance(built, str):
            failures.append(f"failed ({label}): {built}")
            row[f"{label}_max_abs_diff"] = math.nan
            continue
        runners[label] = built
        row[f"{label}_build_s"] = built.build_s
        diff = max_abs_diff(built(x), refs[label])
        row[f"{label}_max_abs_diff"] = diff
        allowed = args.tolerance * max(1.0, float(refs[label].abs().max()))
        if not diff <= allowed:
            failures.append(f"outputs differ ({label}): max abs diff {diff:.2g} > {allowed:.2g}")
    if runners:
        times = time_interleaved({k: r.bind(x) for k, r in runners.items()}, device, args.warmup, args.repeats)
        for label, seconds in times.items():
            row.update({f"{label}_{k}": v for k, v in latency_stats(seconds).items()})
    row["status"] = "; ".join(failures) or "ok"
    return row


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="comma-separated NAME (NAME vs ghost_NAME at --ratio/--dw-size) or BASELINE:GHOST "
                             "(two separate models; timm/NAME for a timm model)")
    parser.add_argument("--runtimes", help=f"comma-separated, from {','.join(RUNTIMES)} (default: all on CPU, "
                        f"{','.join(TORCH_RUNTIMES)} on CUDA)")
    parser.add_argument("--ratio", type=int, default=2, help="s of the Ghost versions")
    parser.add_argument("--dw-size", type=int, default=3, help="d of the Ghost versions")
    parser.add_argument("--batch-sizes", type=_parse_ints, default=[1, 8], help="latency and throughput, e.g. 1,8")
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda[:N] for the torch runtimes, or auto (CUDA when available)")
    parser.add_argument("--repeats", type=_positive, default=10, help="timed calls per model and runtime")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before them")
    parser.add_argument("--threads", type=_positive, default=torch.get_num_threads(),
                        help="intra-op threads of every runtime (default: torch's)")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="allowed max abs diff vs eager, times max(1, max |eager output|)")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-operator profiles")
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="created if missing")
    return parser


def _pairs(args: argparse.Namespace, device: torch.device, notes: list[str]) -> tuple[list[str], list[ModelPair]]:
    """The runtimes and model pairs to compare; a note on timm models skipped because timm is missing.

    Raises:
        ValueError: a bad s, d, runtime or model name, or no model at all.
    """
    check_ratio(args.ratio)
    check_dw_size(args.dw_size)
    if args.warmup < 0 or not args.tolerance > 0:
        raise ValueError(f"need --warmup >= 0 and --tolerance > 0, got {args.warmup} and {args.tolerance}")
    default = RUNTIMES if device.type == "cpu" else TORCH_RUNTIMES
    runtimes = check_runtimes(args.runtimes.split(",") if args.runtimes else default, device)
    entries = [e for e in args.models.split(",") if e.strip()]
    skipped = [e for e in entries if TIMM_PREFIX in e] if importlib.util.find_spec("timm") is None else []
    if skipped:
        entries = [e for e in entries if e not in skipped]
        notes.append(f"timm not installed, skipped: {', '.join(skipped)}")
        print(notes[-1])
    pairs = [ModelPair.parse(e, ratio=args.ratio, dw_size=args.dw_size) for e in entries]
    if not pairs:
        raise ValueError("no model to compare")
    return runtimes, pairs


def _run_pairs(pairs: list[ModelPair], runtimes: list[str], args: argparse.Namespace, device: torch.device,
               notes: list[str]) -> tuple[list[dict], list[dict]]:
    """Latency and profile rows of every pair, with torch's thread count set to ``args.threads`` meanwhile."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    records, op_records = [], []
    generator = torch.Generator().manual_seed(0)
    try:
        for pair in pairs:
            rows, ops = _run_pair(pair, runtimes, args, device, generator, notes)
            records += rows
            op_records += ops
    finally:
        torch.set_num_threads(previous_threads)
    return records, op_records


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with cli_errors():
        device = resolve_device(check_device(args.device))
        check_results_dir(args.results_dir)
        notes: list[str] = []
        runtimes, pairs = _pairs(args, device, notes)
        start = time.perf_counter()
        records, op_records = _run_pairs(pairs, runtimes, args, device, notes)
        meta = provenance(device)
        meta.update({k: v for k, v in runtime_versions().items() if k != "torch"})
        meta.update(device=str(device), runtimes=",".join(runtimes), batch_sizes=",".join(map(str, args.batch_sizes)),
                    threads=str(args.threads), warmup=str(args.warmup), repeats=str(args.repeats),
                    tolerance=str(args.tolerance), wall_time=f"{time.perf_counter() - start:.0f} s")
        stem = results_dir(args.results_dir) / f"latency_{device.type}"
        df = pd.DataFrame(records)
        ops = pd.DataFrame(op_records, columns=["model", "batch_size", "runtime", "network", "op_type", "category",
                                                "ms", "share"])
        write_text_atomic(stem.with_suffix(".csv"), df.to_csv(index=False))
        write_text_atomic(stem.parent / f"{stem.name}_ops.csv", ops.to_csv(index=False))
        write_text_atomic(stem.with_suffix(".md"), _markdown(df, ops, meta, args, notes))
    print(f"wrote {stem}.csv, {stem}_ops.csv and {stem}.md")
    return 0


def _run_pair(pair: ModelPair, runtimes: list[str], args, device: torch.device, generator: torch.Generator,
              notes: list[str]) -> tuple[list[dict], list[dict]]:
    """Rows of the latency table and of the per-operator profile for one model pair, at every batch size."""
    records: list[dict] = []
    op_records: list[dict] = []
    if "compile" in runtimes:
        torch._dynamo.reset()  # the previous pair's compiled graphs are done with: start each pair afresh
    models = {k: m.to(device) for k, m in pair.build().items()}
    macs = {k: count_macs(m, pair.input_size) for k, m in models.items()}
    info = {"model": pair.label, "baseline": pair.baseline, "ghost": pair.ghost, "ratio": pair.ratio,
            "dw_size": pair.dw_size, "baseline_params": count_params(models["baseline"]),
            "ghost_params": count_params(models["ghost"]), "baseline_macs": macs["baseline"],
            "ghost_macs": macs["ghost"], "theoretical_speedup": macs["baseline"] / macs["ghost"]}
    with tempfile.TemporaryDirectory(prefix="bench_latency_") as tmp:
        onnx = {}
        if any(r in PROFILED_RUNTIMES for r in runtimes):
            onnx = {k: _export(m, pair.input_size, tmp, k) for k, m in models.items()}
        for batch in args.batch_sizes:
            x = torch.randn(batch, *pair.input_size, generator=generator).to(device)
            with torch.inference_mode():
                refs = {k: m(x).cpu() for k, m in models.items()}
            rows = {}
            for runtime in runtimes:
                paths = onnx if runtime in PROFILED_RUNTIMES else {}
                row = {**info, "batch_size": batch, "runtime": runtime,
                       **_measure(models, x, runtime, paths, args, refs, device)}
                row["measured_speedup"] = row.get("baseline_median_ms", math.nan) / row.get(
                    "ghost_median_ms", math.nan)
                row["measured_over_theoretical"] = row["measured_speedup"] / row["theoretical_speedup"]
                rows[runtime] = row
                records.append(row)
                print(f"{pair.label:36s} batch {batch:3d} {runtime:11s}: "
                      f"{row.get('baseline_median_ms', math.nan):8.2f} ms -> "
                      f"{row.get('ghost_median_ms', math.nan):8.2f} ms (measured "
                      f"{row['measured_speedup']:.2f}x, theoretical {row['theoretical_speedup']:.2f}x) "
                      f"{row['status']}", flush=True)
            if not args.no_profile:
                op_records += _profile(pair, rows, onnx, x, args, notes)
    return records, op_records


def _profile(pair, rows, onnx, x, args, notes) -> list[dict]:
    """Per-operator rows for both models, in the faster (for the Ghost model) of ONNX Runtime and OpenVINO."""
    ok = [r for r in PROFILED_RUNTIMES if r in rows and rows[r]["status"] == "ok"]
    if not ok:
        return []
    best = min(ok, key=lambda r: rows[r]["ghost_median_ms"])
    out = []
    for label in LABELS:
        try:
            profile = profile_operators(best, onnx[label], x, threads=args.threads, warmup=args.warmup,
                                        repeats=args.repeats)
        except Exception as error:  # a profiler failure is reported, not fatal
            notes.append(f"{best} profile of {pair.label} ({label}, batch {x.shape[0]}) failed: {_one_line(error)}")
            return []
        for op, ms in sorted(profile.op_ms.items(), key=lambda kv: -kv[1]):
            out.append({"model": pair.label, "batch_size": int(x.shape[0]), "runtime": best, "network": label,
                        "op_type": op, "category": op_category(op), "ms": ms, "share": ms / profile.total_ms})
    return out


def _ms(r, label: str) -> str:
    median = getattr(r, f"{label}_median_ms", math.nan)
    if not isinstance(median, float) or math.isnan(median):
        return "-"
    return f"{median:.2f} [{getattr(r, f'{label}_p10_ms'):.2f}-{getattr(r, f'{label}_p90_ms'):.2f}]"


def _x(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def _outputs(r) -> str:
    diffs = [getattr(r, f"{k}_max_abs_diff", math.nan) for k in LABELS]
    text = " / ".join("-" if math.isnan(d) else f"{d:.1e}" for d in diffs)
    return text if r.status == "ok" else f"**{r.status}** ({text})"


def _markdown(df: pd.DataFrame, ops: pd.DataFrame, meta: dict[str, str], args, notes: list[str]) -> str:
    lines = [
        f"# Inference latency by runtime: baseline vs Ghost on {meta['hardware']}", "",
        "Each model pair runs in up to five ways: **eager** PyTorch (fp32); **folded**: PyTorch after",
        "`ghost.deploy.prepare_for_inference` (every BatchNorm folded into its conv, the host's ReLU after Ghost",
        "modules that already end in ReLU removed) with channels_last tensors; **compile**: `torch.compile` of the",
        "eager model (inductor, static shapes); **onnxruntime**: the ONNX export of the prepared model in ONNX Runtime",
        "(CPU, graph optimisation ALL); **openvino**: the same ONNX file in OpenVINO (CPU, latency hint, fp32).",
        f"Every runtime uses {meta['threads']} intra-op threads.", "",
        "## Latency", "",
        f"Median ms per batch over {meta['repeats']} timed calls (after {meta['warmup']} warmup calls), p10-p90 in",
        "brackets; within a runtime the baseline and Ghost calls alternate, so noise hits both. Measured speed-up =",
        "baseline / Ghost median; theoretical = ratio of their MACs; the ratio of the two says how much of the MAC",
        "saving turns into time. *Outputs vs eager* is the max abs difference of each model's output (baseline /",
        f"Ghost) from eager PyTorch on the same batch; beyond {meta['tolerance']} x max(1, max |output|) the row is",
        f"flagged. A row named after a model compares it with `ghost_<model>` (s = {args.ratio}, d = {args.dw_size});",
        "'X vs Y' rows compare two separately designed networks. All are randomly initialised (latency does not",
        "depend on the weights) and fed random input at their usual size (32x32 CIFAR, 224x224 ImageNet).", "",
        "| model | batch | runtime | baseline ms | Ghost ms | measured speed-up | theoretical | measured / theoretical "
        "| outputs vs eager |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in df.itertuples():
        lines.append(f"| {r.model} | {r.batch_size} | {r.runtime} | {_ms(r, 'baseline')} | {_ms(r, 'ghost')} | "
                     f"{_x(r.measured_speedup)} | {r.theoretical_speedup:.2f}x | "
                     f"{'-' if math.isnan(r.measured_over_theoretical) else f'{r.measured_over_theoretical:.2f}'} | "
                     f"{_outputs(r)} |")
    lines += ["", "## Where the time goes", ""]
    if ops.empty:
        lines.append("No per-operator profile (`--no-profile`, or neither onnxruntime nor openvino ran).")
    else:
        lines += [
            "For each model and batch, the faster runtime (for the Ghost model) of ONNX Runtime and OpenVINO profiles",
            "both models node by node; node times are summed by category, in ms per inference and % of the profiled",
            "total (the sum of node times, which leaves out the runtime's overhead between nodes, so it is a little",
            "below the latency above). *depthwise conv* holds the Ghost modules' cheap operations (and a MobileNet's",
            "depthwise convs), *concat/slice* the Ghost modules' concatenations, *reorder/memory* layout conversions",
            "and copies. Per operator type: `latency_cpu_ops.csv`. A concatenation costs no MACs but, unless the",
            "runtime writes both branches in place, copies the Ghost module's whole output (RepGhost, arXiv",
            "2211.06088, re-parameterises the concatenation away for that reason).",
            "",
            "| model | batch | runtime | network | profiled total ms | "
            + " | ".join(OP_CATEGORIES) + " |",
            "|---|---:|---|---|---:|" + "---:|" * len(OP_CATEGORIES),
        ]
        keys = ["model", "batch_size", "runtime", "network"]
        for (model, batch, runtime, network), group in ops.groupby(keys, sort=False):
            total = group["ms"].sum()
            by_cat = group.groupby("category")["ms"].sum()
            cells = [f"{by_cat.get(c, 0.0):.2f} ({100 * by_cat.get(c, 0.0) / total:.0f}%)" for c in OP_CATEGORIES]
            lines.append(f"| {model} | {batch} | {runtime} | {network} | {total:.2f} | {' | '.join(cells)} |")
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    lines += ["", "## Provenance", "", *[f"- {k}: `{v}`" for k, v in meta.items()]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
