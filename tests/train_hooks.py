"""poolbench-train with test-only faults, chosen by ``$POOLBENCH_TEST_FAULT`` (tests only).

Run as a script (``python tests/train_hooks.py OVERRIDES...``): Lightning's launcher then
re-runs this same script, faults included, for the other ranks of a DDP run.

* ``nan_on_rank=R@S``: from training step S on, rank R's inputs are NaN, so its loss is
  non-finite (the other ranks' stay finite at that step); the time of the first NaN goes to
  the file ``$POOLBENCH_TEST_MARK`` if set;
* ``kill_after_checkpoints=E``: SIGKILL this process right after the checkpoint callbacks'
  ``on_train_epoch_end`` of epoch E, before Lightning logs that epoch's training metrics;
* ``kill_group_at_step=S``: on global rank 0, SIGKILL the whole process group at training
  step S (a scheduler killing a job: every rank dies at once).
"""

from __future__ import annotations

import os
import signal
import time

from lightning.pytorch.callbacks import Checkpoint

from poolbench import callbacks, train
from poolbench.module import ClassifierModule

FAULT = os.environ.get("POOLBENCH_TEST_FAULT", "")
NAME, _, ARG = FAULT.partition("=")


def _wrap_training_step(before):
    original = ClassifierModule.training_step

    def training_step(self, batch, batch_idx):
        return original(self, before(self, batch), batch_idx)

    ClassifierModule.training_step = training_step


if NAME == "nan_on_rank":
    RANK, STEP = (int(v) for v in ARG.split("@"))

    def poison(module, batch):
        x, y = batch
        if module.global_rank == RANK and module.global_step >= STEP:
            mark = os.environ.get("POOLBENCH_TEST_MARK")
            if mark and not os.path.exists(mark):  # when the first NaN went in
                with open(mark, "w") as f:
                    f.write(repr(time.time()))
            x = x * float("nan")
        return x, y

    _wrap_training_step(poison)

elif NAME == "kill_after_checkpoints":
    EPOCH = int(ARG)

    class KillAfterCheckpoints(Checkpoint):  # a Checkpoint: runs after the others' hook
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == EPOCH:
                os.kill(os.getpid(), signal.SIGKILL)

    _build = callbacks.build_callbacks

    def build_callbacks(*args, **kwargs):
        cbs, best = _build(*args, **kwargs)
        return [*cbs, KillAfterCheckpoints()], best

    callbacks.build_callbacks = build_callbacks

elif NAME == "kill_group_at_step":
    STEP = int(ARG)

    def kill_group(module, batch):
        if module.global_rank == 0 and module.global_step == STEP:
            if os.getpgid(0) != os.getpid():  # never kill the group of whoever started us
                raise SystemExit("kill_group_at_step: start the run in a session of its own")
            os.killpg(0, signal.SIGKILL)
        return batch

    _wrap_training_step(kill_group)

elif FAULT:
    raise SystemExit(f"unknown POOLBENCH_TEST_FAULT={FAULT!r}")

if __name__ == "__main__":
    train.main()
