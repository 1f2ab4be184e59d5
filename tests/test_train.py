"""End-to-end runs of poolbench-train on fixture data: train, skip, resume, diverge, W&B."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]

# A tiny but complete run: real parsers, real model code at width 8, 2 epochs.
TINY = [
    "model.width=8", "data.batch_size=32", "data.eval_batch_size=256",
    "trainer.max_epochs=2", "logger.wandb.enabled=false", "callbacks.progress=plain",
    "callbacks.progress_every_n_steps=5", "trainer.limit_train_batches=6",
]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    from poolbench.data.fixtures import write_cifar100, write_tinyimagenet

    root = tmp_path_factory.mktemp("data")
    write_cifar100(root)
    write_tinyimagenet(root)
    return root


def train_cmd(data_root, outputs, *overrides):
    flags = [o for o in overrides if o.startswith("-")]  # Hydra wants flags before overrides
    overrides = [o for o in overrides if not o.startswith("-")]
    return [sys.executable, "-m", "poolbench.train", *flags, f"data.root={data_root}",
            f"paths.outputs={outputs}", *TINY, *overrides]


def run_train(data_root, outputs, *overrides, env=None, check=True):
    proc = subprocess.run(train_cmd(data_root, outputs, *overrides), capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"poolbench-train failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def val_size_for(data):
    return {"cifar100": 100, "tinyimagenet": 100}[data]


def results_of(outputs, data, model, pool, seed=0, experiment="default"):
    run_dirs = list((Path(outputs) / experiment / data / model / pool).glob(f"seed={seed}*"))
    assert len(run_dirs) == 1, run_dirs
    return run_dirs[0], json.loads((run_dirs[0] / "results.json").read_text())


def check_best_val(run_dir, res):
    """best_val_acc and best_val_epoch are the max and (first) argmax of val/acc in metrics.csv."""
    import pandas as pd

    val_acc = pd.read_csv(run_dir / "metrics.csv").groupby("epoch")["val/acc"].last()
    assert res["best_val_epoch"] == int(val_acc.idxmax()), (res["best_val_epoch"], val_acc)
    assert res["best_val_acc"] == pytest.approx(float(val_acc.max()), abs=1e-6), val_acc


@pytest.mark.parametrize("data,model,pool,pool_params", [
    # Every model and every dataset once in the default suite; the other pairs are slow.
    # pool_params: learnable parameters in the width-8 model's pools (README's method
    # table): stochastic_mix one per layer (VGG16: 5 pools), learnable_t one per channel
    # (ResNet18: one stem pool of 8 channels).
    ("cifar100", "vgg16", "stochastic_mix", 5),
    pytest.param("cifar100", "resnet18", "tmaxavg", 0, marks=pytest.mark.slow),
    pytest.param("tinyimagenet", "vgg16", "max", 0, marks=pytest.mark.slow),
    ("tinyimagenet", "resnet18", "learnable_t", 8),
])
def test_short_run_writes_complete_results(data_root, tmp_path, data, model, pool, pool_params):
    proc = run_train(data_root, tmp_path, f"data={data}", f"model={model}", f"pool={pool}",
                     f"data.val_size={val_size_for(data)}")
    run_dir, res = results_of(tmp_path, data, model, pool)
    assert res["status"] == "done"
    assert (res["pool"], res["model"], res["data"], res["seed"]) == (pool, model, data, 0)
    for key in ("final", "best_val"):
        assert 0.0 <= res["test"][key]["top1"] <= res["test"][key]["top5"] <= 1.0
    assert res["epochs_run"] == 2 and res["best_val_epoch"] in (0, 1)
    assert 0.0 <= res["best_val_acc"] <= 1.0
    assert res["wall_time_s"] > 0 and res["mean_epoch_time_s"] > 0 and res["throughput_img_s"] > 0
    assert res["params"]["params_total"] > 0
    assert res["params"]["params_pooling"] == pool_params < res["params"]["params_total"]
    # The running torch's release (the local build tag, e.g. +cu130, may or may not be there).
    assert res["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert res["device"].startswith("cpu") and res["precision"] == "32-true"
    assert res["config"]["pool"]["name"] == pool
    for name in ("last.ckpt", "best.ckpt", "metrics.csv", "config.json", "train.log",
                 "test_predictions.npz"):
        assert (run_dir / name).exists(), name
    import numpy as np
    import pandas as pd

    preds = np.load(run_dir / "test_predictions.npz")
    assert preds["final"].shape == preds["labels"].shape == preds["best_val"].shape
    assert abs((preds["final"] == preds["labels"]).mean() - res["test"]["final"]["top1"]) < 1e-6
    epochs = pd.read_csv(run_dir / "metrics.csv").groupby("epoch").last()
    assert list(epochs.index) == [0, 1]
    check_best_val(run_dir, res)
    assert {"train/loss", "val/acc", "val/acc5", "lr", "time/epoch_s"} <= set(epochs.columns)
    assert "no CUDA device" in (run_dir / "train.log").read_text()
    assert "epoch 2/2 done" in proc.stdout  # plain progress lines, not a terminal
    if pool in ("stochastic_mix", "learnable_t"):
        assert any(c.startswith("pool/") for c in epochs.columns), \
            "learned pooling parameters must be logged per epoch"


def test_first_training_step_is_timed(data_root, tmp_path):
    """A process's first run records its launch (process start to first step) in results.json."""
    t0 = time.time()
    run_train(data_root, tmp_path, "trainer.max_epochs=1", "trainer.limit_train_batches=1",
              "data.val_size=100", "threads=1")
    t1 = time.time()
    _, res = results_of(tmp_path, "cifar100", "vgg16", "max")
    assert t0 < res["first_step_at"] < t1
    assert 0 < res["startup_s"] < res["launch_s"] < t1 - t0
    # The process starts right after t0 (subprocess start-up only).
    assert res["launch_s"] == pytest.approx(res["first_step_at"] - t0, abs=1.0)
    assert res["threads"] == 1  # applied (torch.get_num_threads() at the end of the run)


