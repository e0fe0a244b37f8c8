"""Converting a trained model: weight transfer with least-squares fits, distillation, and the transfer CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from test_data import write_fake_cifar10
from test_train import TINY_RECIPE
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import experiments.transfer as transfer_cli
import ghost.train.engine as engine_module
from ghost.recipes import recipe_from_dict
from ghost.runs import ModelSpec
from ghost.surgery import assign_ghosts, ghostify, ghostify_trained, transfer_weights
from ghost.train import DistillationLoss, TrainConfig, distill, load_data, run_dir, train

pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------- hosts


def _redundant_filters(cin: int, n: int, ratio: int, d: int, gen: torch.Generator) -> tuple[torch.Tensor, list[int]]:
    """``n`` d x d filters: ``m = ceil(n / ratio)`` "intrinsic" ones with only their centre tap, the others an
    intrinsic filter times a d x d pattern, so that (with zero padding) each of those maps is exactly a d x d
    depthwise filter of an intrinsic map. Returns the filters and the intrinsic channels, in random positions."""
    m = math.ceil(n / ratio)
    order = torch.randperm(n, generator=gen).tolist()
    base = torch.randn(m, cin, generator=gen)
    weight = torch.zeros(n, cin, d, d)
    for q, i in enumerate(order[:m]):
        weight[i, :, d // 2, d // 2] = base[q]
    for k, j in enumerate(order[m:]):
        weight[j] = base[k % m][:, None, None] * torch.randn(d, d, generator=gen)
    return weight, sorted(order[:m])


@torch.no_grad()
def _calibrate_host(host: nn.Module, x: torch.Tensor, zero_offset: dict[nn.Module, list[int]] | None = None) -> None:
    """Give every BatchNorm of ``host`` (in forward order, eval mode) the mean and unbiased variance of its input
    on ``x``; for the channels in ``zero_offset[bn]``, a bias that makes the BatchNorm map 0 to 0."""
    host.eval()
    for norm in [m for m in host.modules() if isinstance(m, _BatchNorm)]:
        seen: list[torch.Tensor] = []
        handle = norm.register_forward_pre_hook(lambda _m, args, seen=seen: seen.append(args[0]))
        host(x)
        handle.remove()
        z = seen[0].double().transpose(0, 1).flatten(1)
        norm.running_mean.copy_(z.mean(1))
        norm.running_var.copy_(z.var(1))
        channels = (zero_offset or {}).get(norm, [])
        std = (norm.running_var + norm.eps).sqrt()
        norm.bias[channels] = (norm.weight * norm.running_mean / std)[channels]


def _block(cin: int, cout: int, relu: bool = True) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)] + ([nn.ReLU()] if relu else [])


def _images(n: int, gen: torch.Generator, size: int = 16) -> torch.Tensor:
    """Smooth random images (like natural ones, neighbouring pixels are correlated)."""
    low = F.interpolate(torch.randn(n, 3, 4, 4, generator=gen), size=size, mode="bilinear")
    return low + 0.1 * torch.randn(n, 3, size, size, generator=gen)


# ---------------------------------------------------------------- the transfer


@pytest.mark.parametrize(("channels", "ratio"), [(8, 2), (7, 3)])
def test_host_made_of_depthwise_transforms_is_reproduced_exactly(channels: int, ratio: int) -> None:
    """Two conv-BN layers whose ghost maps really are d x d depthwise filters of intrinsic maps (in scrambled
    channel positions): the fits, the choice of intrinsic maps and the channel order must all be exact."""
    gen = torch.Generator().manual_seed(channels)
    conv1, conv2 = _block(6, channels, relu=False), _block(channels, channels, relu=False)
    w1, intrinsic1 = _redundant_filters(6, channels, ratio, 3, gen)
    w2, intrinsic2 = _redundant_filters(channels, channels, ratio, 3, gen)
    host = nn.Sequential(*_block(3, 6), *conv1, *conv2, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 4))
    with torch.no_grad():
        conv1[0].weight.copy_(w1)
        conv2[0].weight.copy_(w2)
        for norm in (conv1[1], conv2[1]):
            norm.weight.uniform_(0.5, 1.5, generator=gen)
            norm.bias.normal_(0, 1, generator=gen)
    calibration = [_images(4, gen, 12), _images(4, gen, 12)]
    # the intrinsic maps' BatchNorms have no offset: a cheap filter of a constant is not constant at the border
    _calibrate_host(host, torch.cat(calibration), {conv1[1]: intrinsic1, conv2[1]: intrinsic2})

    ghost = ghostify_trained(host, calibration, ratio=ratio, dw_size=3)

    x = torch.randn(3, 3, 12, 12, generator=gen)  # any input, not only the calibration data
    with torch.no_grad():
        torch.testing.assert_close(ghost(x), host(x), rtol=1e-5, atol=1e-5)
    assert [fit.name for fit in ghost.transfer_fits] == ["3", "5"]
    for fit, intrinsic, conv in zip(ghost.transfer_fits, (intrinsic1, intrinsic2), (conv1[0], conv2[0]), strict=True):
        assert fit.nmse < 1e-10 and fit.intrinsic == len(intrinsic) and fit.reordered
        module = ghost.get_submodule(fit.name)
        assert torch.equal(module.primary.weight, conv.weight[intrinsic]), "the intrinsic filters are the host's"


def _relu_host() -> tuple[nn.Module, list[torch.Tensor], torch.Generator]:
    """A small VGG-like ReLU network with partly redundant filters (the paper's observation on trained networks:
    d x d transforms of other filters, plus 10 % noise), random BatchNorm affines that keep most units active,
    a BatchNorm1d in its head, and the calibration data's statistics."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    host = nn.Sequential(*_block(3, 8), *_block(8, 16), nn.MaxPool2d(2), *_block(16, 16), *_block(16, 12),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 4))
    with torch.no_grad():
        for name, ratio in (("3", 2), ("7", 3), ("10", 2)):
            conv = host.get_submodule(name)
            weight, _ = _redundant_filters(conv.in_channels, conv.out_channels, ratio, 3, gen)
            conv.weight.copy_(weight + 0.1 * weight.std() * torch.randn(weight.shape, generator=gen))
        for norm in (m for m in host.modules() if isinstance(m, _BatchNorm)):
            norm.weight.uniform_(0.5, 1.5, generator=gen)
            norm.bias.normal_(0.5, 0.3, generator=gen)
    calibration = [_images(8, gen), _images(8, gen)]
    _calibrate_host(host, torch.cat(calibration))
    return host, calibration, gen


