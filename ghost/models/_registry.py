"""A small model registry: this repo's builders, torchvision's and timm's classifiers, and Ghost variants.

Every name says where it comes from (:func:`model_source`), so that no name means two models:

- ``"ghost"``: a builder of this repo, registered with :func:`register_model` (``vgg16_cifar``, ``ghostnet_100``...);
- ``"torchvision"``: a torchvision classification model by its own name (``resnet50``, ``mobilenet_v3_large``...);
- ``"timm"``: a model of the optional ``timm`` package, always written ``timm/<timm name>`` (``timm/resnet50``,
  ``timm/ghostnet_100``). Plain names never mean a timm model, so the names that exist in several zoos
  (``resnet50``, ``efficientnet_b0``, ``vgg16``, ``ghostnet_100``...) keep one meaning whether or not timm
  is installed;
- ``ghost_<name>`` for any of them: ``<name>`` converted with :func:`ghost.ghostify` (``ghost_timm/resnet50``).

Everything is randomly initialised: nothing is downloaded.
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Callable
from fnmatch import fnmatch
from types import ModuleType

from torch import nn

__all__ = [
    "GHOST_PREFIX", "SOURCES", "TIMM_PREFIX", "create_model", "default_input_size", "init_scheme", "list_models",
    "model_source", "register_model",
]

GHOST_PREFIX = "ghost_"
"""``create_model("ghost_<name>", ratio=..., dw_size=..., ...)`` builds ``<name>`` and ghostifies it."""

TIMM_PREFIX = "timm/"
"""``timm/<name>`` is the model ``<name>`` of the optional ``timm`` package, built with ``pretrained=False``."""

SOURCES = ("ghost", "torchvision", "timm")
"""Where a name comes from: this repo, torchvision or timm (see :func:`model_source`)."""

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_INITS: dict[str, Callable[[nn.Module], None]] = {}

# ghostify() options that create_model() forwards for "ghost_<name>" (everything else goes to the builder).
_GHOSTIFY_OPTIONS = (
    "ratio", "dw_size", "policy", "replace_stem", "convert_grouped", "include", "exclude", "overrides",
    "input_size", "init", "verify",
)
_INPUT_SIZES: dict[str, tuple[int, int, int]] = {"inception_v3": (3, 299, 299)}
# torchvision families whose constructors initialise convs with Kaiming-normal fan-out (read from their code)
_TORCHVISION_KAIMING_FAN_OUT = ("resnet*", "resnext*", "wide_resnet*", "vgg*", "mobilenet_v*", "efficientnet*",
                                "mnasnet*", "regnet*")


def register_model(
    *, input_size: tuple[int, int, int] = (3, 224, 224), init: Callable[[nn.Module], None] | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder under its function name, with the input size it is meant for and
    the weight-init scheme it applies (``None``: PyTorch's defaults), which its Ghost variant reuses."""

    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _BUILDERS:
            raise ValueError(f"a model named {name!r} is already registered")
        if name.startswith(GHOST_PREFIX):
            raise ValueError(f"{name!r}: names starting with {GHOST_PREFIX!r} are reserved for Ghost variants")
        _BUILDERS[name] = fn
        _INPUT_SIZES[name] = input_size
        if init is not None:
            _INITS[name] = init
        return fn

    return register


def _timm() -> ModuleType:
    """The timm package, imported on first use (it is optional)."""
    try:
        import timm
    except ImportError as error:
        raise ValueError(f"'{TIMM_PREFIX}<name>' models need the optional timm package: pip install timm") from error
    return timm


def _timm_installed() -> bool:
    return importlib.util.find_spec("timm") is not None


def _torchvision_names() -> list[str]:
    from torchvision import models as tvm

    return sorted(tvm.list_models(module=tvm))


def _base(name: str) -> str:
    """``<name>`` of ``ghost_<name>``, else ``name``."""
    return name[len(GHOST_PREFIX):] if name.startswith(GHOST_PREFIX) else name