def test_bad_threads_value_is_named(data_root, tmp_path):
    proc = run_train(data_root, tmp_path, "threads=0", check=False)
    assert proc.returncode != 0
    assert "threads=0 is not valid" in proc.stderr + proc.stdout


def test_skip_finished_run_quickly_and_force(data_root, tmp_path):
    args = ("pool=avg", "data.val_size=0", "trainer.max_epochs=1")
    run_train(data_root, tmp_path, *args)
    run_dir, first = results_of(tmp_path, "cifar100", "vgg16", "avg")
    assert first["test"]["best_val"] is None and first["status"] == "done"
    t0 = time.perf_counter()
    proc = run_train(data_root, tmp_path, *args)
    elapsed = time.perf_counter() - t0
    assert "skipping finished run" in proc.stdout
    assert elapsed < 5.0, f"skipping took {elapsed:.1f}s"
    assert json.loads((run_dir / "results.json").read_text()) == first
    proc = run_train(data_root, tmp_path, *args, "force=true")
    assert "skipping" not in proc.stdout
    assert json.loads((run_dir / "results.json").read_text())["finished_at"] >= first["finished_at"]


@pytest.mark.slow  # the hash itself is covered by tests/test_config.py
def test_override_hash_separates_runs(data_root, tmp_path):
    common = ("pool=tmaxavg", "data.val_size=0", "trainer.max_epochs=1",
              "trainer.limit_train_batches=2")
    run_train(data_root, tmp_path, *common, "pool.topk=2")
    run_train(data_root, tmp_path, *common)
    dirs = sorted((tmp_path / "default" / "cifar100" / "vgg16" / "tmaxavg").iterdir())
    assert len(dirs) == 2 and all(d.name.startswith("seed=0-") for d in dirs)
    topks = sorted(json.loads((d / "results.json").read_text())["config"]["pool"]["topk"]
                   for d in dirs)
    assert topks == [2, 3]


