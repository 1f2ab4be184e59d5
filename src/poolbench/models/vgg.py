"""VGG16 with batch norm for small images (CIFAR-100 at 32x32, Tiny ImageNet at 64x64).

The convolutional layers are torchvision's configuration ``cfgs["D"]`` (13 3x3 convolutions
with bias, each followed by BatchNorm and ReLU, in five blocks that each end with a 2x2/2
pool), as in ``torchvision.models.vgg.make_layers(cfgs["D"], batch_norm=True)``. The head
is the usual one for small images: global average pooling and one linear layer (instead of
ImageNet VGG's 7x7 adaptive pool and three fully connected layers). At 32x32 input the map
after the fifth pool is 1x1, at 64x64 it is 2x2.

Every pooling layer comes from the registry (:func:`poolbench.pooling.create_pool`):
the chosen method at the positions in ``pool_positions``, max pooling elsewhere.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torchvision.models.vgg import cfgs

from ._common import check_pool_args, check_positive_int, init_weights, make_pool

VGG16_CFG: tuple = tuple(cfgs["D"])  # 64, 64, M, 128, 128, M, 256 x3, M, 512 x3, M, 512 x3, M
NUM_POOLS = 5
POOL_POSITION_PRESETS: dict[str, tuple[int, ...]] = {
    "all": (0, 1, 2, 3, 4),  # the paper's description: every pool uses the method
    "last2": (3, 4),  # the paper's released code: only pool4 and pool5 were replaced
    "none": (),  # plain max pooling everywhere
}


def resolve_pool_positions(pool_positions) -> tuple[int, ...]:
    """``"all"``, ``"last2"``, ``"none"`` or a sequence of pool indices in 0..4 -> sorted tuple.

    Index ``i`` is the pool that ends block ``i + 1`` (module ``features.pool{i+1}``).
    """
    if isinstance(pool_positions, str):
        if pool_positions not in POOL_POSITION_PRESETS:
            raise ValueError(
                f"pool_positions={pool_positions!r} is not valid; choose one of "
                f"{list(POOL_POSITION_PRESETS)} or a list of pool indices in 0..{NUM_POOLS - 1}"
            )
        return POOL_POSITION_PRESETS[pool_positions]
    if isinstance(pool_positions, Sequence):
        positions = list(pool_positions)
        bad = [p for p in positions
               if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < NUM_POOLS]
        if bad:
            raise ValueError(
                f"pool_positions has invalid entries {bad}; pool indices must be ints in "
                f"0..{NUM_POOLS - 1} (index i is features.pool{{i+1}})"
            )
        if len(set(positions)) != len(positions):
            raise ValueError(f"pool_positions has duplicate entries: {positions}")
        return tuple(sorted(positions))
    raise ValueError(
        f"pool_positions must be one of {list(POOL_POSITION_PRESETS)} or a list of pool "
        f"indices in 0..{NUM_POOLS - 1}, got {pool_positions!r}"
    )


class VGG(nn.Module):
    """VGG with batch norm, global average pooling and a linear classifier.

    Modules: ``features`` (an ``nn.Sequential`` with named layers ``conv{b}_{i}``,
    ``bn{b}_{i}``, ``relu{b}_{i}`` and ``pool{b}`` for blocks b = 1..5), ``global_pool``,
    ``classifier``. ``width`` is the first block's channel count (64 in VGG16); every
    layer scales with it, so ``width=8`` gives a network 1/8 as wide.
    """

    def __init__(self, num_classes: int = 100, pool: str = "max",
                 pool_hparams: Mapping | None = None, pool_positions="all", width: int = 64,
                 cfg: Sequence = VGG16_CFG):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("width", width)
        hparams = check_pool_args(pool, pool_hparams)
        positions = resolve_pool_positions(pool_positions)
        if sum(v == "M" for v in cfg) != NUM_POOLS:
            raise ValueError(f"cfg must contain exactly {NUM_POOLS} 'M' entries, got {cfg}")
        self.pool_name = pool
        self.pool_positions = positions

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_ch, block, conv = 3, 1, 1
        for v in cfg:
            if v == "M":
                layers[f"pool{block}"] = make_pool(
                    block - 1 in positions, pool, hparams, in_ch, kernel_size=2, stride=2)
                block, conv = block + 1, 1
                continue
            out_ch = v * width // 64
            layers[f"conv{block}_{conv}"] = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
            layers[f"bn{block}_{conv}"] = nn.BatchNorm2d(out_ch)
            layers[f"relu{block}_{conv}"] = nn.ReLU(inplace=True)
            in_ch, conv = out_ch, conv + 1
        self.features = nn.Sequential(layers)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = in_ch
        self.classifier = nn.Linear(in_ch, num_classes)
        init_weights(self, linear_std=0.01)  # torchvision's VGG initialisation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.global_pool(x).flatten(1)
        return self.classifier(x)


def vgg16(num_classes: int = 100, pool: str = "max", pool_hparams: Mapping | None = None,
          pool_positions="all", width: int = 64) -> VGG:
    """VGG16-BN for 32x32 / 64x64 images; its five pools come from the registry.

    ``pool`` (registry name) with ``pool_hparams`` is used at ``pool_positions``: ``"all"``
    (default, as the paper describes), ``"last2"`` (pools 4 and 5 only, as the paper's
    released code did), ``"none"``, or a list of indices in 0..4; the other positions use
    max pooling. ``width`` is the base width (64 = the real VGG16: 14,774,436 parameters at
    100 classes with max pooling).
    """
    return VGG(num_classes, pool=pool, pool_hparams=pool_hparams,
               pool_positions=pool_positions, width=width)
