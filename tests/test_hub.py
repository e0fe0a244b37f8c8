"""torch.hub entry points (hubconf.py) and loading local checkpoints strictly (ghost.models.weights): the
official GhostNet and timm layouts, wrappers, DDP prefixes, the training engine's run folders, and clear errors.

The entry points are tested for the model names that ``ghost.models.list_models()`` knows at test time (the
GhostNetV2 entries build once ``ghostnetv2_*`` is registered); the GhostNet V1 and CIFAR entries must be among
them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import hubconf
from ghost.models import create_model, default_input_size, list_models
from ghost.models.weights import NO_DOWNLOAD, load_weights, read_state_dict
from ghost.runs import RunFolder, RunRecord

pytestmark = pytest.mark.usefixtures("single_thread")
REPO = Path(__file__).resolve().parents[1]
ENTRIES = sorted(
    name for name in dir(hubconf) if not name.startswith("_") and callable(getattr(hubconf, name))
)
ALIASES = {"ghostnet_1x": "ghostnet_100"}
BUILT = [name for name in ENTRIES if ALIASES.get(name, name) in list_models(ghost_variants=True)]
REQUIRED = {"ghostnet_050", "ghostnet_100", "ghostnet_130", "ghostnet_1x", "vgg16_cifar", "resnet56_cifar",
            "ghost_vgg16_cifar", "ghost_resnet56_cifar"}


def hub(name: str, *args, **kwargs) -> nn.Module:
    return torch.hub.load(str(REPO), name, *args, source="local", verbose=False, **kwargs)


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with random BatchNorm statistics, so that outputs depend on every tensor."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def ghostnet_050(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A GhostNet 0.5x with random weights and BN statistics, and its state_dict saved with torch.save."""
    torch.manual_seed(0)
    model = randomized(create_model("ghostnet_050"))
    path = tmp_path_factory.mktemp("weights") / "ghostnet_050.pth"
    torch.save(model.state_dict(), path)
    return model, path


