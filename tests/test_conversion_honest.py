"""Issue 20: no way to get a silently different model out of ghostify or prepare_for_inference. One toy model per
class of the issue: outputs the check could not see, one tolerance for all outputs, train-mode-only readers, hooks,
a conv also reached through a plain container, norm subclasses with extra state, parts that cannot be handled,
and prepare_for_inference's own check."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from ghost import ghostify
from ghost.deploy import prepare_for_inference
from ghost.surgery.verify import compare_outputs

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


class _Net(nn.Module):
    """stem conv -> conv -> bn -> relu; the subclass picks the forward."""

    def __init__(self, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn = norm if norm is not None else nn.BatchNorm2d(16)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(self.stem(x))))


def _convert(model: nn.Module) -> nn.Module:
    return ghostify(model, example_inputs=X, replace_stem=True)  # the stem: a second conv to replace


def _record(converted: nn.Module, name: str = "conv"):
    return next(r for r in converted.ghost_report.layers if r.name == name)


# ---------------------------------------------------------------- outputs the check cannot see


@dataclass
class _Out:
    features: torch.Tensor
    pre_norm: torch.Tensor


class _DataclassOut(_Net):
    def forward(self, x: torch.Tensor) -> _Out:
        y = self.conv(self.stem(x))
        return _Out(self.relu(self.bn(y)), y)


def test_an_output_inside_a_dataclass_is_a_reader_so_its_norm_stays() -> None:
    converted = _convert(_DataclassOut())
    record = _record(converted)
    assert record.replaced and record.absorbed == ()  # the caller reads the conv's raw output
    assert type(converted.bn) is nn.BatchNorm2d


class _NoValues(_Net):
    def forward(self, x: torch.Tensor) -> None:
        self.last = super().forward(x)


def test_an_output_with_nothing_to_compare_is_refused() -> None:
    with pytest.raises(ValueError, match="holds no tensor or number that the ratio-1 check can compare"):
        _convert(_NoValues())


# ---------------------------------------------------------------- one tolerance per tensor, inf/NaN by position


def test_inf_and_nan_are_compared_by_position_and_each_tensor_by_its_own_scale() -> None:
    base = torch.tensor([1.0, math.inf, math.nan, -2.0])
    assert compare_outputs((base,), (base.clone(),))[0]
    assert not compare_outputs((base,), (torch.tensor([2.0, math.inf, math.nan, -2.0]),))[0]
    assert not compare_outputs((base,), (torch.tensor([1.0, -math.inf, math.nan, -2.0]),))[0]
    assert not compare_outputs((base,), (torch.tensor([1.0, math.inf, 0.0, -2.0]),))[0]
    pixels, small = torch.tensor([5e7]), torch.tensor([0.5])
    assert not compare_outputs((pixels, small), (pixels, small + 1))[0]
    assert not compare_outputs({"count": 3, "x": small}, {"count": 4, "x": small})[0]


# ---------------------------------------------------------------- readers that exist only in train mode


class _AuxHead(_Net):
    """Deep supervision: in train mode the conv's raw output also feeds an auxiliary output."""

    def forward(self, x: torch.Tensor):
        y = self.conv(self.stem(x))
        out = self.relu(self.bn(y))
        return (out, y.mean((2, 3))) if self.training else out


def test_a_reader_that_exists_only_in_train_mode_keeps_the_layer() -> None:
    record = _record(_convert(_AuxHead()))
    assert not record.replaced and "ratio-1 check" in record.reason


def test_the_check_leaves_the_callers_model_and_statistics_untouched() -> None:
    model = _AuxHead().train()
    model.stem.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    _convert(model)
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- hooks


def test_a_hooked_conv_is_kept_and_its_hook_still_runs() -> None:
    model, seen = _Net(), []
    model.conv.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    converted = _convert(model)
    record = _record(converted)
    assert not record.replaced and "1 forward hook" in record.reason
    seen.clear()
    converted(X)
    assert seen == [torch.Size([2, 16, 8, 8])]


def test_a_norm_with_a_pre_hook_is_not_absorbed() -> None:
    model, seen = _Net(), []
    model.bn.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].shape))
    converted = _convert(model)
    record = _record(converted)
    assert record.replaced and record.absorbed == () and "forward pre-hook" in record.reason
    seen.clear()
    converted(X)
    assert len(seen) == 1


# ---------------------------------------------------------------- a conv reached by name and through a list


class _NameAndList(_Net):
    def __init__(self) -> None:
        super().__init__()
        self.held = [self.conv]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.relu(self.bn(self.conv(x))) + self.held[0](x)


