"""What a run measured once training ended: test accuracy of the final weights and of the
best-validation checkpoint (their predictions saved beside results.json), and its speed."""

from __future__ import annotations

from pathlib import Path

from . import rundir

def not_tested() -> dict:
    """results.json's test fields of a run that was not tested (it diverged)."""
    return {"test": {"final": None, "best_val": None}, "best_val_acc": None,
            "best_val_epoch": None}


def _test_pass(trainer, module, dm, ckpt_path: str | None = None):
    """(top-1/top-5, per-image predicted classes) of one test pass."""
    import torch

    trainer.test(module, datamodule=dm, ckpt_path=ckpt_path, verbose=False)
    return module.test_result, torch.cat(module.test_predictions).numpy()


def evaluate(trainer, module, dm, best, run_dir: Path) -> dict:
    """Test the final weights, then (with a validation split) the best-validation checkpoint
    ``best``; save both passes' predictions and the labels to test_predictions.npz.

    Returns results.json's ``test``, ``best_val_acc`` and ``best_val_epoch``. Model
    selection uses validation only: the test set is looked at after training, twice.
    """
    import numpy as np
    import torch

    out = not_tested()
    predictions = {}
    out["test"]["final"], predictions["final"] = _test_pass(trainer, module, dm)
    if best is not None and best.best_model_path:
        out["best_val_acc"] = float(best.best_model_score)
        out["best_val_epoch"] = int(torch.load(best.best_model_path, map_location="cpu",
                                               weights_only=False)["epoch"])
        out["test"]["best_val"], predictions["best_val"] = _test_pass(
            trainer, module, dm, best.best_model_path)
    predictions["labels"] = dm.test_labels.numpy()
    np.savez_compressed(Path(run_dir) / rundir.PREDICTIONS, **predictions)
    return out


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
