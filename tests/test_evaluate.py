"""poolbench.evaluate: the best-validation checkpoint is tested unless it holds the final
weights (then the final pass's results stand for both), decided by every process at once."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from poolbench import evaluate as ev


class Strategy:
    """A strategy whose collective decision is ``answer`` (None: this process's own)."""

    def __init__(self, answer=None):
        self.answer, self.asked = answer, []

    def reduce_boolean_decision(self, decision, all=True):
        self.asked.append((decision, all))
        return decision if self.answer is None else self.answer


@pytest.fixture
def setup(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ckpt = tmp_path / "best.ckpt"
    torch.save({"epoch": 1, "state_dict": model.state_dict()}, ckpt)
    best = SimpleNamespace(best_model_path=str(ckpt), best_model_score=torch.tensor(0.25))
    passes = []

    def fake_pass(trainer, module, dm, ckpt_path=None):
        passes.append(ckpt_path)
        top1 = 0.5 if ckpt_path is None else 0.75
        return {"top1": top1, "top5": 1.0}, np.array([0, 1]) + len(passes)

    monkeypatch.setattr(ev, "_test_pass", fake_pass)
    dm = SimpleNamespace(test_labels=torch.tensor([0, 1]))
    return model, best, dm, passes, tmp_path


def trainer(answer=None):
    return SimpleNamespace(strategy=Strategy(answer), is_global_zero=True)


def test_checkpoint_of_the_final_weights_is_not_tested_again(setup):
    model, best, dm, passes, run_dir = setup
    t = trainer()
    out = ev.evaluate(t, model, dm, best, run_dir)
    assert passes == [None]  # the final weights only
    assert out["test"]["best_val"] == out["test"]["final"] == {"top1": 0.5, "top5": 1.0}
    assert out["best_val_epoch"] == 1 and out["best_val_acc"] == 0.25
    assert t.strategy.asked == [(True, True)]
    saved = np.load(run_dir / "test_predictions.npz")
    assert (saved["best_val"] == saved["final"]).all() and (saved["labels"] == [0, 1]).all()


@pytest.mark.parametrize("change", ["weight", "buffer"])
def test_checkpoint_of_other_weights_is_tested(setup, change):
    model, best, dm, passes, run_dir = setup
    with torch.no_grad():
        if change == "weight":
            model[0].weight[0, 0, 0, 0] += 1e-6
        else:  # BatchNorm statistics are part of what the checkpoint holds
            model[1].running_mean[0] += 1e-6
    out = ev.evaluate(trainer(), model, dm, best, run_dir)
    assert passes == [None, best.best_model_path]
    assert out["test"]["final"]["top1"] == 0.5 and out["test"]["best_val"]["top1"] == 0.75
    saved = np.load(run_dir / "test_predictions.npz")
    assert (saved["best_val"] != saved["final"]).all()


def test_every_process_takes_the_same_branch(setup):
    """Under DDP another process may hold other BatchNorm statistics: when the collective
    answer is no, this process tests the checkpoint too, although its own weights match."""
    model, best, dm, passes, run_dir = setup
    t = trainer(answer=False)
    ev.evaluate(t, model, dm, best, run_dir)
    assert t.strategy.asked == [(True, True)] and passes == [None, best.best_model_path]


def test_same_weights_compares_keys_shapes_dtypes_and_values():
    a = {"w": torch.zeros(2, 3), "n": torch.tensor(3)}
    assert ev.same_weights(a, {k: v.clone() for k, v in a.items()})
    assert not ev.same_weights(a, {"w": torch.zeros(2, 3)})
    assert not ev.same_weights(a, {"w": torch.zeros(3, 2), "n": torch.tensor(3)})
    assert not ev.same_weights(a, {"w": torch.zeros(2, 3, dtype=torch.float64),
                                   "n": torch.tensor(3)})
    assert not ev.same_weights(a, {"w": torch.zeros(2, 3), "n": torch.tensor(4)})
