"""ghost.redundancy: metrics on planted structure, the cheap-op fit, capture, the ImageNet loader, the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from experiments import redundancy as cli
from ghost import GhostConv2d, ghostify
from ghost.data import DataNotFoundError
from ghost.data.imagenet import load_imagenet_samples
from ghost.redundancy import (
    analyze_layer,
    analyze_model,
    capture_feature_maps,
    channel_similarity,
    compare_models,
    comparison_points,
    conv_layers,
    effective_rank,
    fit_cheap_op,
    ghost_layers,
    held_out_fit_errors,
    in_d_sweep,
    load_model,
    matching_layers,
    near_duplicate_share,
    nearest_neighbour_similarity,
    pair_fit_errors,
    plot_feature_grid,
    plot_intrinsic_ghost,
    plot_layer_curves,
    plot_mse_vs_d,
    reports_frame,
    top_pairs,
    weights_kind,
)
from ghost.runs import FINAL, MODEL
from ghost.train import build_model

REPO = Path(__file__).resolve().parents[1]


def planted(seed: int = 0, size: int = 64) -> torch.Tensor:
    """[3, 8, size, size]: independent Gaussian channels, except c2 = -3 * c0 and c5 = 0.5 * c1 + 2 * c3
    (in every image)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 8, size, size, generator=g, dtype=torch.float64)
    x[:, 2] = -3 * x[:, 0]
    x[:, 5] = 0.5 * x[:, 1] + 2 * x[:, 3]
    return x


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),
    )


# --- metrics ---------------------------------------------------------------------------------------


def test_channel_similarity_finds_planted_duplicate_and_ignores_unrelated_channels():
    sim = channel_similarity(planted())
    assert sim.shape == (8, 8)
    assert torch.equal(sim, sim.T)
    assert torch.all(sim.diagonal() == 1)
    assert sim[0, 2].item() == pytest.approx(1.0, abs=1e-12)  # c2 = -3 c0: sign and scale do not matter
    assert top_pairs(sim, 1)[0][:2] == (0, 2)
    # c5 = 0.5 c1 + 2 c3: cos with c3 is 2 / sqrt(4.25) = 0.970, with c1 is 0.5 / sqrt(4.25) = 0.243
    assert sim[3, 5].item() == pytest.approx(2 / math.sqrt(4.25), abs=0.01)
    assert sim[1, 5].item() == pytest.approx(0.5 / math.sqrt(4.25), abs=0.02)
    unrelated = [(0, 1), (0, 3), (1, 3), (4, 6), (6, 7), (4, 7)]
    # independent channels over 64*64 pixels: |cos| ~ 1/64
    assert max(sim[i, j].item() for i, j in unrelated) < 0.05


def test_channel_similarity_zero_channel_and_batch_average():
    x = planted()
    x[:, 4] = 0
    sim = channel_similarity(x)
    assert torch.all(sim[4, torch.arange(8) != 4] == 0) and sim[4, 4] == 1
    # a pair identical in one image of two and orthogonal in the other averages to 0.5
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    fmap = torch.stack([torch.stack([a, a]), torch.stack([a, b])])
    assert channel_similarity(fmap)[0, 1].item() == pytest.approx(0.5)


def test_nearest_neighbour_share_and_top_pairs():
    sim = channel_similarity(planted())
    nn_sim = nearest_neighbour_similarity(sim)
    assert nn_sim[0].item() == pytest.approx(1.0) and nn_sim[2].item() == pytest.approx(1.0)
    # channels 0, 2 (exact) and 3, 5 (0.970) have a near duplicate at 0.9; 4 of 8
    assert near_duplicate_share(sim, 0.9) == 0.5
    assert near_duplicate_share(sim, 0.99) == 0.25
    assert near_duplicate_share(sim, 0.0) == 1.0
    pairs = top_pairs(sim, 3)
    assert [p[:2] for p in pairs[:2]] == [(0, 2), (3, 5)]
    assert pairs[0][2] >= pairs[1][2] >= pairs[2][2]
    assert len(top_pairs(sim, 100)) == 28
    # disjoint: (0, 2) and (3, 5) first, then no pair touching 0, 2, 3 or 5
    disjoint = top_pairs(sim, 4, disjoint=True)
    assert [p[:2] for p in disjoint[:2]] == [(0, 2), (3, 5)]
    assert len(disjoint) == 4 and not {0, 2, 3, 5} & {c for p in disjoint[2:] for c in p[:2]}
    assert len(top_pairs(sim, 10, disjoint=True)) == 4  # 8 channels make at most 4 disjoint pairs


