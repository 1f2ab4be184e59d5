"""One run, many processes: DDP on CPU (gloo, 2 processes) leaves what one process leaves,
with the same recipe; two launches of one run; kills at awkward moments.

The end-to-end tests start poolbench-train (each process imports torch and Lightning: tens
of seconds on a loaded 2-core machine), so they are ``slow``; the rules they rest on are
tested fast here and in tests/test_ownership.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from poolbench import rundir
from poolbench.seeding import step_seed
from test_train import ROOT, data_root, results_of, run_train, train_cmd  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore")

HOOKS = str(Path(__file__).with_name("train_hooks.py"))
COMMON = ("pool=stochastic_mix", "data.val_size=100", "threads=1", "trainer.accelerator=cpu")
DDP = ("trainer.devices=2", "trainer.strategy=ddp")
WANDB = ("logger.wandb.enabled=true", "logger.wandb.project=pb-test")
WANDB_ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}
CELL = ("default", "cifar100", "vgg16", "stochastic_mix")
LEFT_BY_A_RUN = {".hydra", "best.ckpt", "config.json", "hparams.yaml", "last.ckpt",
                 "metrics.csv", "results.json", "test_predictions.npz", "train.log"}


def hooked_cmd(data_root, outputs, *overrides):
    """train_cmd, run through tests/train_hooks.py (faults chosen by POOLBENCH_TEST_FAULT)."""
    cmd = train_cmd(data_root, outputs, *overrides)
    return [cmd[0], HOOKS, *cmd[3:]]


def run_dir_of(outputs, seed) -> Path:
    dirs = list(Path(outputs, *CELL).glob(f"seed={seed}*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def output(proc) -> str:
    return (proc.stdout or "") + (proc.stderr or "")


# ---- the rules, fast ----------------------------------------------------------------------

def test_step_seeds_are_per_rank_and_rank_zero_keeps_a_single_process_runs_seeds():
    old = [(s * 1_000_003 + t * 7_919 + k * 104_729 + 17) % (2**63 - 1)
           for s, t, k in ((0, 0, 0), (3, 1234, 1), (7, 99, 0))]
    assert [step_seed(s, t, k) for s, t, k in ((0, 0, 0), (3, 1234, 1), (7, 99, 0))] == old
    seeds = {step_seed(3, t, k, r) for t in range(50) for k in (0, 1) for r in range(8)}
    assert len(seeds) == 50 * 2 * 8, "every (step, stream, rank) draws its own numbers"


def test_the_global_batch_is_split_evenly_or_refused(data_root):
    from poolbench.data import PoolbenchDataModule

    dm = PoolbenchDataModule("cifar100", data_root, batch_size=128, val_size=100)
    dm.trainer = SimpleNamespace(global_rank=0, world_size=8)
    assert dm.batch_size_per_device() == 16
    dm.trainer.world_size = 3
    with pytest.raises(ValueError, match=r"data.batch_size=128 is the global batch, split "
                                         r"evenly over the 3 processes .* not a multiple of 3: "
                                         r"use data.batch_size=126 or 129"):
        dm.setup("fit")
    dm = PoolbenchDataModule("cifar100", data_root, batch_size=128, drop_last=False)
    dm.trainer = SimpleNamespace(global_rank=0, world_size=2)
    with pytest.raises(ValueError, match="data.drop_last=false does not work with 2 processes"):
        dm.batch_size_per_device()


def test_checkpoints_are_written_atomically(tmp_path):
    from poolbench.callbacks import AtomicCheckpointIO

    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1}, path)
    with pytest.raises(Exception):
        io.save_checkpoint({"epoch": 2, "unpicklable": lambda: None}, path)  # dies mid-write
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "no temporary file left"


def test_metrics_csv_is_rewritten_atomically(tmp_path, monkeypatch):
    import csv

    from poolbench.loggers import ResumableCSVLogger, truncate_metrics

    logger = ResumableCSVLogger(tmp_path)
    logger.log_metrics({"epoch": 0, "train/loss": 4.5}, step=5)
    logger.save()
    before = (tmp_path / "metrics.csv").read_text()
    logger.log_metrics({"epoch": 1, "val/acc": 0.5}, step=11)  # a new column: a new header

    def killed(self, rows):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(csv.DictWriter, "writerows", killed)
    with pytest.raises(KeyboardInterrupt):
        logger.save()
    assert (tmp_path / "metrics.csv").read_text() == before
    monkeypatch.undo()
    logger.save()
    rows = pd.read_csv(tmp_path / "metrics.csv")
    assert list(rows["epoch"]) == [0, 1] and rows["val/acc"].iloc[1] == 0.5
    truncate_metrics(tmp_path / "metrics.csv", 0)
    assert list(pd.read_csv(tmp_path / "metrics.csv")["epoch"]) == [0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_identity_leaves_out_the_process_count_but_not_sync_batchnorm():
    keys = rundir.IDENTITY_EXCLUDED_KEYS
    for key in ("trainer.devices", "trainer.num_nodes", "trainer.strategy", "wait_for_owner"):
        assert key in keys, key
    assert "trainer.sync_batchnorm" not in keys and "data.batch_size" not in keys
    one = rundir.run_subdir("e", "d", "m", "p", 0, ["data.batch_size=128"], keys)
    assert rundir.run_subdir("e", "d", "m", "p", 0, ["data.batch_size=128", "trainer.devices=8",
                                                     "trainer.num_nodes=2",
                                                     "++trainer.strategy=ddp"], keys) == one
    assert rundir.run_subdir("e", "d", "m", "p", 0, ["data.batch_size=128",
                                                     "trainer.sync_batchnorm=true"], keys) != one


# ---- one run on 2 processes, end to end ----------------------------------------------------

@pytest.fixture(scope="module")
def ddp_tree(data_root, tmp_path_factory):  # noqa: F811
    """One outputs tree: seed 0 trained by 1 process, seed 1 by 2 (W&B offline, both)."""
    outputs = tmp_path_factory.mktemp("ddp")
    single = run_train(data_root, outputs, *COMMON, *WANDB, "seed=0", env=WANDB_ENV)
    ddp = run_train(data_root, outputs, *COMMON, *WANDB, *DDP, "seed=1", env=WANDB_ENV)
    return SimpleNamespace(outputs=outputs, single=single, ddp=ddp)


def check_run_dir(run_dir: Path, world_size: int, wandb: bool = True) -> dict:
    """What one run leaves, whatever the process count; returns its results.json."""
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "done"
    names = {p.name for p in run_dir.iterdir()}
    # no owner.json, no decision or temporary files; W&B's files when it is on
    assert names == LEFT_BY_A_RUN | ({"wandb", "wandb_id.txt"} if wandb else set()), names
    assert (res["world_size"], res["batch_size_per_device"], res["global_batch_size"],
            res["optimizer_steps"]) == (world_size, 32 // world_size, 32, 12)
    preds = np.load(run_dir / "test_predictions.npz")
    assert preds["final"].shape == preds["best_val"].shape == preds["labels"].shape == (200,)
    assert (preds["final"] == preds["labels"]).mean() == pytest.approx(res["test_top1_final"])
    epochs = pd.read_csv(run_dir / "metrics.csv").groupby("epoch").last()
    assert list(epochs.index) == [0, 1]
    assert epochs[["train/loss", "val/loss", "val/acc", "lr", "time/epoch_s"]].notna().all().all()
    if not wandb:
        return res
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    assert res["wandb_id"] == run_id
    offline = [p.name for p in (run_dir / "wandb").glob("offline-run-*")]
    assert len(offline) == 1 and offline[0].endswith(f"-{run_id}"), offline
    assert b"test_top1_final" in (run_dir / "wandb" / offline[0] / f"run-{run_id}.wandb") \
        .read_bytes(), "results.json's numbers are in the W&B run's summary"
    return res


@pytest.mark.slow
def test_ddp_run_leaves_what_a_single_process_run_leaves(ddp_tree):
    single = check_run_dir(run_dir_of(ddp_tree.outputs, 0), world_size=1)
    ddp = check_run_dir(run_dir_of(ddp_tree.outputs, 1), world_size=2)
    assert single["optimizer_steps"] == ddp["optimizer_steps"]
    text = output(ddp_tree.ddp)
    assert text.count("epoch 2/2 done") == 1 and text.count("[poolbench] done") == 1, \
        "one process speaks for the run"


@pytest.mark.slow
def test_force_under_ddp_retrains_into_one_clean_run(ddp_tree, data_root):  # noqa: F811
    run_dir = run_dir_of(ddp_tree.outputs, 1)
    first = json.loads((run_dir / "results.json").read_text())
    run_train(data_root, ddp_tree.outputs, *COMMON, *WANDB, *DDP, "seed=1", "force=true",
              env=WANDB_ENV)
    again = check_run_dir(run_dir, world_size=2)
    assert again["wandb_id"] != first["wandb_id"] and again["finished_at"] >= first["finished_at"]
    # gloo on CPU is deterministic: the retrained run computes the same numbers
    assert (again["test"], again["best_val_acc"]) == (first["test"], first["best_val_acc"])


@pytest.mark.slow
def test_results_tables_from_single_process_and_ddp_runs(ddp_tree, tmp_path):
    from poolbench.results.cli import main as results_main

    assert results_main([str(ddp_tree.outputs / "default"), "--no-figures",
                         "--out", str(tmp_path)]) == 0
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert sorted(runs["seed"]) == [0, 1] and set(runs["status"]) == {"done"}
    assert (tmp_path / "report.md").exists()


@pytest.mark.slow
def test_killed_ddp_run_resumes_to_the_uninterrupted_result(ddp_tree, data_root,  # noqa: F811
                                                            tmp_path):
    """Every process killed at once (as a scheduler does) in epoch 2; re-run: it resumes
    from epoch 1's last.ckpt and ends where the uninterrupted run ended, bit for bit (that
    one logged to W&B, this one does not: the same computation)."""
    args = (*COMMON, *DDP, "seed=1")
    proc = subprocess.run(hooked_cmd(data_root, tmp_path, *args), cwd=ROOT, text=True,
                          capture_output=True, timeout=600, start_new_session=True,
                          env={**os.environ, "POOLBENCH_TEST_FAULT": "kill_group_at_step=8"})
    assert proc.returncode == -signal.SIGKILL, output(proc)[-3000:]
    run_dir = run_dir_of(tmp_path, 1)
    assert not (run_dir / "results.json").exists() and (run_dir / "owner.json").exists()
    out = run_train(data_root, tmp_path, *args)
    assert "resuming from" in out.stdout + out.stderr and "after 1 completed epoch(s)" in \
        (run_dir / "train.log").read_text()
    res, ref = check_run_dir(run_dir, 2, wandb=False), json.loads(
        (run_dir_of(ddp_tree.outputs, 1) / "results.json").read_text())
    assert (res["test"], res["best_val_acc"], res["optimizer_steps"]) == \
        (ref["test"], ref["best_val_acc"], ref["optimizer_steps"])
    a = torch.load(run_dir / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(run_dir_of(ddp_tree.outputs, 1) / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_stops_every_rank(data_root, tmp_path):  # noqa: F811
    """Bounded: from rank 1's first NaN to the end of the command, well under the
    collective time-outs (30 min) that a rank waiting alone would hit (start-up, slow on a
    loaded machine, is not counted)."""
    mark = tmp_path / "first_nan"
    proc = subprocess.run(hooked_cmd(data_root, tmp_path, *COMMON, *DDP,
                                     "callbacks.divergence_check_every_n_steps=1"),
                          cwd=ROOT, text=True, capture_output=True, timeout=600,
                          env={**os.environ, "POOLBENCH_TEST_FAULT": "nan_on_rank=1@2",
                               "POOLBENCH_TEST_MARK": str(mark)})
    elapsed = time.time() - float(mark.read_text())
    assert proc.returncode == 0, output(proc)[-3000:]
    res = json.loads((run_dir_of(tmp_path, 0) / "results.json").read_text())
    assert res["status"] == "diverged" and "on one of 2 processes at or before step 2" in \
        res["error"], res["error"]
    assert output(proc).count("run diverged: non-finite training loss") == 2, "both ranks stop"
    assert elapsed < 120, f"{elapsed:.0f} s from the NaN to the end"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_slurm_nodes_one_task_each(data_root, tmp_path):  # noqa: F811
    """srun on 2 nodes, simulated as Lightning's tests do: each process gets SLURM's
    environment for its task; rank 1 starts first and waits for rank 0's decision. The
    torchvision loader path shards as the fast one does. A re-launch skips on both."""
    args = (*COMMON, "trainer.devices=1", "trainer.num_nodes=2", "data.loader=torchvision",
            "data.num_workers=0")
    port, job = free_port(), str(4000 + os.getpid() % 1000)

    def task(rank, step):
        env = {**os.environ, "SLURM_JOB_ID": job, "SLURM_STEP_ID": step, "SLURM_NTASKS": "2",
               "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2", "SLURM_NODEID": str(rank),
               "SLURM_PROCID": str(rank), "SLURM_LOCALID": "0", "SLURM_JOB_NAME": "pb",
               "SLURM_NODELIST": "127.0.0.1", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port)}
        return subprocess.Popen(train_cmd(data_root, tmp_path, *args), cwd=ROOT, env=env,
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def launch(step):
        ranks = [task(1, step)]
        time.sleep(3)
        ranks.insert(0, task(0, step))
        outs = [p.communicate(timeout=600)[0] for p in ranks]
        assert [p.returncode for p in ranks] == [0, 0], "\n".join(o[-2000:] for o in outs)
        return outs

    outs = launch("0")
    run_dir = run_dir_of(tmp_path, 0)
    res = json.loads((run_dir / "results.json").read_text())
    assert (res["status"], res["world_size"], res["batch_size_per_device"],
            res["optimizer_steps"]) == ("done", 2, 16, 12)
    assert np.load(run_dir / "test_predictions.npz")["final"].shape == (200,)
    assert {p.name for p in run_dir.iterdir()} == LEFT_BY_A_RUN, "rank 1 left nothing behind"
    assert "[poolbench] done" in outs[0] and "[poolbench] done" not in outs[1]
    t0 = time.monotonic()
    outs = launch("1")  # srun's next step
    assert all(f"{rundir.SKIP_NOTICE} (done)" in o for o in outs), outs
    assert time.monotonic() - t0 < 120


@pytest.mark.slow
def test_two_launches_of_one_run_one_trains_and_a_dead_owner_is_resumed(data_root, tmp_path):  # noqa: F811,E501
    """A trains; B, launched meanwhile, skips naming A; C waits for A; A is killed -9;
    C takes the run over and resumes it."""
    args = (*COMMON, "trainer.max_epochs=3")
    a = subprocess.Popen(train_cmd(data_root, tmp_path, *args), cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not list(tmp_path.rglob("owner.json")):
        assert a.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    run_dir = run_dir_of(tmp_path, 0)
    assert rundir.run_status(run_dir) == rundir.RUNNING
    b = run_train(data_root, tmp_path, *args)
    assert f"{rundir.OWNED_NOTICE}: {run_dir} is owned by pid {a.pid} on host" in b.stdout
    assert "epoch 1/3" not in b.stdout, "the second launch does not train"
    c = subprocess.Popen(train_cmd(data_root, tmp_path, *args, "wait_for_owner=true"),
                         cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while not (run_dir / "last.ckpt").exists():
        assert a.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    a.send_signal(signal.SIGKILL)
    a.wait()
    out = c.communicate(timeout=600)[0]
    assert c.returncode == 0, out[-3000:]
    assert "[poolbench] waiting for the owner" in out and "resuming from" in out
    assert rundir.read_results(run_dir)["status"] == "done"
    assert not (run_dir / "owner.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("epoch", [0, 1])
def test_a_kill_between_checkpoint_and_metrics_loses_no_row(data_root, tmp_path, epoch):  # noqa: F811,E501
    """Killed right after the checkpoint callbacks of epoch ``epoch``, before Lightning logs
    its training metrics (its validation row is in metrics.csv): the re-run resumes from
    the epoch before (epoch 1: the last.ckpt of epoch 0; epoch 0: none, it starts afresh)
    and metrics.csv holds every epoch's training and validation row once."""
    args = (*COMMON, "trainer.max_epochs=3")
    proc = subprocess.run(hooked_cmd(data_root, tmp_path, *args), cwd=ROOT, text=True,
                          capture_output=True, timeout=600,
                          env={**os.environ, "POOLBENCH_TEST_FAULT":
                               f"kill_after_checkpoints={epoch}"})
    assert proc.returncode == -signal.SIGKILL, output(proc)[-3000:]
    run_dir = run_dir_of(tmp_path, 0)
    assert (run_dir / "last.ckpt").exists() == (epoch > 0)
    out = output(run_train(data_root, tmp_path, *args))
    assert ("after 1 completed epoch(s)" in out) == (epoch == 1), out[-3000:]
    epochs = pd.read_csv(run_dir / "metrics.csv").groupby("epoch")
    assert list(epochs.size()) == [2, 2, 2], "one training and one validation row per epoch"
    assert epochs["train/loss"].count().tolist() == [1, 1, 1]