def _unknown(name: str) -> ValueError:
    """The error for an unknown name, with up to three close matches among every name (Ghost variants too)."""
    close = difflib.get_close_matches(name, list_models(ghost_variants=True), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see ghost.models.list_models()"
    kind = "timm model" if _base(name).startswith(TIMM_PREFIX) else "model"
    return ValueError(f"unknown {kind} {name!r}{hint}")


def model_source(name: str) -> str:
    """Where ``name`` comes from: ``"ghost"`` (this repo), ``"torchvision"`` or ``"timm"``; for ``ghost_<name>``,
    where ``<name>`` comes from (its Ghost conversion is this repo's :func:`ghost.ghostify` in every case).

    Raises:
        ValueError: unknown name (with close matches), or a ``timm/`` name without timm installed.
    """
    base = _base(name)
    if base.startswith(TIMM_PREFIX):
        timm_names = set(_timm().list_models())
        arch, dot, tag = base[len(TIMM_PREFIX):].partition(".")
        if dot and arch in timm_names:
            raise ValueError(f"{name!r}: the timm tag {tag!r} names pretrained weights, which create_model never "
                             f"loads; use {name.removesuffix(dot + tag)!r}")
        if arch not in timm_names:
            raise _unknown(name)
        return "timm"
    if base in _BUILDERS:
        return "ghost"
    if base in _torchvision_names():
        return "torchvision"
    raise _unknown(name)


def default_input_size(name: str) -> tuple[int, int, int]:
    """``(C, H, W)`` a model is meant for: the paper's sizes (32x32 CIFAR, 224x224 ImageNet) for this repo's
    models, torchvision's documented sizes, and the ``input_size`` of timm's default pretrained config (read
    from timm's code, offline) for ``timm/<name>``."""
    if model_source(name) == "timm":
        size = _timm().get_pretrained_cfg_value(_base(name)[len(TIMM_PREFIX):], "input_size")
        return tuple(size) if size else (3, 224, 224)
    return _INPUT_SIZES.get(_base(name), (3, 224, 224))


def init_scheme(name: str) -> Callable[[nn.Module], None] | None:
    """The weight-init scheme the builder of ``name`` applies, ``None`` for PyTorch's defaults (or a scheme
    this registry does not know); ``create_model("ghost_<name>")`` initialises the new layers with it.

    timm models initialise in their own constructors, with schemes that differ from family to family (and
    from layer to layer within one); the registry does not mirror them, so ``timm/<name>`` gives ``None`` and
    the new Ghost layers of ``ghost_timm/<name>`` get PyTorch's default init unless ``init=`` is passed.
    """
    if name in _INITS:
        return _INITS[name]
    if name in _BUILDERS or name.startswith(TIMM_PREFIX):
        return None
    if any(fnmatch(name, pattern) for pattern in _TORCHVISION_KAIMING_FAN_OUT):
        from .init import kaiming_normal_fan_out

        return kaiming_normal_fan_out
    return None


def list_models(
    pattern: str = "*", *, ghost_variants: bool = False, source: str | tuple[str, ...] | None = None
) -> list[str]:
    """Names accepted by :func:`create_model`, sorted, optionally filtered by a shell-style ``pattern``.

    Args:
        pattern: e.g. ``"resnet*"`` or ``"timm/ghostnet*"``.
        ghost_variants: also list every ``ghost_<name>``.
        source: only the names from this source or these sources (:data:`SOURCES`); ``None``: every source,
            timm's (as ``timm/<name>``) only when timm is installed.

    Raises:
        ValueError: an unknown source, or ``source="timm"`` without timm installed.
    """
    wanted = SOURCES if source is None else (source,) if isinstance(source, str) else tuple(source)
    unknown = [s for s in wanted if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown source(s) {', '.join(map(repr, unknown))}; expected some of {SOURCES}")
    names = set()
    if "ghost" in wanted:
        names |= set(_BUILDERS)
    if "torchvision" in wanted:
        names |= set(_torchvision_names())
    if "timm" in wanted and (source is not None or _timm_installed()):
        names |= {TIMM_PREFIX + n for n in _timm().list_models()}
    ordered = sorted(names)
    if ghost_variants:
        ordered += [GHOST_PREFIX + n for n in ordered]
    return [n for n in ordered if fnmatch(n, pattern)]


def _create_timm(name: str, kwargs: dict) -> nn.Module:
    if kwargs.get("pretrained"):
        raise ValueError("create_model builds randomly initialised models; load weights yourself")
    kwargs["pretrained"] = False
    return _timm().create_model(name[len(TIMM_PREFIX):], **kwargs)


def _create_torchvision(name: str, kwargs: dict) -> nn.Module:
    from torchvision import models as tvm

    if kwargs.get("weights") is not None:
        raise ValueError("create_model builds randomly initialised models; load weights yourself")
    kwargs["weights"] = None
    if name in ("googlenet", "inception_v3"):  # keep torchvision's initialisation, without its warning
        kwargs.setdefault("init_weights", True)
    return tvm.get_model(name, **kwargs)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a model by name, randomly initialised (nothing is downloaded).

    - Names registered with :func:`register_model` (``vgg16_cifar``, ``resnet56_cifar``, ``ghostnet``...).
    - torchvision classification models (``resnet50``, ``mobilenet_v2``...), built with ``weights=None``.
    - ``timm/<name>``: a timm model (``timm/convnext_atto``), built with ``pretrained=False``; needs timm.
    - ``ghost_<name>``: ``<name>`` converted with :func:`ghost.ghostify`; the keyword arguments
      ``ratio, dw_size, policy, replace_stem, convert_grouped, include, exclude, overrides, input_size, init,
      verify`` go to ``ghostify``, the rest to the builder. The new layers are initialised with ``<name>``'s
      own scheme (:func:`init_scheme`) unless ``init`` is given.

    Raises:
        ValueError: unknown name (with close matches), weights asked for, a ``timm/`` name without timm
            installed, or invalid arguments.
    """
    source = model_source(name)
    if name.startswith(GHOST_PREFIX):
        from ghost.surgery import ghostify

        base = _base(name)
        options = {k: kwargs.pop(k) for k in _GHOSTIFY_OPTIONS if k in kwargs}
        options.setdefault("input_size", default_input_size(base))
        options.setdefault("init", init_scheme(base))
        return ghostify(create_model(base, **kwargs), inplace=True, **options)
    if source == "ghost":
        return _BUILDERS[name](**kwargs)
    if source == "torchvision":
        return _create_torchvision(name, kwargs)
    return _create_timm(name, kwargs)