def test_effective_rank_definition():
    g = torch.Generator().manual_seed(1)
    u, v = torch.randn(2, 16, 1, generator=g), torch.randn(2, 1, 100, generator=g)
    rank_one = (u @ v).reshape(2, 16, 10, 10)
    assert effective_rank(rank_one) == pytest.approx(1.0, abs=1e-6)
    q = torch.linalg.qr(torch.randn(100, 4, generator=g, dtype=torch.float64)).Q.T  # 4 orthonormal rows
    assert effective_rank((5 * q).reshape(1, 4, 10, 10)) == pytest.approx(4.0, abs=1e-9)
    # singular values (3, 1): p = (0.75, 0.25), erank = exp(H(p))
    two = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    two[0, 0, 0, 0], two[0, 1, 1, 1] = 3.0, 1.0
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert effective_rank(two) == pytest.approx(expected, abs=1e-9)
    assert effective_rank(torch.zeros(1, 3, 4, 4)) == 0.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: channel_similarity(torch.zeros(3, 4, 4)), "add a batch dimension"),
        (lambda: near_duplicate_share(torch.eye(3), 1.5), "threshold"),
        (lambda: top_pairs(torch.eye(1), 1), "C >= 2"),
        (lambda: top_pairs(torch.eye(3), 0), "k must be"),
    ],
)
def test_metric_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- the cheap-op fit ------------------------------------------------------------------------------


def test_fit_recovers_known_depthwise_filter_at_d3():
    g = torch.Generator().manual_seed(2)
    source = torch.randn(20, 24, generator=g, dtype=torch.float64)
    kernel = torch.randn(3, 3, generator=g, dtype=torch.float64)
    target = F.conv2d(source[None, None], kernel[None, None], padding=1)[0, 0] + 0.3
    fit = fit_cheap_op(source, target, 3)
    assert torch.allclose(fit.weight, kernel, atol=1e-5)
    assert fit.bias == pytest.approx(0.3, abs=1e-5)
    assert fit.mse < 1e-20 and fit.nmse < 1e-20
    bigger = fit_cheap_op(source, target, 5)  # the 3x3 filter sits in the middle of the 5x5 one
    assert torch.allclose(bigger.weight[1:4, 1:4], kernel, atol=1e-5)
    assert bigger.weight.abs().sum() - bigger.weight[1:4, 1:4].abs().sum() < 1e-5
    assert fit_cheap_op(source, target, 1).mse > 0.1  # a 1x1 map cannot make it


def test_fit_d1_of_a_scaled_map_and_float32_input():
    source = torch.rand(16, 16)
    fit = fit_cheap_op(source, -2.5 * source + 1.0, 1)
    assert fit.weight.shape == (1, 1)
    assert fit.weight.item() == pytest.approx(-2.5, abs=1e-5)
    assert fit.bias == pytest.approx(1.0, abs=1e-5)
    assert fit.mse < 1e-12


def test_fit_of_unrelated_noise_explains_nothing_and_constant_target():
    g = torch.Generator().manual_seed(3)
    source, target = torch.randn(2, 32, 32, generator=g, dtype=torch.float64)
    assert fit_cheap_op(source, target, 3).nmse == pytest.approx(1.0, abs=0.03)  # 10 params for 1024 px
    constant = fit_cheap_op(source, torch.full((32, 32), 2.0), 3)
    assert constant.mse < 1e-20 and math.isnan(constant.nmse) and constant.bias == pytest.approx(2.0)
    zero_source = fit_cheap_op(torch.zeros(8, 8), target[:8, :8], 3)  # rank-deficient design
    assert torch.all(zero_source.weight == 0) and zero_source.nmse == pytest.approx(1.0)


