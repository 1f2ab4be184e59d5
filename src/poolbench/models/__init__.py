"""Models of poolbench: VGG16-BN and ResNet18 whose pooling layers come from the registry.

>>> from poolbench.models import build_model, model_summary
>>> model = build_model("vgg16", num_classes=100, pool="soft_tmaxavg", pool_positions="last2")
>>> model_summary(model)["params_total"]
14774436
"""

from ._common import check_input_size, cpu_channels_last_hazard, init_weights
from .factory import MODELS, build_model, model_options, model_summary
from .resnet import STEMS, ResNet, resnet18
from .vgg import POOL_POSITION_PRESETS, VGG, resolve_pool_positions, vgg16

__all__ = [
    "MODELS", "POOL_POSITION_PRESETS", "STEMS", "VGG", "ResNet", "build_model",
    "check_input_size", "cpu_channels_last_hazard", "init_weights",
    "model_options", "model_summary", "resnet18", "resolve_pool_positions", "vgg16",
]