def _final_state(run_dir):
    return torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def test_resume_after_kill_matches_uninterrupted(data_root, tmp_path):
    args = ("pool=stochastic_mix", "trainer.max_epochs=3", "data.val_size=100")
    ref_out, kill_out = tmp_path / "ref", tmp_path / "killed"
    run_train(data_root, ref_out, *args)
    ref_dir, ref = results_of(ref_out, "cifar100", "vgg16", "stochastic_mix")

    proc = subprocess.Popen(train_cmd(data_root, kill_out, *args), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = kill_out / "default" / "cifar100" / "vgg16" / "stochastic_mix" / ref_dir.name
    deadline = time.time() + 300
    while not (run_dir / "last.ckpt").exists():
        assert proc.poll() is None, "run finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # as soon as the first epoch's checkpoint exists
    proc.wait()
    assert not (run_dir / "results.json").exists()
    done = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)["loops"][
        "fit_loop"]["epoch_progress"]["current"]["processed"]
    assert done < 3, "last.ckpt must be written every epoch, not only at the end"

    out = run_train(data_root, kill_out, *args)
    assert f"after {done} completed epoch(s)" in (run_dir / "train.log").read_text()
    _, res = results_of(kill_out, "cifar100", "vgg16", "stochastic_mix")
    assert res["status"] == "done" and res["epochs_run"] == 3
    assert res["test"] == ref["test"], (res["test"], ref["test"])
    assert res["best_val_acc"] == ref["best_val_acc"]
    check_best_val(run_dir, res)
    a, b = _final_state(ref_dir), _final_state(run_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    import pandas as pd

    epochs = pd.read_csv(run_dir / "metrics.csv").groupby("epoch").size()
    assert list(epochs.index) == [0, 1, 2] and (epochs == epochs.iloc[0]).all(), \
        "each epoch logged once across the resume"
    assert out.returncode == 0


def test_diverged_run_is_recorded(data_root, tmp_path):
    run_train(data_root, tmp_path, "pool=max", "optim.lr=1e30", "data.val_size=0",
              "callbacks.divergence_check_every_n_steps=1", "trainer.max_epochs=3")
    _, res = results_of(tmp_path, "cifar100", "vgg16", "max")
    assert res["status"] == "diverged" and "non-finite" in res["error"]
    assert res["epochs_run"] < 3 and res["test"]["final"] is None


def test_wandb_offline_run_contents(data_root, tmp_path):
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}
    run_train(data_root, tmp_path, "pool=channel_adaptive", "logger.wandb.enabled=true",
              "logger.wandb.project=pb-test", "data.val_size=0", "trainer.max_epochs=1",
              env=env)
    run_dir, res = results_of(tmp_path, "cifar100", "vgg16", "channel_adaptive")
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    assert res["wandb_id"] == run_id
    offline = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir())
    wandb_file = offline[0] / f"run-{run_id}.wandb"
    assert wandb_file.exists() and wandb_file.stat().st_size > 0
    # Offline runs keep everything in the .wandb record file: group, project, the resolved
    # config, per-epoch metrics (with learned pooling parameters) and the results summary.
    blob = wandb_file.read_bytes()
    for token in (b"cifar100-vgg16-channel_adaptive", b"pb-test", b"optim", b"weight_decay",
                  b"train/loss", b"lambda_mean", b"test_top1_final"):
        assert token in blob, token