@pytest.mark.parametrize("d", [0, 2, -1, 3.0, True])
def test_fit_rejects_bad_d(d):
    with pytest.raises(ValueError, match="odd integer"):
        fit_cheap_op(torch.zeros(4, 4), torch.zeros(4, 4), d)


def test_fit_rejects_mismatched_maps():
    with pytest.raises(ValueError, match="same shape"):
        fit_cheap_op(torch.zeros(4, 4), torch.zeros(4, 5), 1)


def test_pair_fit_errors_decrease_with_d_and_skip_underdetermined():
    x = planted(size=16)
    x[:, 7] = F.conv2d(x[:, 6:7], torch.ones(1, 1, 3, 3, dtype=torch.float64), padding=1)[:, 0]
    errors = pair_fit_errors(x, [(6, 7), (1, 5)], (1, 3, 5))
    assert errors[1][0] >= errors[3][0] >= errors[5][0]  # nested models
    exact = pair_fit_errors(x, [(6, 7)], (1, 3))
    assert exact[3][0] < 1e-20 and exact[1][1] > 0.1
    tiny = pair_fit_errors(planted(size=5), [(0, 2)], (1, 3))
    assert math.isnan(tiny[1][0]) and math.isnan(tiny[3][0])  # 5x5 maps are too small for d up to 3
    with pytest.raises(ValueError, match="channel indices"):
        pair_fit_errors(x, [(0, 8)])


def test_one_rule_admits_maps_at_least_twice_the_largest_filter():
    assert in_d_sweep(14, 14, (1, 3, 5, 7)) and in_d_sweep(6, 9, (1, 3))
    assert not in_d_sweep(13, 32, (1, 3, 5, 7)) and not in_d_sweep(5, 5, (3,))


def _known_filter_plus_noise(images: int, size: int = 16, noise: float = 0.5) -> torch.Tensor:
    """[images, 2, size, size]: channel 1 is a fixed random 3x3 filter of channel 0 plus Gaussian noise."""
    g = torch.Generator().manual_seed(0)
    source = torch.randn(images, 1, size, size, generator=g, dtype=torch.float64)
    weight = torch.randn(1, 1, 3, 3, generator=g, dtype=torch.float64)
    target = F.conv2d(source, weight, padding=1) + noise * torch.randn(source.shape, generator=g, dtype=torch.float64)
    return torch.cat([source, target], dim=1)


def test_held_out_error_is_lowest_at_the_true_filter_size_while_in_sample_keeps_falling():
    fmap = _known_filter_plus_noise(images=8)
    in_sample = pair_fit_errors(fmap, [(0, 1)])
    held_out = held_out_fit_errors(fmap, [(0, 1)])
    assert in_sample[1][1] > in_sample[3][1] > in_sample[5][1] > in_sample[7][1]  # nested: falls by construction
    assert min(held_out, key=lambda d: held_out[d][1]) == 3
    assert held_out[1][1] > 10 * held_out[3][1] and held_out[7][1] > held_out[5][1] > held_out[3][1]


def test_held_out_fit_shares_one_filter_over_images_and_scores_the_others():
    fmap = _known_filter_plus_noise(images=4, noise=0.0)
    assert held_out_fit_errors(fmap, [(0, 1)], (1, 3))[3][0] < 1e-20  # the same exact filter in every image
    shuffled = fmap.clone()
    shuffled[2:, 1] = shuffled[2:, 1].flip(-1)  # the scored images follow another relation
    assert held_out_fit_errors(shuffled, [(0, 1)], (3,))[3][1] > 0.5
    assert pair_fit_errors(shuffled, [(0, 1)], (3,))[3][0] < held_out_fit_errors(shuffled, [(0, 1)], (3,))[3][0]
    with pytest.raises(ValueError, match="images on both sides"):
        held_out_fit_errors(fmap[:1], [(0, 1)], (3,))
    with pytest.raises(ValueError, match=r"held_out is the share of images scored, in \(0, 1\)"):
        held_out_fit_errors(fmap, [(0, 1)], (3,), held_out=1.0)


