"""ResNet18 whose stem pool comes from the registry, with a selectable stem.

Built from torchvision's ``BasicBlock`` (stages made the way torchvision's
``ResNet._make_layer`` makes them: a 1x1 strided convolution + BN shortcut where the shape
changes). Module names are torchvision's (``conv1``, ``bn1``, ``relu``, ``maxpool``,
``layer1``..``layer4``, ``avgpool``, ``fc``), so with ``stem="imagenet"`` and ``width=64``
a torchvision ``resnet18`` state dict loads strictly. The stem's pooling layer keeps the
name ``maxpool`` whatever method it is (as in timm, for weight compatibility).

Stems (``stem=``):

- ``"paper"`` (default, the paper's code): 3x3 stride-1 conv + BN + ReLU + 2x2/2 pool.
  Downsamples by 2: 32x32 -> 4x4 and 64x64 -> 8x8 before global pooling.
- ``"imagenet"``: torchvision's 7x7/2 conv (pad 3) + BN + ReLU + 3x3/2 pool (pad 1).
  Downsamples by 4: 32x32 -> 1x1, 64x64 -> 2x2.
- ``"cifar"``: 3x3 stride-1 conv + BN + ReLU and **no pooling layer at all**, so the
  pooling method is used nowhere; only ``pool="max"`` (meaning "no pool") is accepted.

The pooling method is used in exactly one place, the stem (ResNet18 has no other pool).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

from ._common import check_pool_args, check_positive_int, init_weights, make_pool

# conv: (kernel, stride, padding) of the first convolution; pool: the stem pool's geometry.
STEMS: dict[str, dict] = {
    "paper": {"conv": (3, 1, 1), "pool": {"kernel_size": 2, "stride": 2, "padding": 0}},
    "imagenet": {"conv": (7, 2, 3), "pool": {"kernel_size": 3, "stride": 2, "padding": 1}},
    "cifar": {"conv": (3, 1, 1), "pool": None},
}
RESNET18_LAYERS = (2, 2, 2, 2)


def make_stage(inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """One ResNet stage of ``BasicBlock``s, as torchvision's ``ResNet._make_layer``."""
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
    layers = [BasicBlock(inplanes, planes, stride, downsample)]
    layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """ResNet with ``BasicBlock``s, a selectable stem and a registry pool in the stem.

    ``width`` is the first stage's channel count (64 in ResNet18); stages have
    ``width * (1, 2, 4, 8)`` channels and the stem convolution has ``width``.
    """

    def __init__(self, num_classes: int = 100, pool: str = "max",
                 pool_hparams: Mapping | None = None, stem: str = "paper", width: int = 64,
                 layers=RESNET18_LAYERS):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("width", width)
        hparams = check_pool_args(pool, pool_hparams)
        if stem not in STEMS:
            raise ValueError(f"stem={stem!r} is not valid; choose one of {list(STEMS)}")
        spec = STEMS[stem]
        if spec["pool"] is None and pool != "max":
            raise ValueError(
                f"stem={stem!r} has no pooling layer, so pool={pool!r} would be used "
                f"nowhere; use stem='paper' or stem='imagenet' to compare pooling methods "
                f"(pool='max' is accepted with the pool-free stem='cifar')"
            )
        self.pool_name = pool
        self.stem = stem

        k, s, p = spec["conv"]
        self.conv1 = nn.Conv2d(3, width, kernel_size=k, stride=s, padding=p, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (nn.Identity() if spec["pool"] is None
                        else make_pool(True, pool, hparams, width, **spec["pool"]))
        chans = [width * m for m in (1, 2, 4, 8)]
        inplanes = width
        for i, (planes, blocks) in enumerate(zip(chans, layers)):
            stage = make_stage(inplanes, planes, blocks, stride=1 if i == 0 else 2)
            self.add_module(f"layer{i + 1}", stage)
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = inplanes
        self.fc = nn.Linear(inplanes, num_classes)
        init_weights(self)  # torchvision's ResNet initialisation (fc keeps PyTorch's default)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(num_classes: int = 100, pool: str = "max", pool_hparams: Mapping | None = None,
             stem: str = "paper", width: int = 64) -> ResNet:
    """ResNet18; its stem pool (the only pool) is ``pool`` from the registry.

    ``stem``: ``"paper"`` (default: 3x3/1 conv + 2x2/2 pool), ``"imagenet"`` (7x7/2 conv +
    3x3/2/pad-1 pool) or ``"cifar"`` (3x3/1 conv, no pool: only ``pool="max"`` accepted).
    ``width`` is the base width (64 = the real ResNet18: 11,227,812 parameters at 100
    classes with the imagenet stem, 11,220,132 with the paper or cifar stem).
    """
    return ResNet(num_classes, pool=pool, pool_hparams=pool_hparams, stem=stem, width=width)
