"""The LightningModule: loss, SGD + cosine schedule, metrics, per-step seeding, divergence."""

from __future__ import annotations

import logging
import math
import time

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from .models import cpu_channels_last_hazard
from .pooling import find_pooling
from .seeding import step_seed

log = logging.getLogger("poolbench.train")


class DivergedError(RuntimeError):
    """Raised when the training loss stops being finite."""


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float,
          min_lr: float = 0.0) -> float:
    """Learning rate at optimiser step ``step``: linear warm-up, then cosine to ``min_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class ClassifierModule(L.LightningModule):
    """Image classifier with the paper's recipe.

    Every training step reseeds torch's global RNG from (seed, global_step), so data
    augmentation and the stochastic pooling methods draw the same numbers whether or not
    the run was interrupted and resumed: a resumed run ends where an uninterrupted one does.
    """

    def __init__(self, model: nn.Module, num_classes: int, *, lr: float = 0.1,
                 momentum: float = 0.9, weight_decay: float = 5e-4, nesterov: bool = False,
                 warmup_epochs: float = 0.0, min_lr: float = 0.0, seed: int = 0,
                 channels_last: bool = True, divergence_check_every_n_steps: int = 20):
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.optim_cfg = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                              nesterov=nesterov, warmup_epochs=warmup_epochs, min_lr=min_lr)
        self.seed = seed
        self.channels_last = channels_last
        self.check_every = max(1, int(divergence_check_every_n_steps))
        top5 = min(5, num_classes)
        metric = dict(task="multiclass", num_classes=num_classes)
        self.val_top1 = torchmetrics.Accuracy(**metric, top_k=1)
        self.val_top5 = torchmetrics.Accuracy(**metric, top_k=top5)
        self.test_top1 = torchmetrics.Accuracy(**metric, top_k=1)
        self.test_top5 = torchmetrics.Accuracy(**metric, top_k=top5)
        self.register_buffer("_nonfinite", torch.zeros((), dtype=torch.int64), persistent=False)
        self.test_predictions: list[torch.Tensor] = []
        self.test_result: dict | None = None
        self._epoch_start = None
        self.epoch_times: list[float] = []
        self.train_images_seen = 0

    # ---- set-up -------------------------------------------------------------------------
    def configure_model(self):
        if not self.channels_last:
            return
        hazard = cpu_channels_last_hazard(self.model)
        if hazard and self.trainer.strategy.root_device.type == "cpu":
            log.warning("channels_last off for this CPU run: %s", hazard)
            self.channels_last = False
            return
        self.model.to(memory_format=torch.channels_last)

    def configure_optimizers(self):
        c = self.optim_cfg
        opt = torch.optim.SGD(self.parameters(), lr=c["lr"], momentum=c["momentum"],
                              weight_decay=c["weight_decay"], nesterov=c["nesterov"])
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = int(round(c["warmup_epochs"] * steps_per_epoch))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_at(step, total, warmup, c["lr"], c["min_lr"]) / c["lr"])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def forward(self, x):
        return self.model(x)

    def _inputs(self, batch):
        """(images, labels), the images in the model's memory format (the data module hands
        over channels_last batches; a contiguous model gets contiguous ones, since a
        channels_last input alone makes the convolutions run channels_last)."""
        x, y = batch
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt), y

    # ---- training -----------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx):
        # The batch in hand was augmented before this hook ran (on_after_batch_transfer);
        # the data module seeds that from step_seed(..., stream=1). This seed governs the
        # model's own randomness (stochastic pooling) for this step.
        torch.manual_seed(step_seed(self.seed, self.global_step))

    def training_step(self, batch, batch_idx):
        x, y = self._inputs(batch)
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self._nonfinite += (~torch.isfinite(loss.detach())).to(torch.int64)
        if (self.global_step + 1) % self.check_every == 0:
            self.check_finite()
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.train_images_seen += x.shape[0]
        return loss

    def check_finite(self):
        """Read the device-side non-finite counter (one host sync) and stop if it moved."""
        if int(self._nonfinite) > 0:
            raise DivergedError(
                f"non-finite training loss at or before step {self.global_step} "
                f"(epoch {self.current_epoch})")

    def on_train_epoch_start(self):
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self):
        self.check_finite()
        if self._epoch_start is not None:
            self.epoch_times.append(time.perf_counter() - self._epoch_start)
            self.log("time/epoch_s", self.epoch_times[-1])
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        for layer_name, layer in find_pooling(self.model):
            for key, value in layer.learned_summary().items():
                self.log(f"pool/{layer_name}/{key}", value)

    # ---- evaluation ---------------------------------------------------------------------
    def validation_step(self, batch, batch_idx):
        x, y = self._inputs(batch)
        logits = self.model(x)
        self.log("val/loss", F.cross_entropy(logits, y), prog_bar=False)
        self.val_top1(logits, y)
        self.val_top5(logits, y)
        self.log("val/acc", self.val_top1, prog_bar=True)
        self.log("val/acc5", self.val_top5)

    def on_test_epoch_start(self):
        self.test_predictions = []
        self.test_result = None

    def test_step(self, batch, batch_idx):
        x, y = self._inputs(batch)
        logits = self.model(x)
        self.test_top1.update(logits, y)
        self.test_top5.update(logits, y)
        self.test_predictions.append(logits.argmax(1).cpu())

    def on_test_epoch_end(self):
        # Test accuracy goes to results.json (final and best-val weights), not to the
        # per-epoch metrics log; logged with logger=False only for the progress output.
        self.test_result = {"top1": float(self.test_top1.compute()),
                            "top5": float(self.test_top5.compute())}
        self.test_top1.reset()
        self.test_top5.reset()
        self.log("test/acc", self.test_result["top1"], logger=False)
        self.log("test/acc5", self.test_result["top5"], logger=False)
