"""Max/average blends: Y = l * max(X) + (1 - l) * mean(X), with l chosen in different ways.

All of them take the max- and average-pooled maps from :func:`~poolbench.pooling.functional.
max_avg` (the native kernels, or one fused pass where the windows tile the input) and blend
them, so their cost is that of max pooling plus average pooling plus a few elementwise
operations on the (smaller) output. The random ones (``stochastic_mix``, ``mixed``) share
their draws as ``sample_per`` says (:data:`SAMPLE_PER`, :func:`sample_shape`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Beta
from torch.nn import functional as F

from .base import PoolBase, check_choice, check_range
from .functional import avg_pool, max_avg, upcast

SAMPLE_PER = ("batch", "sample", "channel", "sample_channel")


def sample_shape(x: torch.Tensor, per: str) -> tuple[int, ...]:
    """Shape of a random draw shared according to ``per`` (broadcastable to ``x``)."""
    n, c = x.shape[:2]
    return {
        "batch": (1, 1, 1, 1),
        "sample": (n, 1, 1, 1),
        "channel": (1, c, 1, 1),
        "sample_channel": (n, c, 1, 1),
    }[per]


def blend(weight_of_max, m: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``l * m + (1 - l) * a`` for a float or a broadcastable tensor ``l``."""
    if isinstance(weight_of_max, torch.Tensor):
        weight_of_max = weight_of_max.to(m.dtype)
    return torch.lerp(a, m, weight_of_max)


class ChannelAdaptivePool2d(PoolBase):
    r"""Channel-adaptive max/average blend (adaptive-pooling paper).

    .. math:: Y_c = \lambda_c \max(X_c) + (1 - \lambda_c)\,\mathrm{mean}(X_c),
              \qquad \lambda_c = \sigma(w_c)

    One learnable logit :math:`w_c` per channel, initialised so that :math:`\lambda_c` =
    ``init`` (default 0.5). In the spirit of Lee et al. (AISTATS 2016), "mixed
    max-average pooling", with per-channel weights.
    """

    name = "channel_adaptive"
    paper = True
    citation = "Lee, Gallagher & Tu 2016 (mixed max-average); adaptive-pooling paper"

    def __init__(self, channels, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                 init: float = 0.5):
        super().__init__(channels, kernel_size, stride, padding, ceil_mode)
        check_range("init", init, 0, 1, low_open=True, high_open=True)
        self.init = float(init)
        self.logit = nn.Parameter(torch.full((channels,), float(torch.logit(torch.tensor(init)))))

    def weight_of_max(self) -> torch.Tensor:
        return torch.sigmoid(self.logit)

    def forward(self, x):
        m, a = max_avg(x, self.geometry)
        return blend(self.weight_of_max().view(1, -1, 1, 1), m, a)

    def learned_summary(self):
        lam = self.weight_of_max().detach()
        return {"lambda_mean": lam.mean(), "lambda_std": lam.std(unbiased=False),
                "lambda_min": lam.min(), "lambda_max": lam.max()}

    def hparams_repr(self):
        return f"init={self.init}"


class GatedPool2d(PoolBase):
    r"""Gated max/average pooling (after Lee, Gallagher & Tu, AISTATS 2016).

    .. math::
        G = \mathrm{AvgPool}\big(\sigma(\mathrm{Conv}_{1\times1}(X))\big), \qquad
        Y = G \max(X) + (1 - G)\,\mathrm{mean}(X)

    ``gate="dense"`` (default) uses a C -> C 1x1 convolution, so each channel's gate
    looks at all channels; ``gate="depthwise"`` uses one weight and bias per channel
    (much cheaper). The convolution starts at zero, so G = 0.5 at initialisation; it is
    computed in fp32 so that large activations cannot overflow under fp16 autocast.
    """

    name = "gated"
    paper = True
    citation = "Lee, Gallagher & Tu 2016 (gated max-average); adaptive-pooling paper"

    def __init__(self, channels, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                 gate: str = "dense"):
        super().__init__(channels, kernel_size, stride, padding, ceil_mode)
        self.gate = check_choice("gate", gate, ("dense", "depthwise"))
        in_per_group = channels if gate == "dense" else 1
        self.weight = nn.Parameter(torch.zeros(channels, in_per_group, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels))

    def gate_map(self, x):
        with torch.autocast(x.device.type, enabled=False):
            xf = upcast(x)
            z = F.conv2d(xf, self.weight.to(xf.dtype), self.bias.to(xf.dtype),
                         groups=1 if self.gate == "dense" else self.channels)
            return avg_pool(torch.sigmoid(z), self.geometry)

    def forward(self, x):
        m, a = max_avg(x, self.geometry)
        return blend(self.gate_map(x), m, a)

    def hparams_repr(self):
        return f"gate={self.gate!r}"


