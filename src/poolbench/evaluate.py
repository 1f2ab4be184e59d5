"""What a run measured once training ended: test accuracy of the final weights and of the
best-validation checkpoint (their predictions saved beside results.json), and its speed."""

from __future__ import annotations

import logging
from pathlib import Path

from . import rundir

log = logging.getLogger(__name__)

def not_tested() -> dict:
    """results.json's test fields of a run that was not tested (it diverged)."""
    return {"test": {"final": None, "best_val": None}, "best_val_acc": None,
            "best_val_epoch": None}


def _test_pass(trainer, module, dm, ckpt_path: str | None = None):
    """(top-1/top-5, per-image predicted classes of the whole test set) of one test pass
    (under DDP each process tests a shard; the module gathers them in dataset order)."""
    import torch

    trainer.test(module, datamodule=dm, ckpt_path=ckpt_path, verbose=False)
    if not torch.equal(module.test_labels, dm.test_labels):
        raise RuntimeError(
            f"the test predictions gathered from {trainer.world_size} process(es) are not the "
            f"test set in order: {len(module.test_labels)} labels, {len(dm.test_labels)} "
            "test images")
    return module.test_result, module.test_predictions.numpy()


def evaluate(trainer, module, dm, best, run_dir: Path) -> dict:
    """Test the final weights, then (with a validation split) the best-validation checkpoint
    ``best``; global rank 0 saves both passes' predictions and the labels to
    test_predictions.npz (atomically).

    Returns results.json's ``test``, ``best_val_acc`` and ``best_val_epoch`` (on every
    process). Model selection uses validation only: the test set is looked at after
    training, twice; once when the best-validation checkpoint holds the final weights
    (the best epoch was the last), whose results then stand for both.
    """
    import numpy as np
    import torch

    from .utils import atomic_file

    out = not_tested()
    predictions = {}
    out["test"]["final"], predictions["final"] = _test_pass(trainer, module, dm)
    if best is not None and best.best_model_path:
        ckpt = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
        out["best_val_acc"] = float(best.best_model_score)
        out["best_val_epoch"] = int(ckpt["epoch"])
        # When the best epoch was the last, its checkpoint holds the final weights, whose
        # test pass just ran: testing them again would give the same predictions. Under DDP
        # only if every process holds them (each keeps its own BatchNorm statistics), so
        # that all take the same branch.
        same = same_weights(ckpt["state_dict"], module.state_dict())
        if trainer.strategy.reduce_boolean_decision(same, all=True):
            out["test"]["best_val"], predictions["best_val"] = \
                dict(out["test"]["final"]), predictions["final"]
            log.info("test (best-val checkpoint): the final weights (the best epoch, %d, was "
                     "the last): not tested again", out["best_val_epoch"] + 1)
        else:
            out["test"]["best_val"], predictions["best_val"] = _test_pass(
                trainer, module, dm, best.best_model_path)
    predictions["labels"] = dm.test_labels.numpy()
    if trainer.is_global_zero:
        with atomic_file(Path(run_dir) / rundir.PREDICTIONS) as f:
            np.savez_compressed(f, **predictions)
    return out


def same_weights(state: dict, other: dict) -> bool:
    """Whether two state dicts hold the same tensors, bit for bit (same keys, shapes, dtypes
    and values; compared on the CPU)."""
    import torch

    return state.keys() == other.keys() and all(
        state[k].dtype == other[k].dtype and state[k].shape == other[k].shape
        and torch.equal(state[k].cpu(), other[k].detach().cpu()) for k in state)


def run_environment(model, precision: str) -> dict:
    """results.json's fields on what a run ran: the model's parameter counts, the precision,
    CPU threads, device, git commit and package versions (poolbench-train and -eval)."""
    import torch

    from .config import project_root
    from .models import model_summary
    from .utils import device_description, git_commit, package_versions

    return dict(params=model_summary(model), precision=precision,
                threads=torch.get_num_threads(), device=device_description(),
                git_commit=git_commit(project_root()), versions=package_versions())


def speed(run_dir: Path, epoch_times: list[float], train_images: int) -> dict:
    """results.json's ``mean_epoch_time_s`` (over the epochs in metrics.csv, which span
    resumptions; else ``epoch_times``, this process's) and ``throughput_img_s``."""
    import numpy as np

    epochs = _epoch_metrics(run_dir)
    if epochs is not None and "time/epoch_s" in epochs:
        epoch_times = list(epochs["time/epoch_s"].dropna())
    mean_epoch = float(np.mean(epoch_times)) if len(epoch_times) else None
    return {"mean_epoch_time_s": mean_epoch,
            "throughput_img_s": (train_images / mean_epoch) if (train_images and mean_epoch)
            else None}


def _epoch_metrics(run_dir: Path):
    """Per-epoch rows of metrics.csv (one row per epoch, columns merged), or None."""
    import pandas as pd

    path = Path(run_dir) / rundir.METRICS
    if not path.exists():
        return None
    df = pd.read_csv(path)
    if "epoch" not in df:
        return None
    return df.groupby("epoch").last().reset_index()