@pytest.fixture(scope="module")
def relu_transfer() -> tuple[nn.Module, nn.Module, list[torch.Tensor], torch.Generator]:
    host, calibration, gen = _relu_host()
    stem_stats = [t.clone() for t in (host[1].running_mean, host[1].running_var)]
    ghost = ghostify_trained(host, calibration, overrides={"7": {"ratio": 3}})  # 16 maps, s=3: 6 intrinsic, 12 slots
    assert all(torch.equal(a, b) for a, b in zip(stem_stats, (host[1].running_mean, host[1].running_var), strict=True))
    return host, ghost, calibration, gen


def _relative_error(model: nn.Module, host: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        reference = host(x)
        return ((model.eval()(x) - reference).norm() / reference.norm()).item()


def test_transfer_keeps_the_channel_order_and_the_host_filters(relu_transfer) -> None:
    host, ghost, calibration, gen = relu_transfer
    x = _images(5, gen)  # fresh inputs
    with torch.no_grad():
        first_input = host[:3](x)  # the first converted layer (3) reads the stem's output, unchanged
        host_maps = host[3:6](first_input)  # conv-BN-ReLU of the host
        ghost_maps = ghost[3](first_input)
    for fit in ghost.transfer_fits:
        module, conv = ghost.get_submodule(fit.name), host.get_submodule(fit.name)
        order = module.channel_order.tolist()
        intrinsic = [p for p, index in enumerate(order) if index < module.init_channels]
        assert sorted(order[p] for p in intrinsic) == list(range(fit.intrinsic))  # each intrinsic slot used once
        assert len(set(order)) == conv.out_channels and fit.reordered
        assert torch.equal(module.primary.weight, conv.weight[intrinsic]), "intrinsic filters are the host's, in order"
        norm = host.get_submodule(str(int(fit.name) + 1))
        assert torch.equal(module.primary_conv[1].weight, norm.weight[intrinsic])
        assert torch.equal(module.primary_conv[1].bias, norm.bias[intrinsic])
        if fit.name == "3":  # same input and (calibrated) statistics as the host: its maps, at the host's positions
            torch.testing.assert_close(ghost_maps[:, intrinsic], host_maps[:, intrinsic], rtol=1e-5, atol=1e-6)
    assert ghost.get_submodule("7").needs_slice and ghost.get_submodule("7").channel_order.numel() == 16


def test_transferred_model_is_close_to_the_host_and_much_closer_than_a_random_init(relu_transfer) -> None:
    host, ghost, calibration, gen = relu_transfer
    random = ghostify(host, example_inputs=calibration[0][:1].clone(), overrides={"7": {"ratio": 3}})
    for x in (torch.cat(calibration), _images(16, gen)):  # on the calibration data and on fresh inputs
        transferred, initial = _relative_error(ghost, host, x), _relative_error(random, host, x)
        assert transferred < 0.4 and transferred < 0.4 * initial, (transferred, initial)
    assert all(0 <= fit.nmse < 1 and 0 < fit.ghost_nmse < 1 for fit in ghost.transfer_fits)
    assert ghost.transfer_fits[0].intrinsic_nmse < 1e-9  # the first converted layer sees the host's input


def test_batchnorm_statistics_are_the_calibration_datas(relu_transfer) -> None:
    """Every BatchNorm inside a converted module, and the head's BatchNorm1d after them, holds the mean and
    unbiased variance of its own input on the calibration data; the stem's BatchNorm keeps the host's."""
    host, ghost, calibration, _ = relu_transfer
    norms = {name: m for name, m in ghost.named_modules() if isinstance(m, _BatchNorm)}
    assert {"1", "16"} <= set(norms) and sum(".primary_conv." in n or ".cheap_operation." in n for n in norms) == 6
    inputs: dict[str, list[torch.Tensor]] = {name: [] for name in norms}
    handles = [m.register_forward_pre_hook(lambda _m, args, name=name: inputs[name].append(args[0]))
               for name, m in norms.items()]
    with torch.no_grad():
        for batch in calibration:
            ghost.eval()(batch)
    for handle in handles:
        handle.remove()
    for name, norm in norms.items():
        z = torch.cat(inputs[name]).double().transpose(0, 1).flatten(1)
        torch.testing.assert_close(norm.running_mean.double(), z.mean(1), rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(norm.running_var.double(), z.var(1), rtol=1e-4, atol=1e-6, msg=name)
    assert torch.equal(norms["1"].running_var, host[1].running_var)


def test_assignment_takes_the_cheapest_pairs_within_the_slots() -> None:
    cost = torch.ones(5, 5)
    cost[0, 1] = cost[2, 3] = 0.0  # 0 makes 1 and 2 makes 3 exactly
    cost[0, 3] = 0.5  # next cheapest, but 0's one slot (s=2) is taken; 4 is left over and becomes intrinsic
    assert assign_ghosts(cost, 2) == ([0, 2, 4], [[1], [3], []])
    cost = torch.ones(6, 6)
    cost[0] = 0.0  # map 0 makes every other one exactly, but has s-1 = 2 slots
    assert assign_ghosts(cost, 3) == ([0, 3], [[1, 2], [4, 5]])
    intrinsic, makes = assign_ghosts(torch.rand(10, 10, generator=torch.Generator().manual_seed(1)), 3)
    assert len(intrinsic) == 4 and all(len(m) <= 2 for m in makes)  # ceil(10/3) maps, s-1 slots each
    assert sorted(intrinsic + [j for m in makes for j in m]) == list(range(10))
    assert assign_ghosts(torch.rand(3, 3), 1) == ([0, 1, 2], [[], [], []])


def test_ghost_model_of_another_architecture_is_refused() -> None:
    host, calibration, _ = _relu_host()
    with pytest.raises(ValueError, match="no ghost_report"):
        transfer_weights(host, host, calibration)
    other = ghostify(nn.Sequential(*_block(3, 8), *_block(8, 10), nn.Flatten()), input_size=(3, 16, 16))
    with pytest.raises(ValueError, match="not a conversion of the host"):
        transfer_weights(host, other, calibration)
    with pytest.raises(ValueError, match="calibration data"):
        transfer_weights(host, ghostify(host, input_size=(3, 16, 16)), [])


# ---------------------------------------------------------------- distillation


def test_distillation_loss_equals_the_hand_computed_value() -> None:
    teacher_logits = [[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]]
    student_logits = [[1.0, 1.0, 0.0], [0.0, 2.0, -1.0]]
    labels, temperature, alpha = [0, 2], 2.0, 0.7

    def softmax(row: list[float], t: float) -> list[float]:
        exps = [math.exp(v / t) for v in row]
        return [e / sum(exps) for e in exps]

    kl = sum(sum(p * math.log(p / q) for p, q in zip(softmax(t, temperature), softmax(s, temperature), strict=True))
             for t, s in zip(teacher_logits, student_logits, strict=True)) / 2
    ce = -sum(math.log(softmax(s, 1.0)[y]) for s, y in zip(student_logits, labels, strict=True)) / 2
    expected = alpha * temperature**2 * kl + (1 - alpha) * ce

    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor(teacher_logits)

    loss = DistillationLoss(Fixed(), temperature=temperature, alpha=alpha)
    value = loss(torch.zeros(2, 1), torch.tensor(student_logits), torch.tensor(labels))
    assert value.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        DistillationLoss(Fixed(), temperature=0.0)


def _tiny_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(*_block(3, 8), *_block(8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_cifar10(tmp_path_factory.mktemp("cifar"), per_batch=64, test=40)


@pytest.fixture
def tiny_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every model name builds :func:`_tiny_cnn` (Ghost names: its ghostify conversion); a private data cache."""

    def build(model: str, ratio: int | None = None, dw_size: int | None = None, num_classes: int = 10) -> nn.Module:
        net = _tiny_cnn(num_classes)
        return ghostify(net, ratio or 2, dw_size or 3, input_size=(3, 32, 32)) if model.startswith("ghost_") else net

    for module in (engine_module, transfer_cli):
        monkeypatch.setattr(module, "build_model", build)
    monkeypatch.setattr(ModelSpec, "build", lambda self, num_classes=None: build(self.name, self.ratio, self.dw_size,
                                                                                 num_classes or 10))
    monkeypatch.setenv("GHOST_CACHE_DIR", str(tmp_path / "cache"))


def test_distill_fine_tunes_the_student_on_the_engine(fake_root: Path, tiny_models: None) -> None:
    recipe = recipe_from_dict({**TINY_RECIPE, "epochs": 1})
    data = load_data(recipe, fake_root, torch.device("cpu"))
    teacher, student = _tiny_cnn(), transfer_cli.build_model("ghost_x", 2, 3)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    trained = distill(student, teacher, recipe, data, torch.device("cpu"), temperature=3.0, alpha=0.5)
    assert trained is student and not teacher.training
    assert any(not torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert all(torch.equal(teacher_state[k], v) for k, v in teacher.state_dict().items())


# ---------------------------------------------------------------- the CLI


def test_cli_measures_every_row_and_reads_the_from_scratch_run(
    fake_root: Path, tiny_models: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = recipe_from_dict({**TINY_RECIPE, "epochs": 1})
    runs = tmp_path / "runs"
    host_run = run_dir(TrainConfig("vgg16_cifar", recipe), runs)
    scratch_run = run_dir(TrainConfig("ghost_vgg16_cifar", recipe, ratio=2, dw_size=3), runs)
    for config, out in ((TrainConfig("vgg16_cifar", recipe), host_run),
                        (TrainConfig("ghost_vgg16_cifar", recipe, ratio=2, dw_size=3), scratch_run)):
        train(config, out, data_root=fake_root, progress=False)
    finetune = tmp_path / "finetune.json"
    finetune.write_text(json.dumps({**TINY_RECIPE, "name": "tiny-distill", "epochs": 1}))
    results = tmp_path / "results"
    assert transfer_cli.main(["--run", str(host_run), "--recipe", str(finetune), "--calibration", "64",
                              "--data", str(fake_root), "--results-dir", str(results), "--device", "cpu",
                              "--no-progress"]) == 0
    table = pd.read_csv(results / "cifar10_transfer.csv")
    assert table["method"].tolist() == ["host", "transfer", "transfer+distill", "random+distill", "scratch"]
    assert table["test_acc"].notna().all() and (table["host"] == str(host_run)).all()
    scratch = json.loads((scratch_run / "final.json").read_text())
    assert table["test_acc"].iloc[-1] == scratch["test_acc"] and table["status"].iloc[-1].startswith("read from")
    assert table.loc[1, "total_s"] == pytest.approx(table.loc[0, "step_s"] + table.loc[1, "step_s"], abs=0.11)
    layers = pd.read_csv(results / "cifar10_transfer_layers.csv", dtype={"name": str})
    assert layers["name"].tolist() == ["3"] and layers["intrinsic"].tolist() == [4]
    markdown = (results / "cifar10_transfer.md").read_text()
    assert "(a) weight transfer, no training" in markdown and "## Provenance" in markdown
    assert (results / "figures" / "cifar10_transfer.png").stat().st_size > 0
    assert "wrote" in capsys.readouterr().out
    # a second host, by --model/--weights: its rows join the first host's; no run folder, so (d) is not run
    assert transfer_cli.main(["--model", "vgg16_cifar", "--weights", str(host_run / "model.pt"), "--recipe",
                              str(finetune), "--calibration", "32", "--data", str(fake_root), "--results-dir",
                              str(results), "--device", "cpu", "--no-progress"]) == 0
    table = pd.read_csv(results / "cifar10_transfer.csv")
    assert table["host"].tolist() == [str(host_run)] * 5 + [str(host_run / "model.pt")] * 5
    assert table["test_acc"].isna().tolist() == [False] * 9 + [True]
    assert table["status"].iloc[-1].startswith("not run")
    assert "SMOKE SCALE" in (results / "cifar10_transfer.md").read_text()
    # the first host's run moved to another folder is the same host: measuring it again replaces its rows
    moved = host_run.rename(tmp_path / "moved")
    assert transfer_cli.main(["--run", str(moved), "--scratch-run", str(scratch_run), "--recipe", str(finetune),
                              "--calibration", "64", "--data", str(fake_root), "--results-dir", str(results),
                              "--device", "cpu", "--no-progress"]) == 0
    table = pd.read_csv(results / "cifar10_transfer.csv")
    assert table["host"].tolist() == [str(host_run / "model.pt")] * 5 + [str(moved)] * 5


def test_cli_missing_run_folder_exits_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        transfer_cli.main(["--run", str(tmp_path / "nope"), "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "is not a finished run" in err
    assert not (tmp_path / "results").exists()


def test_distill_checkpoints_every_epoch_and_an_interrupted_run_resumes_exactly(
    fake_root: Path, tiny_models: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ghost.train.distillation as distillation

    recipe = recipe_from_dict({**TINY_RECIPE, "epochs": 2})
    data = load_data(recipe, fake_root, torch.device("cpu"))
    teacher = _tiny_cnn()

    def student(seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return transfer_cli.build_model("ghost_x", 2, 3)

    whole = distill(student(), teacher, recipe, data, torch.device("cpu"), out_dir=tmp_path / "whole")
    assert (tmp_path / "whole" / "checkpoint.pt").is_file()

    real, calls = distillation.train_one_epoch, []

    def dies_in_the_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(distillation, "train_one_epoch", dies_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        distill(student(), teacher, recipe, data, torch.device("cpu"), out_dir=tmp_path / "cut")
    assert (tmp_path / "cut" / "metrics.csv").read_text().count("\n") == 2  # header + epoch 1
    calls.clear()
    monkeypatch.setattr(distillation, "train_one_epoch", lambda *a, **k: calls.append(1) or real(*a, **k))
    # another initialisation: only the checkpoint's weights can make the result equal
    resumed = distill(student(seed=1), teacher, recipe, data, torch.device("cpu"), out_dir=tmp_path / "cut")
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in whole.state_dict().items())
    assert len(calls) == 1  # only the second epoch was trained again
    with pytest.raises(ValueError, match="belongs to a different run .*alpha"):
        distill(student(), teacher, recipe, data, torch.device("cpu"), alpha=0.5, out_dir=tmp_path / "cut")
