"""Convert every classifier of torchvision (and a set of timm models) and record what ghostify did.

    python -m experiments.convert_zoo                                  # writes results/conversion_zoo.{csv,md}
    python -m experiments.convert_zoo --models resnet50,timm/efficientnet_b0 --results-dir /tmp

For each model: how many convs were replaced, why the others were kept, the theoretical speed-up and whether
the ratio-1 check passed (the converted structure at s=1 with the host's weights reproduces the host). BatchNorm
statistics are randomised first, so that the check compares non-trivial functions. A model ghostify refuses
(e.g. a ViT, whose only conv is its patchify stem) is a row with the one-line reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from experiments._cli import check_results_dir, cli_errors, results_dir
from ghost import ghostify
from ghost.io import write_text_atomic
from ghost.layers import check_dw_size, check_ratio
from ghost.models import TIMM_PREFIX, create_model, default_input_size, list_models, model_source
from ghost.provenance import provenance

TIMM_MODELS = (
    "resnet50d", "seresnext26d_32x4d", "res2net50_26w_4s", "dla34", "dpn68b", "hrnet_w18_small", "mixnet_s",
    "tf_efficientnet_b0", "efficientnet_b0", "mobilenetv3_large_100", "mobilenetv4_conv_small", "fbnetc_100",
    "lcnet_050", "ghostnet_100", "ghostnetv2_100", "ghostnetv3_050", "repghostnet_050", "rexnet_100", "tinynet_a",
    "gernet_s", "repvgg_a0", "mobileone_s0", "regnety_002", "regnetz_b16", "cspresnet50", "cspdarknet53",
    "vovnet39a", "ese_vovnet19b_dw", "selecsls42b", "skresnet18", "ecaresnet26t", "nfnet_l0", "resnetv2_50x1_bit",
    "convnext_atto", "edgenext_xx_small", "efficientvit_b0", "fastvit_t8", "mobilevit_xxs", "xception41",
)
SMALL_INPUT = (3, 64, 64)


def _randomise_bn(model: nn.Module, generator: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.track_running_stats and m.running_mean is not None:
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) * 1.5 + 0.5)


def _reason_kind(reason: str) -> str:
    """A reason without its layer-specific details: no parentheses, only the text before a colon or comma."""
    while re.search(r"\([^()]*\)", reason):
        reason = re.sub(r"\s*\([^()]*\)", "", reason)
    return re.split(r"[:,;]", reason, maxsplit=1)[0].strip()


def convert(entry: str, ratio: int, dw_size: int, generator: torch.Generator) -> dict:
    """One row: ghostify ``entry`` at a small input if it runs there, else at its own input size."""
    model, size = create_model(entry).eval(), default_input_size(entry)
    _randomise_bn(model, generator)
    start = time.perf_counter()
    row: dict = {"model": entry}
    for attempt in (SMALL_INPUT, size):
        try:
            converted = ghostify(model, ratio, dw_size, input_size=attempt)
        except ValueError as error:
            row.update(input_size="x".join(map(str, attempt)), status=" ".join(str(error).split())[:240])
            continue
        report = converted.ghost_report
        kept = Counter(_reason_kind(r.reason) for r in report.layers if not r.replaced)
        row.update(input_size=report.inputs, status="converted", convs=len(report.layers),
                   replaced=sum(r.replaced for r in report.layers),
                   absorbed=sum(len(r.absorbed) for r in report.layers), params_before=report.params_before,
                   params_after=report.params_after, speedup=report.speedup, verified=report.verified,
                   verification=report.verification,
                   kept="; ".join(f"{n} {kind}" for kind, n in kept.most_common()))
        break
    row["seconds"] = time.perf_counter() - start
    return row


def _markdown(df: pd.DataFrame, meta: dict[str, str], ratio: int, dw_size: int) -> str:
    ok = df[df.status == "converted"]
    lines = [
        f"# ghostify on the model zoo (s={ratio}, d={dw_size})", "",
        f"{len(ok)} of {len(df)} models converted; the ratio-1 check passed on {int(ok.verified.sum())} of them.",
        "Every conv is replaced or kept with a reason (*kept*, grouped by reason, counts of convs). *absorbed*: host",
        "BatchNorm/activation modules moved into Ghost modules (paper policy). Randomly initialised weights,",
        "randomised BatchNorm statistics; input 64x64 where the model runs on it, else its own size.", "",
        "| model | input | replaced / convs | absorbed | params before -> after | theoretical speed-up | ratio-1 check "
        "| kept |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in df.itertuples():
        if r.status != "converted":
            lines.append(f"| {r.model} | {r.input_size} | - | - | - | - | - | **not converted**: {r.status} |")
            continue
        lines.append(f"| {r.model} | {r.input_size} | {r.replaced} / {r.convs} | {r.absorbed} | "
                     f"{r.params_before / 1e6:.2f}M -> {r.params_after / 1e6:.2f}M | {r.speedup:.2f}x | "
                     f"{'passed' if r.verified else 'NOT PASSED'} | {r.kept} |")
    lines += ["", "## Provenance", "", *[f"- {k}: `{v}`" for k, v in meta.items()]]
    return "\n".join(lines) + "\n"


def _is_known(name: str) -> bool:
    try:
        model_source(name)
    except ValueError:
        return False
    return True


def _entries(models: str | None) -> list[str]:
    """The models to convert: ``models`` (comma-separated) or the default zoo, without timm's when it is missing.

    Raises:
        ValueError: an unknown model name.
    """
    if models:
        entries = models.split(",")
    else:
        entries = [*list_models(source=("ghost", "torchvision")), *(TIMM_PREFIX + m for m in TIMM_MODELS)]
    if importlib.util.find_spec("timm") is None:
        print("timm not installed: its models are skipped")
        entries = [e for e in entries if not e.startswith(TIMM_PREFIX)]
    unknown = [e for e in entries if not _is_known(e)]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; see ghost.models.list_models()")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated names (timm/NAME for timm); default: every torchvision "
                                         "classifier and a set of timm models")
    parser.add_argument("--ratio", type=int, default=2, help="s")
    parser.add_argument("--dw-size", type=int, default=3, help="d")
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="created if missing")
    args = parser.parse_args(argv)
    with cli_errors():
        check_results_dir(args.results_dir)
        check_ratio(args.ratio)
        check_dw_size(args.dw_size)
        entries = _entries(args.models)
        generator = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        rows = []
        for entry in entries:
            rows.append(convert(entry, args.ratio, args.dw_size, generator))
            print(f"{entry:32s} {rows[-1]['status'][:60]:60s} {rows[-1]['seconds']:6.1f} s", flush=True)
        meta = provenance("cpu")
        meta["wall_time"] = f"{time.perf_counter() - start:.0f} s"
        df = pd.DataFrame(rows)
        out = results_dir(args.results_dir)
        write_text_atomic(out / "conversion_zoo.csv", df.to_csv(index=False))
        write_text_atomic(out / "conversion_zoo.md", _markdown(df, meta, args.ratio, args.dw_size))
    print(f"wrote {out}/conversion_zoo.csv and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