def test_multirun_runs_every_combination(data_root, tmp_path):
    run_train(data_root, tmp_path, "-m", "pool=max,avg", "seed=0,1", "data.val_size=0",
              "trainer.max_epochs=1", "trainer.limit_train_batches=2",
              "trainer.limit_test_batches=1")
    for pool in ("max", "avg"):
        for seed in (0, 1):
            run_dirs = list((tmp_path / "default" / "cifar100" / "vgg16" / pool).glob(
                f"seed={seed}-*"))
            assert len(run_dirs) == 1, sorted(tmp_path.rglob("seed=*"))
            res = json.loads((run_dirs[0] / "results.json").read_text())
            assert (res["status"], res["pool"], res["seed"]) == ("done", pool, seed)


# Pooling layers broken on purpose. The training subprocess registers them next to the
# real methods and then runs poolbench-train, so nothing outside it ever sees them.
BROKEN_POOLS = """
import sys

import torch

from poolbench.pooling import registry
from poolbench.pooling.classic import MaxPool2d


class ConstantPool(MaxPool2d):  # zeros of the right shape: the input cannot matter
    name = "broken_constant"

    def forward(self, x):
        return torch.zeros_like(super().forward(x))


class OtherImagePool(MaxPool2d):  # each image gets the next one's pooled features
    name = "broken_other_image"

    def forward(self, x):
        return super().forward(x).roll(1, 0)


for cls in (ConstantPool, OtherImagePool):
    registry.POOLS[cls.name] = cls
sys.argv[0] = "poolbench-train"
from poolbench.train import main

main()
"""


# docs/smoke.md's budget for Tiny ImageNet runs that learn
TINY_LEARNS = ("smoke_train_batches.tinyimagenet=15", "smoke_epochs.tinyimagenet=8")


def smoke_top1(data_root, outputs, pools, model="resnet18", data="cifar100", extra=()):
    """Final test top-1 of one smoke run (the smoke experiment's settings and ``extra``
    overrides, seed 0) per pool, each given by registry name (a real method or one of
    BROKEN_POOLS)."""
    proc = subprocess.run(
        [sys.executable, "-c", BROKEN_POOLS, "-m", "experiment=smoke", f"data={data}",
         f"model={model}", "seed=0", "pool=max", f"pool.name={','.join(pools)}",
         f"data.root={data_root}", f"paths.outputs={outputs}", *extra],
        capture_output=True, text=True, cwd=ROOT, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"smoke runs failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return {pool: results_of(outputs, data, model, pool, experiment="smoke")[1][
        "test_top1_final"] for pool in pools}


def test_smoke_separates_a_working_pool_from_a_broken_one(data_root, tmp_path):
    """With the smoke's own budget, max pooling learns (>= 5x chance on 100 classes) and a
    pool whose output ignores its input stays at chance (1 %)."""
    top1 = smoke_top1(data_root, tmp_path, ["max", "broken_constant"])
    print(f"smoke, CIFAR-100 fixture, resnet18, seed 0: test top-1 {top1}")
    assert top1["max"] >= 0.05, top1
    assert top1["broken_constant"] <= 0.02, top1


@pytest.mark.slow
def test_tiny_imagenet_smoke_with_its_longer_budget_separates_working_from_broken(
        data_root, tmp_path):
    """With docs/smoke.md's longer Tiny ImageNet budget, max pooling learns (>= 5x chance
    on 200 classes) and the constant pool stays near chance (0.5 %)."""
    top1 = smoke_top1(data_root, tmp_path, ["max", "broken_constant"], data="tinyimagenet",
                      extra=TINY_LEARNS)
    print(f"smoke (longer budget), Tiny ImageNet fixture, resnet18, seed 0: test top-1 {top1}")
    assert top1["max"] >= 0.025, top1
    assert top1["broken_constant"] <= 0.015, top1


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet18", "vgg16"])
def test_smoke_cannot_learn_through_a_pool_that_mixes_up_images(data_root, tmp_path, model):
    # (A pool that only blocks the gradient is not caught: with the smoke's budget the
    # classifier learns on the untrained layers' features about as fast; see the README.)
    top1 = smoke_top1(data_root, tmp_path, ["broken_other_image"], model=model)
    assert top1["broken_other_image"] <= 0.02, top1
