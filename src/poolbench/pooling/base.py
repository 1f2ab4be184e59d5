"""What every pooling layer shares: the base class and the checks of its arguments.

Every pooling layer in poolbench takes the same constructor arguments as ``nn.MaxPool2d``
(``kernel_size``, ``stride``, ``padding``, ``ceil_mode``) plus ``channels`` and its own
hyperparameters, and produces exactly the output shape ``nn.MaxPool2d`` would.
:class:`PoolBase` stores the geometry and says which hyperparameters a method has
(:meth:`PoolBase.hparam_defaults`, read off its constructor); :func:`check_hparams` is the one
check of hyperparameter names (the registry's and the models'), :func:`check_range` and
:func:`check_choice` check values, each with an error naming the bad value and what is valid.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from .geometry import Geometry

# Constructor arguments every method shares; the others are its hyperparameters.
GEOMETRY_ARGS = ("channels", "kernel_size", "stride", "padding", "ceil_mode")


class PoolBase(nn.Module):
    """Base class: stores the geometry and the channel count; subclasses implement forward.

    Class attributes that subclasses set:
      ``name``: registry name; ``paper``: True for the adaptive-pooling paper's eight;
      ``citation``: short reference.
    """

    name: str = ""
    paper: bool = False
    citation: str = ""

    def __init__(self, channels: int, kernel_size=2, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        self.channels = channels
        self.geometry = Geometry.create(kernel_size, stride, padding, ceil_mode)

    # nn.MaxPool2d-style attributes, so code that inspects pooling layers keeps working.
    @property
    def kernel_size(self):
        return self.geometry.kernel

    @property
    def stride(self):
        return self.geometry.stride

    @property
    def padding(self):
        return self.geometry.padding

    @property
    def ceil_mode(self):
        return self.geometry.ceil_mode

    def extra_repr(self) -> str:
        g = self.geometry
        s = f"channels={self.channels}, kernel_size={g.kernel}, stride={g.stride}"
        if any(g.padding):
            s += f", padding={g.padding}"
        if g.ceil_mode:
            s += ", ceil_mode=True"
        hp = self.hparams_repr()
        return f"{s}, {hp}" if hp else s

    def hparams_repr(self) -> str:
        return ""

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError``, saying why, if this layer cannot pool a ``height`` x ``width``
        map; return None if it can.

        Every method pools any map its window fits (padding included); a method with
        further limits (``fractional_max``) adds them. :func:`poolbench.models.build_model`
        asks every pooling layer at build time when it is given the image size.
        """
        self.geometry.output_size(height, width)

    def learned_summary(self) -> dict[str, torch.Tensor]:
        """Scalar summaries of learned pooling parameters (for per-epoch logging)."""
        return {}

    @classmethod
    def hparam_defaults(cls) -> dict:
        """The method's hyperparameters and their defaults: its constructor's arguments
        beyond the geometry ones (:data:`GEOMETRY_ARGS`)."""
        sig = inspect.signature(cls.__init__)
        return {
            p.name: p.default for p in sig.parameters.values()
            if p.name != "self" and p.name not in GEOMETRY_ARGS
        }


def check_range(name: str, value, low=None, high=None, *, low_open=False, high_open=False,
                integer=False):
    """Raise ``ValueError`` unless ``value`` is a number in the given range."""
    ok_type = (isinstance(value, int) if integer else isinstance(value, (int, float)))
    if isinstance(value, bool) or not ok_type:
        kind = "an int" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if value != value:  # NaN
        raise ValueError(f"{name} must not be NaN")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(
            f"{name}={value!r} is out of range {lo}{'-inf' if low is None else low}, "
            f"{'inf' if high is None else high}{hi}"
        )
    return value


def check_choice(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(choices)}")
    return value


def check_known_keys(given: Iterable[str], valid: Iterable[str], what: str, owner: str,
                     none: str = "none") -> None:
    """Raise ``ValueError`` naming the keys of ``given`` that are not in ``valid``, and the
    valid ones (``none`` when there are none): "unknown {what}(s) [...] for {owner}; valid:
    [...]". The one form of this rule, for pool hyperparameters and model options alike."""
    valid = sorted(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown} for {owner}; valid: {valid or none}")


def check_hparams(cls: type[PoolBase], hparams: Mapping) -> dict:
    """``hparams`` as a plain dict, once every name in it is a hyperparameter of pooling
    method ``cls`` (``ValueError`` naming the unknown ones and the valid ones otherwise).
    Values are checked by the method's constructor."""
    check_known_keys(hparams, cls.hparam_defaults(), "hyperparameter",
                     f"pooling method {cls.name!r}", none="none (it has no hyperparameters)")
    return dict(hparams)