class StochasticMixPool2d(PoolBase):
    r"""Stochastic max/average mix with a learnable centre (adaptive-pooling paper, fixed).

    .. math:: Y = \lambda \max(X) + (1 - \lambda)\,\mathrm{mean}(X)

    Training: :math:`\lambda \sim \mathrm{Beta}(\kappa\mu, \kappa(1-\mu))` with mean
    :math:`\mu = \sigma(\theta)` and concentration :math:`\kappa` (``concentration``),
    sampled with the reparameterisation gradient, so :math:`\theta` learns and the training
    distribution is centred on the evaluation value. Evaluation: :math:`\lambda = \mu`.
    :math:`\theta` starts at 0 (:math:`\mu = 0.5`); one per channel with
    ``per_channel=True``, else one per layer. ``sample_per`` chooses how draws are shared:
    ``sample_channel`` (default: one per sample and channel), ``sample``, ``channel`` or
    ``batch``. Sampling runs on the input's device with no host-device synchronisation.
    """

    name = "stochastic_mix"
    paper = True
    citation = "adaptive-pooling paper (stochastic mix), reparameterised Beta"

    def __init__(self, channels, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                 concentration: float = 4.0, per_channel: bool = False,
                 sample_per: str = "sample_channel"):
        super().__init__(channels, kernel_size, stride, padding, ceil_mode)
        check_range("concentration", concentration, 0, None, low_open=True)
        self.concentration = float(concentration)
        self.sample_per = check_choice("sample_per", sample_per, SAMPLE_PER)
        self.per_channel = bool(per_channel)
        self.theta = nn.Parameter(torch.zeros(channels if per_channel else 1))

    def mean_weight(self) -> torch.Tensor:
        return torch.sigmoid(self.theta)

    def sample_weight(self, x) -> torch.Tensor:
        mu = self.mean_weight().float().view(1, -1, 1, 1)
        # Both Beta concentrations must be > 0, but sigmoid(theta) rounds to exactly 0 or 1
        # for large |theta|: keep mu inside (0, 1). No argument validation: it is a
        # host-device synchronisation (and the values are valid by construction).
        eps = torch.finfo(mu.dtype).eps
        mu = mu.clamp(eps, 1 - eps)
        shape = torch.broadcast_shapes(sample_shape(x, self.sample_per), mu.shape)
        mu = mu.expand(shape)
        return Beta(self.concentration * mu, self.concentration * (1 - mu),
                    validate_args=False).rsample()

    def forward(self, x):
        m, a = max_avg(x, self.geometry)
        if self.training:
            lam = self.sample_weight(x)
        else:
            lam = self.mean_weight().view(1, -1, 1, 1)
        return blend(lam, m, a)

    def learned_summary(self):
        mu = self.mean_weight().detach()
        return {"lambda_mean": mu.mean(), "lambda_std": mu.std(unbiased=False)}

    def hparams_repr(self):
        return (f"concentration={self.concentration}, per_channel={self.per_channel}, "
                f"sample_per={self.sample_per!r}")


class MixedPool2d(PoolBase):
    r"""Mixed pooling (Yu, Wang, Chen & Wei, RSKT 2014).

    Training: :math:`Y = \lambda \max(X) + (1-\lambda)\,\mathrm{mean}(X)` with
    :math:`\lambda \in \{0, 1\}`, :math:`P(\lambda = 1)` = ``p_max``, drawn once per forward
    pass by default (``sample_per="batch"``, as in the paper; or per sample / channel).
    Evaluation: the expectation, :math:`\lambda = ` ``p_max``. The draw stays on the
    device (no host-device synchronisation).
    """

    name = "mixed"
    citation = "Yu et al. 2014, Mixed pooling for CNNs"

    def __init__(self, channels, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                 p_max: float = 0.5, sample_per: str = "batch"):
        super().__init__(channels, kernel_size, stride, padding, ceil_mode)
        self.p_max = float(check_range("p_max", p_max, 0, 1))
        self.sample_per = check_choice("sample_per", sample_per, SAMPLE_PER)

    def forward(self, x):
        m, a = max_avg(x, self.geometry)
        if self.training:
            shape = sample_shape(x, self.sample_per)
            lam = (torch.rand(shape, device=x.device) < self.p_max).to(m.dtype)
            return blend(lam, m, a)
        return blend(self.p_max, m, a)

    def hparams_repr(self):
        return f"p_max={self.p_max}, sample_per={self.sample_per!r}"
