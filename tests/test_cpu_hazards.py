"""A PyTorch CPU bug the framework steps around: channels_last at width < 8 (ResNet18).

torch's oneDNN backward of a 1x1 stride-2 convolution with fewer than 8 input channels in
channels_last format corrupts the heap and aborts the process on AVX2 CPUs (torch 2.14.1).
Training falls back to the contiguous format for such a model; the overhead benchmark
refuses it with a message. The training test runs in a subprocess, so that a regression
shows as a failed test rather than an aborted test session.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from poolbench.bench import overhead as O
from poolbench.models import build_model, cpu_channels_last_hazard

TRAIN_WIDTH_4 = """
import logging, sys, torch, lightning as L
from poolbench.models import build_model
from poolbench.module import ClassifierModule
torch.set_num_threads(1)
module = ClassifierModule(build_model("resnet18", 10, width=4), 10, channels_last=True)
x = torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (16,))
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
trainer.fit(module, data)
assert not module.channels_last
for p in module.model.parameters():
    assert p.is_contiguous(), "the model must stay in the contiguous format"
print("trained")
"""


def test_hazard_names_resnet_downsample_below_width_8():
    msg = cpu_channels_last_hazard(build_model("resnet18", 10, width=4))
    assert msg is not None and "layer2.0.downsample.0" in msg and "4 input channels" in msg
    assert cpu_channels_last_hazard(build_model("resnet18", 10, width=8)) is None
    assert cpu_channels_last_hazard(build_model("vgg16", 10, width=4)) is None  # no 1x1 stride 2


def test_training_at_width_4_on_cpu_falls_back_to_contiguous():
    proc = subprocess.run([sys.executable, "-c", TRAIN_WIDTH_4], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "trained" in proc.stdout, proc.stderr[-3000:]
    assert "channels_last off for this CPU run" in proc.stderr


def test_overhead_bench_refuses_the_hazard_with_a_reason():
    cfg = O.OverheadConfig(models=["resnet18"], methods=["max"], width=4, batch=2,
                           repeats=1, warmup=1)
    with pytest.raises(ValueError, match="1x1 stride-2 convolution with 4 input channels"):
        O._build_entry("resnet18", "max", cfg, torch.device("cpu"), "32", torch.channels_last)