# --- capture and analysis --------------------------------------------------------------------------


def test_capture_returns_copies_and_restores_mode():
    model = small_net().train()
    x = torch.randn(5, 3, 8, 8)
    maps = capture_feature_maps(model, x, ["0", "5"], batch_size=2)
    assert maps["0"].shape == (5, 8, 8, 8) and maps["5"].shape == (5, 16, 8, 8)
    assert (maps["0"] < 0).any()  # the in-place ReLU after BN did not overwrite the captured conv output
    assert model.training
    with torch.no_grad():
        model.eval()
        assert torch.allclose(maps["5"], model[:6](x.clone()), atol=1e-5)


def test_capture_bad_layers():
    model = small_net()
    with pytest.raises(ValueError, match=r"unknown layer 'features\.3'.*valid names include"):
        capture_feature_maps(model, torch.randn(1, 3, 8, 8), ["features.3"])
    relu = nn.ReLU()
    shared = nn.Sequential(nn.Conv2d(3, 4, 1), relu, nn.Conv2d(4, 4, 1), relu)
    with pytest.raises(ValueError, match="ran 2 times"):
        capture_feature_maps(shared, torch.randn(1, 3, 4, 4), ["1"])


def test_capture_on_converted_model_intrinsic_and_ghost_maps():
    model = ghostify(small_net(), ratio=2, dw_size=3, input_size=(3, 8, 8)).eval()
    assert ghost_layers(model) == ["3"]
    assert conv_layers(model) == ["0", "3"]  # the depthwise conv and the Ghost layer's internals left out
    layer = model[3]
    assert isinstance(layer, GhostConv2d)
    names = ["3", "3.primary_conv", "3.cheap_operation"]
    maps = capture_feature_maps(model, torch.randn(4, 3, 8, 8), names)
    assert maps["3.primary_conv"].shape == (4, layer.init_channels, 8, 8)
    assert maps["3.cheap_operation"].shape == (4, layer.new_channels, 8, 8)
    joined = torch.cat([maps["3.primary_conv"], maps["3.cheap_operation"]], dim=1)[:, : layer.out_channels]
    assert torch.allclose(maps["3"], joined)


def test_matching_layers_use_the_absorbed_modules():
    baseline = small_net()
    paper = ghostify(baseline, input_size=(3, 8, 8))
    assert comparison_points(paper) == {"3": "5"}  # absorbed BN "4" and ReLU "5"
    assert matching_layers(baseline, paper) == ["5"]
    dropin = ghostify(baseline, policy="dropin", input_size=(3, 8, 8))
    assert matching_layers(baseline, dropin) == ["3"]
    with pytest.raises(ValueError, match="baseline and its Ghost version"):
        matching_layers(baseline, baseline)
    x = torch.randn(6, 3, 8, 8)
    base_reports, ghost_reports = compare_models(baseline, paper, x, top_k=2, kernel_sizes=(1, 3))
    assert [r.layer for r in base_reports] == [r.layer for r in ghost_reports] == ["5"]
    assert base_reports[0].module == "ReLU" and ghost_reports[0].module == "Identity"


def test_analyze_layer_on_planted_maps_and_frame():
    report = analyze_layer(planted(size=16), layer="x", threshold=0.9, top_k=2, kernel_sizes=(1, 3))
    assert report.channels == 8 and (report.height, report.width) == (16, 16)
    assert report.near_duplicate_share == 0.5 and report.max_similarity == pytest.approx(1.0)
    assert report.top_pairs[0][:2] == (0, 2)
    # pairs 0->2 (c2 = -3 c0: exact with a 1x1 filter) and 3->5 (residual 0.5 c1: nmse 0.25 / 4.25)
    assert report.fit_errors[1][1] == pytest.approx((0 + 0.25 / 4.25) / 2, abs=0.01)
    assert analyze_layer(planted(size=16), top_k=1, kernel_sizes=(1,)).fit_errors[1][0] < 1e-20
    assert report.held_out_errors[1][0] == pytest.approx((0 + 0.25) / 2, abs=0.05)  # 0.5 c1 is not in c3
    assert report.effective_rank_share == pytest.approx(report.effective_rank / 8) and report.in_d_sweep
    row = report.as_row()
    assert row["top_pairs"].startswith("0-2:1.0000;3-5:0.9")
    assert {"insample_mse_d1", "insample_nmse_d3", "heldout_mse_d1", "heldout_nmse_d3", "in_d_sweep"} <= set(row)
    frame = reports_frame([report, report], model="m")
    assert list(frame.columns[:2]) == ["model", "layer"] and len(frame) == 2


