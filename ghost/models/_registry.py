"""A small model registry: builder functions by name, plus torchvision's zoo and Ghost variants."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from fnmatch import fnmatch

from torch import nn

__all__ = ["GHOST_PREFIX", "create_model", "default_input_size", "init_scheme", "list_models", "register_model"]

GHOST_PREFIX = "ghost_"
"""``create_model("ghost_<name>", ratio=..., dw_size=..., ...)`` builds ``<name>`` and ghostifies it."""

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


def default_input_size(name: str) -> tuple[int, int, int]:
    """``(C, H, W)`` a model is meant for: the paper's sizes (32x32 CIFAR, 224x224 ImageNet)."""
    if name.startswith(GHOST_PREFIX):
        name = name[len(GHOST_PREFIX):]
    if name not in set(list_models()):
        raise ValueError(f"unknown model {name!r}; see ghost.models.list_models()")
    return _INPUT_SIZES.get(name, (3, 224, 224))


def init_scheme(name: str) -> Callable[[nn.Module], None] | None:
    """The weight-init scheme the builder of ``name`` applies, ``None`` for PyTorch's defaults (or a scheme
    this registry does not know); ``create_model("ghost_<name>")`` initialises the new layers with it."""
    if name in _INITS:
        return _INITS[name]
    if name in _BUILDERS:
        return None
    if any(fnmatch(name, pattern) for pattern in _TORCHVISION_KAIMING_FAN_OUT):
        from .init import kaiming_normal_fan_out

        return kaiming_normal_fan_out
    return None


def _torchvision_names() -> list[str]:
    from torchvision import models as tvm

    return sorted(tvm.list_models(module=tvm))


def list_models(pattern: str = "*", *, ghost_variants: bool = False) -> list[str]:
    """Names accepted by :func:`create_model`, optionally filtered by a shell-style ``pattern``.

    Includes this repo's models and torchvision's classification models. Every name also has a Ghost
    variant ``ghost_<name>``; pass ``ghost_variants=True`` to list those too.
    """
    names = sorted(set(_BUILDERS) | set(_torchvision_names()))
    if ghost_variants:
        names += [GHOST_PREFIX + n for n in names]
    return [n for n in names if fnmatch(n, pattern)]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a model by name, randomly initialised (nothing is downloaded).

    - Names registered with :func:`register_model` (``vgg16_cifar``, ``resnet56_cifar``, ``ghostnet``...).
    - torchvision classification models (``resnet50``, ``mobilenet_v2``...), built with ``weights=None``.
    - ``ghost_<name>``: ``<name>`` converted with :func:`ghost.ghostify`; the keyword arguments
      ``ratio, dw_size, policy, replace_stem, convert_grouped, include, exclude, overrides, input_size, init,
      verify`` go to ``ghostify``, the rest to the builder. The new layers are initialised with ``<name>``'s
      own scheme (:func:`init_scheme`) unless ``init`` is given.

    Raises:
        ValueError: unknown name (with close matches), or invalid arguments.
    """
    if name.startswith(GHOST_PREFIX) and name[len(GHOST_PREFIX):] in set(list_models()):
        from ghost.surgery import ghostify

        options = {k: kwargs.pop(k) for k in _GHOSTIFY_OPTIONS if k in kwargs}
        options.setdefault("input_size", default_input_size(name))
        options.setdefault("init", init_scheme(name[len(GHOST_PREFIX):]))
        base = create_model(name[len(GHOST_PREFIX):], **kwargs)
        return ghostify(base, inplace=True, **options)
    if name in _BUILDERS:
        return _BUILDERS[name](**kwargs)
    if name in _torchvision_names():
        from torchvision import models as tvm

        if kwargs.get("weights") is not None:
            raise ValueError("create_model builds randomly initialised models; load weights yourself")
        kwargs["weights"] = None
        if name in ("googlenet", "inception_v3"):  # keep torchvision's initialisation, without its warning
            kwargs.setdefault("init_weights", True)
        return tvm.get_model(name, **kwargs)
    close = difflib.get_close_matches(name, list_models(ghost_variants=True), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see ghost.models.list_models()"
    raise ValueError(f"unknown model {name!r}{hint}")
