"""Measured inference latency of baselines and their Ghost versions, beside the theoretical speed-up.

    python -m experiments.bench_latency                       # CPU, writes results/latency_cpu.{csv,md}
    python -m experiments.bench_latency --device cuda         # on a GPU

Answers "why is my Ghost model not faster?" with numbers: the MACs fall by about s, but a Ghost module runs
two convolutions (one of them depthwise, which is memory-bound), a concatenation and a slice where the
original ran one dense convolution, so measured speed-ups are smaller than theoretical ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from ghost.benchmark import ghost_time_breakdown, inference_latency
from ghost.complexity import count_macs, count_params
from ghost.io import write_text_atomic
from ghost.models import create_model, default_input_size
from ghost.provenance import provenance

DEFAULT_MODELS = ("vgg16_cifar", "resnet56_cifar", "resnet50")


def _parse_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"values must be >= 1, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated baseline names")
    parser.add_argument("--ratio", type=int, default=2, help="s of the Ghost versions")
    parser.add_argument("--dw-size", type=int, default=3, help="d of the Ghost versions")
    parser.add_argument("--batch-sizes", type=_parse_ints, default=[1, 32], help="e.g. 1,32")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per measurement")
    parser.add_argument("--channels-last", action="store_true", help="run in channels_last memory format")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.exit(2, "error: --device cuda but no CUDA device is visible; use --device cpu\n")
    if not args.results_dir.is_dir():
        parser.exit(2, f"error: --results-dir {args.results_dir} is not a directory; create it first\n")
    records = []
    start = time.perf_counter()
    try:
        for name in args.models.split(","):
            size = default_input_size(name)
            baseline = create_model(name)
            ghost = create_model(f"ghost_{name}", ratio=args.ratio, dw_size=args.dw_size)
            macs = {"baseline": count_macs(baseline, size), "ghost": count_macs(ghost, size)}
            for batch in args.batch_sizes:
                row = {"model": name, "ratio": args.ratio, "dw_size": args.dw_size, "batch_size": batch,
                       "params": count_params(baseline), "ghost_params": count_params(ghost),
                       "macs": macs["baseline"], "ghost_macs": macs["ghost"],
                       "theoretical_speedup": macs["baseline"] / macs["ghost"]}
                for label, model in (("baseline", baseline), ("ghost", ghost)):
                    stats = inference_latency(model, size, batch, args.device, repeats=args.repeats,
                                              channels_last=args.channels_last)
                    prefix = "" if label == "baseline" else "ghost_"
                    row.update({f"{prefix}{k}": v for k, v in stats.items()})
                row["measured_speedup"] = row["median_ms"] / row["ghost_median_ms"]
                parts = ghost_time_breakdown(ghost, size, batch, args.device, repeats=args.repeats)
                row.update({f"ghost_{k}": v for k, v in parts.items()})
                records.append(row)
                print(f"{name:16s} batch {batch:3d}: {row['median_ms']:8.2f} ms -> {row['ghost_median_ms']:8.2f} ms "
                      f"(measured {row['measured_speedup']:.2f}x, theoretical {row['theoretical_speedup']:.2f}x)")
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    meta = provenance(args.device)
    meta.update(device=args.device, threads=str(torch.get_num_threads()), repeats=str(args.repeats),
                channels_last=str(args.channels_last), wall_time=f"{time.perf_counter() - start:.0f} s")
    df = pd.DataFrame(records)
    stem = args.results_dir / f"latency_{torch.device(args.device).type}"
    lines = [
        f"# Inference latency: baseline vs Ghost (s={args.ratio}, d={args.dw_size}) on {meta['hardware']}", "",
        "Median of the timed forward passes (eval mode, `torch.inference_mode`, fp32, random input at the model's",
        "paper input size); p10-p90 in brackets. Theoretical speed-up = MACs ratio.", "",
        "| model | batch | baseline ms | Ghost ms | measured speed-up | theoretical speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in df.itertuples():
        lines.append(f"| {r.model} | {r.batch_size} | {r.median_ms:.2f} [{r.p10_ms:.2f}-{r.p90_ms:.2f}] | "
                     f"{r.ghost_median_ms:.2f} [{r.ghost_p10_ms:.2f}-{r.ghost_p90_ms:.2f}] | "
                     f"{r.measured_speedup:.2f}x | {r.theoretical_speedup:.2f}x |")
    lines += [
        "", "## Where the Ghost model's time goes", "",
        "Median ms per forward pass, each Ghost module and branch timed with hooks (which add some overhead:",
        "read the proportions). Primary and cheap branches include their BatchNorm and activation.", "",
        "| model | batch | total | primary convs | cheap depthwise ops | concat + slice | rest of the network |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in df.itertuples():
        share = [f"{v:.2f} ({100 * v / r.ghost_total_ms:.0f}%)" for v in
                 (r.ghost_primary_ms, r.ghost_cheap_ms, r.ghost_concat_slice_ms, r.ghost_rest_ms)]
        lines.append(f"| ghost_{r.model} | {r.batch_size} | {r.ghost_total_ms:.2f} | {' | '.join(share)} |")
    lines += ["", "## Provenance", "", *[f"- {k}: `{v}`" for k, v in meta.items()]]
    write_text_atomic(stem.with_suffix(".csv"), df.to_csv(index=False))
    write_text_atomic(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {stem}.csv and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