def test_analyze_model_defaults_to_conv_layers():
    reports = analyze_model(small_net(), torch.randn(4, 3, 8, 8), top_k=2, kernel_sizes=(1,))
    assert [r.layer for r in reports] == ["0", "3"]
    with pytest.raises(ValueError, match="not feature maps"):
        analyze_model(nn.Sequential(nn.Flatten(), nn.Linear(48, 4)), torch.randn(2, 3, 4, 4), ["1"])


# --- figures ---------------------------------------------------------------------------------------


def test_figures_are_built_and_validate_input():
    maps = planted(size=8)[0]
    pairs = top_pairs(channel_similarity(planted(size=8)), 3, disjoint=True)
    fig = plot_feature_grid(maps, pairs, columns=4, title="t")
    assert len(fig.axes) == 8
    with pytest.raises(ValueError, match="out of range"):
        plot_feature_grid(maps, [(0, 9)])
    with pytest.raises(ValueError, match="share a map"):
        plot_feature_grid(maps, [(0, 2), (2, 3)])
    fig = plot_intrinsic_ghost(maps[:4], maps[:8], count=3)
    assert len(fig.axes) == 9  # 3 columns x (intrinsic + 2 ghost rows)
    with pytest.raises(ValueError, match="do not match"):
        plot_intrinsic_ghost(maps[:3], maps[:8])
    frame = pd.concat(
        [reports_frame(analyze_model(small_net(), torch.randn(2, 3, 16, 16), top_k=2), model=m) for m in "ab"]
    )
    assert len(plot_layer_curves(frame).axes) == 3
    assert len(plot_mse_vs_d(frame).axes) == 2
    with pytest.raises(ValueError, match="missing: effective_rank_share"):
        plot_layer_curves(frame.drop(columns="effective_rank_share"))
    small = reports_frame(analyze_model(small_net(), torch.randn(2, 3, 8, 8), top_k=2), model="a")
    with pytest.raises(ValueError, match="no layer has maps large enough for d up to 7"):
        plot_mse_vs_d(small)


# --- weights ---------------------------------------------------------------------------------------


def fake_run(runs: Path, model: str, ratio: int | None, dw_size: int | None, acc: float, *,
             scale: str = "smoke", seed: int = 0) -> Path:
    """A finished run folder as the training engine writes it (final.json + model.pt), weights random."""
    run = runs / "recipe" / model / f"seed{seed}"
    run.mkdir(parents=True)
    config = {"model": model, "ratio": ratio, "dw_size": dw_size, "seed": seed, "recipe": "recipe"}
    (run / FINAL).write_text(json.dumps({"config": config, "test_acc": acc, "scale": scale}))
    torch.manual_seed(7)
    torch.save(build_model(model, ratio, dw_size).state_dict(), run / MODEL)
    return run


def test_load_model_loads_what_it_is_given(tmp_path):
    untrained = load_model("resnet56_cifar")
    assert not untrained.trained and untrained.weights == "untrained (random init, seed 0)"
    assert not untrained.model.training
    run = fake_run(tmp_path, "resnet56_cifar", None, None, 51.25, scale="full")
    trained = load_model("resnet56_cifar", run)
    assert trained.trained and trained.weights == f"trained: {run} (full; test accuracy 51.25%)"
    assert weights_kind(trained.weights) == "trained"
    smoke = fake_run(tmp_path / "smoke", "resnet56_cifar", None, None, 93.12)
    assert weights_kind(load_model("resnet56_cifar", smoke).weights) == "smoke-trained"
    saved = torch.load(run / MODEL, weights_only=True)
    assert torch.equal(trained.model.state_dict()["conv1.weight"], saved["conv1.weight"])
    file = load_model("resnet56_cifar", run / MODEL)
    assert file.weights == f"weights: {run / MODEL}"
    with pytest.raises(ValueError, match="is a run of resnet56_cifar, not vgg16_cifar"):
        load_model("vgg16_cifar", run)
    with pytest.raises(ValueError, match="not a state_dict of vgg16_cifar"):
        load_model("vgg16_cifar", run / MODEL)


