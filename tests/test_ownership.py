"""One owner per run directory (poolbench.lease), rank 0's decision handed to the other ranks
(poolbench.launch), and rundir.claim, which puts them together. Fast: no training here
(tests/test_ddp.py trains)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from poolbench import launch, lease, rundir
from poolbench.lease import Lease, Owner, OwnedError, owner_state

RANK_VARS = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_NTASKS",
             "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT", launch.ENV_LAUNCH_ID,
             launch.ENV_DECISION)
HOLD = ("import sys, time; from poolbench.lease import Lease; "
        "lease = Lease.acquire(sys.argv[1]); print('holding', flush=True); time.sleep(600)")
TRY = ("import sys; from poolbench.lease import Lease, OwnedError\n"  # holds until stdin ends
       "try:\n    lease = Lease.acquire(sys.argv[1]); print('acquired', flush=True)\n"
       "except OwnedError as e:\n    print('owned', e.owner['pid'], flush=True)\n"
       "sys.stdin.read()")


@pytest.fixture(autouse=True)
def rank_zero_alone(monkeypatch):
    """This process as a lone process (no launcher's rank variables, no decision); what a
    test sets (hand_off sets the decision) is undone after it."""
    for var in RANK_VARS:
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)


def start_holder(run_dir: Path) -> subprocess.Popen:
    """Another process that takes run_dir's lease and keeps it (until killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def record(**changes) -> dict:
    return {**asdict(Owner.this_process()), **changes}


# ---- the lease ---------------------------------------------------------------------------

def test_a_lease_has_one_holder_and_a_killed_holders_lease_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    holder = start_holder(run_dir)
    try:
        with pytest.raises(OwnedError, match=rf"pid {holder.pid} on host .*runs on this host"):
            Lease.acquire(run_dir)
        assert rundir.run_status(run_dir) == rundir.RUNNING
        assert lease.owned_by_another(run_dir)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads((run_dir / lease.LEASE).read_text())["pid"] == holder.pid  # left behind
    assert rundir.run_status(run_dir) == rundir.INCOMPLETE  # a dead owner does not run
    mine = Lease.acquire(run_dir)  # and does not block: taken over
    assert mine.still_mine() and json.loads(mine.path.read_text())["pid"] == os.getpid()
    mine.release()
    assert not mine.path.exists()
    assert sorted(p.name for p in run_dir.iterdir()) == [], "no temporary files left"


@pytest.mark.parametrize("stale", [False, True])
def test_of_launches_racing_for_a_lease_exactly_one_gets_it(tmp_path, stale):
    """Free, or held by a dead owner: 4 processes at once, one gets it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if stale:
        (run_dir / lease.LEASE).write_text(json.dumps(record(pid=2**22 + 7, token="dead")))
    procs = [subprocess.Popen([sys.executable, "-c", TRY, str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.stdout.readline().split() for p in procs]
    for p in procs:
        p.communicate(timeout=60)
    winners = [p.pid for p, out in zip(procs, outs) if out == ["acquired"]]
    assert len(winners) == 1, outs
    assert all(out == ["owned", str(winners[0])] for out in outs if out != ["acquired"]), outs


def test_the_stale_owner_rule(monkeypatch):
    me = Owner.this_process()
    here = asdict(me)
    other_host = {**here, "host": "elsewhere", "boot_id": "x"}
    beat = lease.HEARTBEAT_S
    # 1. this host: the pid decides, whatever the heartbeat
    assert owner_state(here, 10 * lease.STALE_AFTER_S, me)[0]
    assert owner_state({**here, "pid": 2**22 + 7}, 0.0, me) == (False, f"pid {2**22 + 7} is gone")
    assert owner_state({**here, "pid_start": "1"}, 0.0, me)[1].endswith("runs another program")
    # 3.-6. another host: heartbeat, then squeue, then the stale age
    assert owner_state(other_host, beat, me)[0]
    assert not owner_state(other_host, lease.STALE_AFTER_S + 1, me)[0]
    monkeypatch.setattr(lease, "_squeue_state", lambda job: None)  # no squeue: still alive
    middle = (2 * beat + lease.STALE_AFTER_S) / 2
    assert owner_state({**other_host, "slurm_job": "42"}, middle, me)[0]
    monkeypatch.setattr(lease, "_squeue_state", lambda job: "")  # the job is gone
    assert owner_state({**other_host, "slurm_job": "42"}, middle, me) == \
        (False, "SLURM job 42 is gone")
    monkeypatch.setattr(lease, "_squeue_state", lambda job: "RUNNING")
    assert owner_state({**other_host, "slurm_job": "42"}, middle, me)[0]
    # 2. this SLURM job before it was requeued: stale even with a fresh heartbeat
    requeued = Owner(**{**here, "slurm_job": "42", "slurm_restart": 1})
    assert owner_state({**other_host, "slurm_job": "42", "slurm_restart": 0}, 0.0, requeued) \
        == (False, "SLURM job 42 was requeued since")
    assert owner_state({**other_host, "slurm_job": "42", "slurm_restart": 1}, 0.0, requeued)[0]


def test_the_heartbeat_renews_the_lease_and_notices_a_takeover(tmp_path, monkeypatch):
    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.05)
    mine = Lease.acquire(tmp_path)
    os.utime(mine.path, (0, 0))
    time.sleep(0.5)
    assert time.time() - mine.path.stat().st_mtime < 5, "heartbeat renews the mtime"
    other = record(token="another", pid=1)
    mine.path.write_text(json.dumps(other))  # another launch took it over
    time.sleep(0.5)
    assert mine.lost and "now held by pid 1" in mine.lost
    claim = rundir.Claim(tmp_path, launch.TRAIN, lease=mine)
    with pytest.raises(RuntimeError, match="no longer owned by this launch"):
        claim.check_owner()
    claim.release()
    assert json.loads(mine.path.read_text()) == other, "never deletes another's lease"


# ---- which process decides, and how the others learn it -------------------------------

@pytest.mark.parametrize("env,zero", [
    ({}, True), ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, True),
    ({"LOCAL_RANK": "0", "NODE_RANK": "0", "WORLD_SIZE": "2"}, True),  # Lightning's rank 0
    ({"LOCAL_RANK": "1"}, False), ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, False), ({"RANK": "3"}, False),
])
def test_only_global_rank_zero_decides(monkeypatch, env, zero):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert launch.is_rank_zero() == zero
    if not zero:
        with pytest.raises(RuntimeError, match="only global rank 0 writes"):
            rundir.write_results("/nonexistent", {})


def test_slurm_launch_ids_differ_per_step_and_requeue(monkeypatch):
    assert launch.launch_id() is None
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert launch.launch_id() is None  # one task: nobody to tell
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    assert launch.launch_id() == "slurm-77.0.0"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert launch.launch_id() == "slurm-77.0.1"
    monkeypatch.setenv(launch.ENV_LAUNCH_ID, "mine")
    assert launch.launch_id() == "mine"


def follower(monkeypatch, procid="1"):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", procid)


def test_a_rank_started_on_its_own_waits_for_rank_zeros_decision(tmp_path, monkeypatch):
    follower(monkeypatch, procid="0")
    d = launch.decision(tmp_path, launch.TRAIN, ckpt_path="x.ckpt", epochs_done=2)

    def rank_zero_decides_late():
        time.sleep(0.5)
        launch.hand_off(d)

    monkeypatch.setenv("SLURM_PROCID", "1")
    threading.Thread(target=rank_zero_decides_late).start()
    got = launch.receive(tmp_path, timeout_s=30, poll_s=0.05)
    assert (got["action"], got["ckpt_path"], got["epochs_done"]) == ("train", "x.ckpt", 2)
    assert (tmp_path / ".launch-slurm-77.0.0.json").exists()
    monkeypatch.setenv("SLURM_STEP_ID", "1")  # another launch: no decision for it
    with pytest.raises(TimeoutError, match=r"SLURM_PROCID=1\) waited 0 s for global rank "
                                           r"0's decision .*launch-slurm-77.1.0.json"):
        launch.receive(tmp_path, timeout_s=0.3, poll_s=0.05)
    monkeypatch.delenv("SLURM_NTASKS")
    monkeypatch.delenv(launch.ENV_DECISION)
    monkeypatch.setenv("LOCAL_RANK", "1")  # not Lightning's child (no inherited decision)
    with pytest.raises(RuntimeError, match="LOCAL_RANK=1\\) is not global rank 0, but it "
                                           "neither inherited.*POOLBENCH_LAUNCH_ID"):
        launch.receive(tmp_path)


def test_a_waiting_rank_zero_keeps_the_others_waiting(tmp_path, monkeypatch):
    follower(monkeypatch, procid="0")

    def rank_zero_waits_then_skips():
        for _ in range(6):  # each rewrite shows that rank 0 is alive
            launch.hand_off(launch.decision(tmp_path, launch.WAIT))
            time.sleep(0.1)
        launch.hand_off(launch.decision(tmp_path, launch.SKIP, "skipping: busy"))

    threading.Thread(target=rank_zero_waits_then_skips).start()
    time.sleep(0.05)
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert launch.receive(tmp_path, timeout_s=0.3, poll_s=0.02)["message"] == "skipping: busy"


# ---- rundir.claim: rank 0 decides, the others follow ------------------------------------

def test_claim_skips_a_finished_run_and_one_with_a_live_owner(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / rundir.RESULTS).write_text(json.dumps({"status": "done"}))
    c = rundir.claim(run_dir)
    assert c.skipped and c.message.startswith(f"{rundir.SKIP_NOTICE} (done): {run_dir}")
    (run_dir / rundir.RESULTS).unlink()
    holder = start_holder(run_dir)
    try:
        c = rundir.claim(run_dir, force=True)  # force does not override a live owner
        assert c.skipped and c.lease is None
        assert c.message.startswith(f"{rundir.OWNED_NOTICE}: {run_dir} is owned by pid "
                                    f"{holder.pid} on host ")
        assert c.message.endswith("(wait_for_owner=true waits for it)")
        rundir.record_failure(run_dir, {}, "a failure of the skipping launch")
        assert not (run_dir / rundir.RESULTS).exists(), "the owner's run is not marked failed"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_claim_waits_for_the_owner_and_resumes_after_its_death(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir, "WAIT_POLL_S", 0.1)
    run_dir = tmp_path / "run"
    holder = start_holder(run_dir)
    threading.Timer(0.5, lambda: holder.send_signal(signal.SIGKILL)).start()
    c = rundir.claim(run_dir, wait_for_owner=True)
    holder.wait()
    try:
        assert not c.skipped and c.leader and c.lease.still_mine()
        assert (c.ckpt_path, c.epochs_done) == (None, 0)
    finally:
        c.release()


def test_claim_force_clears_and_the_other_ranks_follow_without_touching_files(tmp_path,
                                                                            monkeypatch):
    import torch

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in (rundir.RESULTS, rundir.WANDB_ID, rundir.LAST_CKPT_PENDING, ".x.json.1.tmp"):
        (run_dir / name).write_text(json.dumps({"status": "done"}))
    c = rundir.claim(run_dir, force=True)
    try:
        assert not c.skipped and c.ckpt_path is None
        assert sorted(p.name for p in run_dir.iterdir()) == [rundir.OWNER]
        ckpt = {"loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 3}}}}}
        torch.save(ckpt, run_dir / rundir.LAST_CKPT)
        (run_dir / rundir.RESULTS).write_text(json.dumps({"status": "done"}))
        monkeypatch.setenv("LOCAL_RANK", "1")  # Lightning's child: inherits the decision
        child = rundir.claim(run_dir, force=True)
        assert (child.action, child.leader, child.lease) == (launch.TRAIN, False, None)
        assert (run_dir / rundir.RESULTS).exists() and (run_dir / rundir.LAST_CKPT).exists()
    finally:
        c.release()
    monkeypatch.delenv("LOCAL_RANK")
    (run_dir / rundir.RESULTS).unlink()
    c = rundir.claim(run_dir)
    try:
        assert (c.ckpt_path, c.epochs_done) == (str(run_dir / rundir.LAST_CKPT), 3)
    finally:
        c.release()
    assert not (run_dir / rundir.OWNER).exists()