def test_a_conv_also_called_through_a_plain_list_is_kept() -> None:
    record = _record(_convert(_NameAndList()))
    assert not record.replaced and "ran 1 times but the conv ran 2 times" in record.reason


# ---------------------------------------------------------------- norm subclasses with extra state


class _ScaledNorm(nn.BatchNorm2d):
    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.register_buffer("scale", torch.linspace(1, 2, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale[:, None, None]


class _GainNorm(nn.BatchNorm2d):
    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.gain = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.gain


class _NormPReLU(nn.BatchNorm2d):
    """A fused norm-activation with a per-channel activation (as timm's BatchNormAct2d with PReLU)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


@pytest.mark.parametrize(("norm", "state"), [(_ScaledNorm, "scale"), (_GainNorm, "gain"), (_NormPReLU, "act.weight")])
def test_a_norm_with_extra_state_stays_in_the_host(norm: type[nn.Module], state: str) -> None:
    model = _Net(norm(16)).eval()
    converted = _convert(model)
    record = _record(converted)
    assert record.replaced and record.absorbed == () and f"state beyond a BatchNorm's ({state})" in record.reason
    assert type(converted.bn) is norm
    with torch.no_grad():
        assert torch.isfinite(converted.eval()(X)).all()


# ---------------------------------------------------------------- parts that cannot be handled: refused


class _InferenceInside(_Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return super().forward(x.clone())


def _quantization_prepared() -> nn.Module:
    model = _Net().eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig("x86")
    return torch.ao.quantization.prepare(model)


def _old_norm(kind: str) -> nn.Module:
    model = _Net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        getattr(torch.nn.utils, kind)(model.conv)
    model(X)  # with gradients: the recomputed weight is not a leaf, which copy.deepcopy refuses
    return model


def _scripted_part() -> nn.Module:
    model = _Net()
    model.bn = torch.jit.script(nn.BatchNorm2d(16))
    return model


@pytest.mark.parametrize(("build", "message"), [
    (_quantization_prepared, "prepared for eager-mode quantization .*apply ghostify to the float model"),
    (lambda: _old_norm("weight_norm"), "old-style torch.nn.utils.weight_norm.*parametrizations.weight_norm"),
    (lambda: _old_norm("spectral_norm"), "old-style torch.nn.utils.spectral_norm"),
    (_scripted_part, "bn is a TorchScript module .*apply ghostify to the eager model"),
    (_InferenceInside, "forward runs .* under torch.inference_mode.*use torch.no_grad"),
])
def test_parts_ghostify_cannot_handle_are_refused_with_the_cause(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _convert(build())


# ---------------------------------------------------------------- prepare_for_inference proves its result


def _randomised(model: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator))
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
    return model.eval()


class _FirstAlone(nn.Module):
    """A Sequential whose first layer is also called on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features(x), self.features[0](x)


def _same_outputs(prepared: nn.Module, model: nn.Module) -> None:
    with torch.no_grad():
        for got, want in zip(prepared(X), model(X), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_prepare_does_not_fold_a_conv_whose_output_has_another_reader() -> None:
    model = _randomised(_FirstAlone())
    prepared = prepare_for_inference(model, example_inputs=X)
    assert isinstance(prepared.get_submodule("features.1"), nn.BatchNorm2d)
    (pair,) = prepared.fold_report.pairs
    assert not pair.folded and "runs 2 times" in pair.reason
    assert prepared.fold_report.verified
    _same_outputs(prepared, model)


def test_prepare_does_not_fold_a_conv_read_by_a_hook() -> None:
    model, seen = _randomised(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))), []
    model[0].register_forward_hook(lambda _m, _i, out: seen.append(out.detach().clone()))
    with torch.no_grad():
        model(X)
    prepared = prepare_for_inference(model, example_inputs=X)
    with torch.no_grad():
        prepared(X)
    assert "forward hook" in prepared.fold_report.pairs[0].reason
    torch.testing.assert_close(seen[-1], seen[0])


def test_prepare_refuses_an_old_style_spectral_norm_conv_with_the_cause() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.nn.utils.spectral_norm(model[0])
    model(X)
    with pytest.raises(ValueError, match="old-style torch.nn.utils.spectral_norm"):
        prepare_for_inference(model, example_inputs=X)


def test_prepare_keeps_the_ghost_report() -> None:
    converted = _convert(_Net())
    prepared = prepare_for_inference(_randomised(converted), example_inputs=X)
    assert prepared.ghost_report.summary() == converted.ghost_report.summary()
    assert all(p.folded for p in prepared.fold_report.pairs) and prepared.fold_report.verified