@pytest.mark.parametrize("content", [b"", b"junk\n", b"not a checkpoint\n", b"\x00" * 64, "truncated"])
def test_load_model_names_unreadable_weights(content, tmp_path):
    run = fake_run(tmp_path, "resnet56_cifar", None, None, 50.0)
    weights = run / MODEL
    weights.write_bytes(weights.read_bytes()[:100] if content == "truncated" else content)
    with pytest.raises(ValueError, match=f"^{weights} cannot be read as PyTorch weights .*; pass a state_dict"):
        load_model("resnet56_cifar", weights)
    with pytest.raises(ValueError, match="corrupt") as error:  # the same file in its run folder
        load_model("resnet56_cifar", run)
    assert str(weights) in str(error.value)


def test_cli_chooses_full_then_budget_then_smoke_then_lowest_seed_then_newest(tmp_path):
    assert cli.chosen_run("resnet56_cifar", tmp_path / "none", 2, 3) is None
    fake_run(tmp_path / "smoke", "resnet56_cifar", None, None, 93.12)  # best accuracy, but smoke scale
    budget = fake_run(tmp_path / "budget", "resnet56_cifar", None, None, 70.0, scale="budget")
    assert cli.chosen_run("resnet56_cifar", tmp_path, 2, 3) == budget
    fake_run(tmp_path / "seed1", "resnet56_cifar", None, None, 60.0, scale="full", seed=1)
    older = fake_run(tmp_path / "older", "resnet56_cifar", None, None, 55.0, scale="full")
    newer = fake_run(tmp_path / "newer", "resnet56_cifar", None, None, 51.25, scale="full")
    os.utime(older / FINAL, (1_000_000, 1_000_000))
    assert cli.chosen_run("resnet56_cifar", tmp_path, 2, 3) == newer  # never chosen by test accuracy
    ghost = fake_run(tmp_path / "ghost", "ghost_vgg16_cifar", 2, 1, 50.0)  # d=1: not the requested d=3
    assert cli.chosen_run("ghost_vgg16_cifar", tmp_path, 2, 3) is None
    assert cli.chosen_run("ghost_vgg16_cifar", tmp_path, 2, 1) == ghost


@pytest.mark.parametrize(
    ("scale", "rank"),
    [("full", 0), ("budget", 1), ("smoke", 2), ("smoke (quick recipe, CPU)", 2), ("full (paper recipe)", 0)],
)
def test_cli_scale_rank_reads_old_free_text_scales(scale, rank):
    assert cli.scale_rank(scale) == rank


# --- ImageNet samples ------------------------------------------------------------------------------


def test_load_imagenet_samples(imagenet_samples_root):
    samples = load_imagenet_samples(imagenet_samples_root, limit=2)
    assert samples.images.shape == (2, 3, 224, 224) and samples.images.dtype == torch.float32
    assert samples.labels.tolist() == [0, 10] and samples.names == ["tench", "brambling"]
    assert samples.images.min() > -2.2 and samples.images.max() < 2.7  # ImageNet-normalised


def test_load_imagenet_samples_errors(imagenet_samples_root, tmp_path, monkeypatch):
    monkeypatch.delenv("GHOST_IMAGENET_SAMPLES", raising=False)
    with pytest.raises(DataNotFoundError, match="GHOST_IMAGENET_SAMPLES"):
        load_imagenet_samples()
    lines = (imagenet_samples_root / "labels.csv").read_text().splitlines()[:2]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / lines[1].split(",")[0]).write_bytes(b"\xff\xd8 not the listed file")
    with pytest.raises(DataNotFoundError, match="md5"):
        load_imagenet_samples(tmp_path)