def same_outputs(a: nn.Module, b: nn.Module, size: int = 64) -> torch.Tensor:
    """Assert that ``a`` and ``b`` compute the same (eval mode, a random batch of 2) and return ``a``'s output."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = a.eval()(x)
        torch.testing.assert_close(out, b.eval()(x), rtol=0, atol=1e-5)
    return out


def test_entry_points_cover_the_paper_models():
    assert set(BUILT) >= REQUIRED
    assert {"ghostify", "ghostnetv2_100", "ghostnetv2_130", "ghostnetv2_160"} <= set(ENTRIES)
    assert hubconf.dependencies == ["torch", "torchvision"]


@pytest.mark.parametrize("name", BUILT)
def test_entry_point_builds_and_loads_its_own_weights(name, tmp_path):
    torch.manual_seed(0)
    model = randomized(hub(name, num_classes=10))
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    torch.manual_seed(1)
    checked = {"verify": False} if name.startswith("ghost_") else {}  # the first build ran ghostify's check
    loaded = hub(name, weights=path, num_classes=10, **checked)
    size = default_input_size(ALIASES.get(name, name))[1]
    assert same_outputs(model, loaded, size=size).shape == (2, 10)


def test_ghostify_entry_point(tmp_path):
    torch.manual_seed(0)
    converted = hub("ghostify", create_model("resnet56_cifar"), ratio=2, dw_size=3, input_size=(3, 32, 32))
    assert converted.ghost_report.summary()["replaced"] > 0
    torch.save(randomized(converted).state_dict(), tmp_path / "ghost.pt")
    torch.manual_seed(1)
    loaded = hub("ghostify", create_model("resnet56_cifar"), weights=tmp_path / "ghost.pt", ratio=2, dw_size=3,
                 input_size=(3, 32, 32))
    same_outputs(converted, loaded, size=32)


@pytest.mark.parametrize("name", ["ghostnet_100", "ghostify"])
def test_pretrained_without_weights_says_how_to_pass_a_checkpoint(name):
    args = (create_model("resnet56_cifar"),) if name == "ghostify" else ()
    with pytest.raises(ValueError) as error:
        hub(name, *args, pretrained=True)
    assert str(error.value) == NO_DOWNLOAD
    assert "weights=PATH" in NO_DOWNLOAD and "\n" not in NO_DOWNLOAD


def test_timm_ghostnet_100_loads_strictly_with_the_same_outputs(tmp_path):
    timm = pytest.importorskip("timm", reason="timm is an optional dependency (pip install -e .[timm])")
    torch.manual_seed(0)
    reference = randomized(timm.create_model("ghostnet_100"))
    torch.save(reference.state_dict(), tmp_path / "timm_ghostnet_100.pth")
    ours = hub("ghostnet_100", weights=tmp_path / "timm_ghostnet_100.pth")
    same_outputs(reference, ours)


def test_official_layout_loads(ghostnet_050, tmp_path):
    """The official huawei-noah checkpoint is a plain dict of these names (no PyTorch state_dict metadata)."""
    model, _ = ghostnet_050
    official = {k: v.clone() for k, v in model.state_dict().items()}
    for key in ("conv_stem.weight", "bn1.running_var", "blocks.0.0.ghost1.primary_conv.0.weight",
                "blocks.3.0.se.conv_reduce.weight", "conv_head.weight", "classifier.bias"):
        assert key in official
    torch.save(official, tmp_path / "state_dict_official.pth")
    same_outputs(model, hub("ghostnet_050", weights=str(tmp_path / "state_dict_official.pth")))


@pytest.mark.parametrize("layout", ["state_dict", "model", "ddp", "wrapped_ddp", "compiled"])
def test_wrapped_and_prefixed_checkpoints_load(ghostnet_050, tmp_path, layout):
    model, _ = ghostnet_050
    state = model.state_dict()
    prefixed = {f"module.{k}": v for k, v in state.items()}
    saved = {
        "state_dict": {"state_dict": state, "epoch": 3, "arch": "ghostnet_050"},
        "model": {"model": state, "optimizer": {}, "epoch": 3},
        "ddp": prefixed,
        "wrapped_ddp": {"state_dict": prefixed},
        "compiled": {f"_orig_mod.{k}": v for k, v in state.items()},
    }[layout]
    torch.save(saved, tmp_path / "checkpoint.pth")
    same_outputs(model, load_weights(create_model("ghostnet_050"), tmp_path / "checkpoint.pth"))


def test_run_folders_of_the_training_engine_load(tmp_path):
    """What RunFolder writes: checkpoint.pt while training, model.pt + final.json once finished."""
    torch.manual_seed(0)
    model = randomized(create_model("resnet56_cifar"))
    folder = RunFolder(tmp_path / "run", {"model": "resnet56_cifar"})
    folder.path.mkdir()
    folder.save_checkpoint({"model": model.state_dict(), "optimizer": {}, "history": []}, [])
    for path in (folder.path, folder.path / "checkpoint.pt"):  # an unfinished run: its last checkpoint
        same_outputs(model, hub("resnet56_cifar", weights=path), size=32)
    folder.finish(model.state_dict(), RunRecord(50.0, "smoke", {"model": "resnet56_cifar"}, identity=folder.identity))
    assert not (folder.path / "checkpoint.pt").exists()
    same_outputs(model, hub("resnet56_cifar", weights=folder.path), size=32)
    same_outputs(model, load_weights(create_model("resnet56_cifar"), folder.path / "model.pt"), size=32)


def test_mismatched_weights_name_the_keys_and_leave_the_model_unchanged(ghostnet_050, tmp_path):
    _, path = ghostnet_050
    target = create_model("ghostnet_100")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=r"shape mismatches: conv_stem\.weight \(8, 3, 3, 3\) in the file vs "
                                         r"\(16, 3, 3, 3\) in the model") as error:
        load_weights(target, path)
    assert "num_classes" in str(error.value) and "\n" not in str(error.value)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())

    state = read_state_dict(path)
    state["extra.weight"] = torch.zeros(1)
    del state["classifier.bias"]
    torch.save(state, tmp_path / "edited.pth")
    with pytest.raises(ValueError, match=r"missing keys classifier\.bias; unexpected keys extra\.weight"):
        hub("ghostnet_050", weights=tmp_path / "edited.pth")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00not a checkpoint", "cannot be read as PyTorch weights"),
        (None, "does not exist"),
        ({"epoch": 3, "optimizer": {}}, "holds no state_dict (top-level keys: 'epoch', 'optimizer')"),
        (torch.zeros(3), "holds a Tensor, not a state_dict"),
    ],
    ids=["corrupt", "missing", "no-state-dict", "tensor"],
)
def test_unusable_files_fail_with_one_line(tmp_path, content, message):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(ValueError) as error:
        hub("ghostnet_050", weights=path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_folder_without_weights_is_refused(tmp_path):
    with pytest.raises(ValueError, match="a folder without model.pt or checkpoint.pt"):
        load_weights(create_model("resnet56_cifar"), tmp_path)