# --- the CLI ---------------------------------------------------------------------------------------


def test_cli_writes_csv_and_figures(cifar10_root, tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--data", str(cifar10_root), "--runs", str(tmp_path / "no-runs"), "--results-dir", str(out),
            "--num-images", "10", "--top-k", "2", "--kernel-sizes", "1", "3"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "untrained" in printed and "learned redundancy needs trained weights" in printed
    table = pd.read_csv(out / "redundancy_vgg16_cifar.csv")
    assert set(table["model"]) == {"vgg16_cifar", "ghost_vgg16_cifar"} and len(table) == 24
    assert table["layer"].iloc[0] == "features.5"  # the second conv's ReLU, where both models compare
    assert table["weights"].str.startswith("untrained").all()
    assert table["data"].str.contains("LOSSY").all() and table["commit"].notna().all()
    for column in ["channels", "mean_similarity", "max_similarity", "near_duplicate_share", "effective_rank",
                   "insample_mse_d1", "heldout_nmse_d3", "in_d_sweep", "effective_rank_share", "images", "command",
                   "hardware"]:
        assert column in table
    assert table["near_duplicate_share"].between(0, 1).all()
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == ["redundancy_ghost_maps_ghost_vgg16_cifar.png", "redundancy_layers_vgg16_cifar.png",
                       "redundancy_mse_vs_d_vgg16_cifar.png", "redundancy_pairs_vgg16_cifar.png"]


def test_cli_puts_an_untrained_twin_beside_the_model(cifar10_root, tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--data", str(cifar10_root), "--runs", str(tmp_path / "no-runs"), "--results-dir", str(out),
            "--num-images", "4", "--top-k", "1", "--kernel-sizes", "1", "3", "--ghost", "none", "--with-untrained",
            "--seed", "1", "--layers", "features.2", "features.5"]
    assert cli.main(argv) == 0
    table = pd.read_csv(out / "redundancy_vgg16_cifar.csv")
    assert table["model"].tolist() == ["vgg16_cifar"] * 2 + ["vgg16_cifar (untrained)"] * 2
    assert table["weights"].tolist() == ["untrained (random init, seed 1)"] * 4  # no run: both untrained
    similarity = table["mean_similarity"].tolist()
    assert similarity[:2] == similarity[2:]  # the same seed: the same network, the same maps
    assert (out / "figures" / "redundancy_pairs_vgg16_cifar_untrained.png").is_file()
    assert "heldout_nmse_d3" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--layers", "features.99"], "unknown layer 'features.99'"),
        (["--model", "vgg17_cifar"], "unknown model 'vgg17_cifar'"),
        (["--num-images", "0"], "number of images must be at least 1"),
        (["--threshold", "2"], "threshold must be in [0, 1]"),
        (["--checkpoint", "missing.pt"], "checkpoint missing.pt does not exist"),
    ],
)
def test_cli_bad_input_one_line_and_no_partial_output(argv, message, cifar10_root, tmp_path, capsys):
    out = tmp_path / "results"
    base = ["--data", str(cifar10_root), "--runs", str(tmp_path), "--results-dir", str(out)]
    base += ["--num-images", "2"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(base + argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_cli_missing_data_is_one_line_without_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GHOST_CIFAR10"}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.redundancy", "--results-dir", str(tmp_path / "r")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "GHOST_CIFAR10" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


class SharedActivation(nn.Module):
    """A stem, then conv1-bn1-relu and conv2-bn2 + residual, then the same relu (like torchvision's ResNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + x)


def test_matching_layers_skip_a_copied_shared_activation():
    baseline = SharedActivation()
    ghost = ghostify(baseline, input_size=(3, 8, 8))
    assert comparison_points(ghost) == {"conv1": "bn1", "conv2": "bn2"}
    # conv1's Ghost layer ends in a copy of the shared ReLU, while the baseline's bn1 output is pre-ReLU
    assert matching_layers(baseline, ghost) == ["bn2"]
