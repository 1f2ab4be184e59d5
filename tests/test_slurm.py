"""The SLURM path, against a real SLURM cluster (slurm/local-cluster.sh start).

Hydra multiruns go through ``hydra/launcher=local_cluster`` (conf/hydra/launcher/, i.e. the
production ``slurm`` launcher with 0 GPUs and tiny resources): one job array per sweep,
requeue by submitit on USR2 (time-out or preemption) with the run resuming from its own
state, accounting through sacct. The first tests use a trivial Hydra app
(tests/slurm_app/app.py); the ``slow`` ones train real tiny models on fixture data.

The ``slurm``-marked tests are skipped, with the reason, when ``sinfo`` is missing or the
cluster is not up; the launcher-config tests at the top run everywhere. Every test
submits into a fresh folder under a job name of its own and cancels that name at the end,
so nothing is left running; every wait is bounded.

    slurm/local-cluster.sh start && python -m pytest -m slurm      # slow ones included
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.filterwarnings("ignore")
slurm = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "slurm_app" / "app.py"
LAUNCHER = "hydra/launcher=local_cluster"
USABLE_NODE_STATES = {"idle", "mixed", "allocated", "completing"}


# ---------------------------------------------------------------------------------------------
# the cluster, and helpers


def _run(cmd, timeout=30, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def cluster_problem() -> str | None:
    """Why the SLURM tests cannot run here, or None when they can."""
    if shutil.which("sinfo") is None:
        return "no SLURM here: sinfo is not on PATH (slurm/local-cluster.sh start sets one up)"
    try:
        # scontrol ping answers at once; sinfo retries a down controller for ~10 s.
        r = _run(["scontrol", "ping"], timeout=20)
        if " is UP" not in r.stdout:
            return ("SLURM is not up: scontrol ping says "
                    f"{(r.stdout.splitlines() or [r.stderr.strip()])[0]!r} "
                    "(slurm/local-cluster.sh start)")
        r = _run(["sinfo", "-h", "-o", "%T"], timeout=20)
    except subprocess.TimeoutExpired:
        return "SLURM is not up: scontrol/sinfo timed out (slurm/local-cluster.sh start)"
    if r.returncode != 0:
        return f"SLURM is not up: sinfo says {r.stderr.strip()!r} (slurm/local-cluster.sh start)"
    states = {s.rstrip("*~#!%$@^-") for s in r.stdout.split()}
    if not states & USABLE_NODE_STATES:
        return f"SLURM has no usable node (node states: {sorted(states)})"
    r = _run(["sacct", "-n", "-X", "-S", "now-1hours", "-o", "JobID"], timeout=20)
    if r.returncode != 0:
        return (f"SLURM accounting is off ({r.stderr.strip()!r}); submitit needs sacct "
                "(slurm/local-cluster.sh starts slurmdbd)")
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)


def _env() -> dict:
    # Submit from a clean environment even when pytest itself runs inside a SLURM job.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    env["WANDB_MODE"] = "disabled"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Jobs:
    """A job name of one test's own; cancels whatever still runs under it on close."""

    def __init__(self):
        self.name = f"pbtest-{uuid.uuid4().hex[:10]}"

    def ids(self, states: str = "PD,R,CG,RQ,S") -> list[str]:
        r = _run(["squeue", "-h", f"--name={self.name}", f"--states={states}", "-o", "%i"])
        return r.stdout.split()

    def close(self):
        _run(["scancel", f"--name={self.name}"])


@pytest.fixture
def jobs(cluster):
    j = Jobs()
    yield j
    j.close()


def app_cmd(sweep_dir, jobs: Jobs, *overrides) -> list[str]:
    return [sys.executable, str(APP), "-m", LAUNCHER, f"hydra.searchpath=[file://{ROOT / 'conf'}]",
            f"hydra.sweep.dir={sweep_dir}", f"hydra.launcher.name={jobs.name}", *overrides]


def train_cmd(data_root, outputs, jobs: Jobs, *overrides) -> list[str]:
    return [sys.executable, "-m", "poolbench.train", "-m", LAUNCHER, f"data.root={data_root}",
            f"paths.outputs={outputs}", f"hydra.launcher.name={jobs.name}", *TINY, *overrides]


def submit(cmd, timeout) -> subprocess.CompletedProcess:
    """Run a Hydra multirun to completion (it waits for its SLURM jobs)."""
    return _run(cmd, timeout=timeout, cwd=ROOT, env=_env())


def check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"multirun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def wait_for(predicate, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sacct_rows(job_id: str, duplicates=False) -> list[dict]:
    """sacct's allocation records (one per array task and attempt) of a job or array."""
    cmd = ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,JobName,State,ExitCode"]
    if duplicates:
        cmd.insert(1, "--duplicates")
    r = _run(cmd)
    assert r.returncode == 0, r.stderr
    keys = ("job_id", "name", "state", "exit_code")
    return [dict(zip(keys, line.split("|"))) for line in r.stdout.splitlines() if line]


def submitit_logs(sweep_dir) -> str:
    return "\n".join(p.read_text(errors="replace")
                     for p in sorted(Path(sweep_dir).glob(".submitit/*/*/*_log.out")))


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------------------------------
# the launcher configs (no cluster needed)


def launcher_cfg(*overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from poolbench.config import CONF_DIR, register_resolvers

    register_resolvers()
    if (CONF_DIR / "local" / "slurm.yaml").exists():
        pytest.skip("this checkout has a site file, conf/local/slurm.yaml, that changes the defaults")
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} and ${now:...} resolve
    try:
        # Resolved once into plain values, as hydra-submitit's launcher reads them (an escaped
        # \${...} stays a literal for the task's shell).
        launcher = SimpleNamespace(**OmegaConf.to_container(cfg.hydra.launcher, resolve=True))
        sweep_dir = cfg.hydra.sweep.dir
    finally:
        HydraConfig.instance().cfg = None  # leave no Hydra state to other tests
    return launcher, sweep_dir


def test_slurm_launcher_defaults(monkeypatch, tmp_path):
    for var in ("POOLBENCH_SLURM_PARTITION", "POOLBENCH_SLURM_ACCOUNT", "POOLBENCH_SLURM_QOS",
                "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    launcher, sweep_dir = launcher_cfg("hydra/launcher=slurm", f"paths.outputs={tmp_path}")
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1 and launcher.nodes == 1
    assert launcher.max_num_timeout > 0
    assert launcher.partition is None and launcher.account is None and launcher.qos is None
    assert launcher.submitit_folder.startswith(f"{tmp_path}/.submitit/")
    # W&B's mode is the task's, read at run time: not baked in at submission.
    assert "export WANDB_MODE=${WANDB_MODE:-offline}" in launcher.setup
    monkeypatch.setenv("WANDB_MODE", "online")
    online_shell, _ = launcher_cfg("hydra/launcher=slurm", f"paths.outputs={tmp_path}")
    assert "export WANDB_MODE=${WANDB_MODE:-offline}" in online_shell.setup
    assert f"export PATH={ROOT}/slurm/bin:$PATH" in launcher.setup
    assert "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK" in launcher.setup
    assert sweep_dir == str(tmp_path)


def test_slurm_launcher_allocates_the_trainers_processes(tmp_path):
    """One task (and GPU) per device on each of trainer.num_nodes nodes; the local cluster
    keeps 0 GPUs but the same tasks."""
    launcher, _ = launcher_cfg("hydra/launcher=slurm", "trainer.devices=4", "trainer.num_nodes=2")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    launcher, _ = launcher_cfg("hydra/launcher=local_cluster", "trainer.devices=2")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (1, 2, 0)


def test_slurm_launcher_site_settings_env_file_and_command_line(monkeypatch, tmp_path):
    monkeypatch.setenv("POOLBENCH_SLURM_PARTITION", "gpu-env")
    monkeypatch.setenv("POOLBENCH_SLURM_ACCOUNT", "proj-env")
    launcher, _ = launcher_cfg("hydra/launcher=slurm")
    assert (launcher.partition, launcher.account, launcher.qos) == ("gpu-env", "proj-env", None)
    # conf/local/slurm.yaml (here: in a directory added to the search path) beats the env.
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "slurm.yaml").write_text(
        "partition: gpu-site\ncpus_per_task: 16\nsetup: [module load cuda]\n")
    site = [f"hydra.searchpath=[file://{tmp_path}]"]
    launcher, _ = launcher_cfg("hydra/launcher=slurm", *site)
    assert (launcher.partition, launcher.account, launcher.cpus_per_task) == \
        ("gpu-site", "proj-env", 16)
    assert list(launcher.setup) == ["module load cuda"]
    # ... and the command line beats both.
    launcher, _ = launcher_cfg("hydra/launcher=slurm", *site, "hydra.launcher.partition=cli",
                               "hydra.launcher.gpus_per_node=0")
    assert (launcher.partition, launcher.gpus_per_node) == ("cli", 0)
    # The local cluster keeps none of the site's resources or environment.
    launcher, _ = launcher_cfg("hydra/launcher=local_cluster", *site)
    assert (launcher.partition, launcher.account, launcher.gpus_per_node) == (None, None, 0)
    assert launcher.cpus_per_task == 1 and launcher.max_num_timeout > 0
    assert "module load cuda" not in launcher.setup


# ---------------------------------------------------------------------------------------------
# a trivial app: job arrays, accounting, requeue


@pytest.fixture(scope="module")
def array_sweep(cluster, tmp_path_factory):
    """x=1,2,3 through the SLURM launcher (shared by the array and sacct tests)."""
    sweep = tmp_path_factory.mktemp("array") / "sweep"
    jobs = Jobs()
    t0 = time.monotonic()
    try:
        proc = submit(app_cmd(sweep, jobs, "x=1,2,3"), timeout=180)
    finally:
        jobs.close()
    return {"dir": sweep, "proc": proc, "seconds": time.monotonic() - t0, "name": jobs.name}


@slurm
def test_multirun_is_one_job_array_and_every_task_writes_its_output(array_sweep):
    check(array_sweep["proc"])
    sweep = array_sweep["dir"]
    results = {x: read_json(sweep / f"x={x}" / "result.json") for x in (1, 2, 3)}
    for x, res in results.items():
        assert res["x"] == x
        assert len(res["attempts"]) == 1
    array_ids = {res["attempts"][0]["array_job_id"] for res in results.values()}
    assert len(array_ids) == 1 and None not in array_ids, array_ids
    assert sorted(res["attempts"][0]["array_task_id"] for res in results.values()) == ["0", "1", "2"]
    scripts = list(sweep.glob(".submitit/*/*/*_submission.sh"))
    assert len(scripts) == 1, scripts  # one sbatch for the whole sweep
    text = scripts[0].read_text()
    assert "#SBATCH --array=0-2%" in text
    assert "#SBATCH --gpus-per-node=0" in text
    assert "export WANDB_MODE=" in text
    assert f"export PATH={ROOT}/slurm/bin:$PATH" in text
    print(f"3-task array: {array_sweep['seconds']:.1f} s from submission to all results")


@slurm
def test_sacct_reports_the_array_tasks(array_sweep):
    check(array_sweep["proc"])
    array_id = read_json(array_sweep["dir"] / "x=1" / "result.json")["attempts"][0]["array_job_id"]

    def completed():
        rows = sacct_rows(array_id)
        return rows if sum(r["state"] == "COMPLETED" for r in rows) == 3 else None

    rows = wait_for(completed, 30, f"sacct to report 3 completed tasks of job {array_id}")
    assert sorted(r["job_id"] for r in rows) == [f"{array_id}_{i}" for i in range(3)]
    assert {r["name"] for r in rows} == {array_sweep["name"]}
    assert {r["exit_code"] for r in rows} == {"0:0"}


def _first_attempt(sweep, x, timeout=90) -> dict:
    state = sweep / f"x={x}" / "state.json"
    return wait_for(lambda: state.exists() and read_json(state)["attempts"][0], timeout,
                    f"the first attempt of x={x} to start")


@slurm
def test_signalled_job_is_requeued_and_resumes_from_its_state(jobs, tmp_path):
    """USR2 to the job's steps -- what SLURM sends before a time limit or on preemption --
    makes submitit requeue the job; the second attempt finds the first one's state file."""
    sweep = tmp_path / "sweep"
    t0 = time.monotonic()
    proc = subprocess.Popen(app_cmd(sweep, jobs, "x=5", "hang_first_attempt=true", "hang_s=150"),
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        first = _first_attempt(sweep, 5)
        job_id = first["job_id"]
        # Not --batch: SLURM's own time-limit signal (--signal=USR2@N) also goes to the job's
        # steps, where submitit's handler runs, and not to the batch shell.
        r = _run(["scancel", "--signal=USR2", job_id])
        assert r.returncode == 0, r.stderr
        t_signal = time.monotonic()
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-5000:]
    res = read_json(sweep / "x=5" / "result.json")
    assert [a["previous_attempts_seen"] for a in res["attempts"]] == [0, 1]
    assert [a["job_id"] for a in res["attempts"]] == [job_id, job_id]  # requeued, same job
    assert res["attempts"][1]["restart_count"] == "1"
    logs = submitit_logs(sweep)
    assert "Caught signal SIGUSR2" in logs and f"Requeued job {job_id}" in logs
    assert "died with" not in logs  # scontrol requeue survived the requeue's SIGTERM
    assert res["attempts"][0]["scontrol"] == str(ROOT / "slurm" / "bin" / "scontrol")

    def finished_states():
        states = [r["state"] for r in sacct_rows(job_id, duplicates=True)]
        return states if "COMPLETED" in states else None

    states = wait_for(finished_states, 30, "sacct to report the requeue and the completion")
    assert states == ["REQUEUED", "COMPLETED"], states
    print(f"requeue: signal to second attempt done {time.monotonic() - t_signal:.1f} s, "
          f"test {time.monotonic() - t0:.1f} s")


@slurm
def test_cancelled_job_is_noticed_through_accounting(jobs, tmp_path):
    """A job killed outside submitit leaves no result: only sacct tells the launcher."""
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(app_cmd(sweep, jobs, "x=9", "hang_first_attempt=true", "hang_s=150"),
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        job_id = _first_attempt(sweep, 9)["job_id"]
        assert _run(["scancel", job_id]).returncode == 0
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert "CANCELLED" in out, out[-3000:]
    assert not (sweep / "x=9" / "result.json").exists()


@slurm
@pytest.mark.slow
def test_time_limit_requeues_and_resumes(jobs, tmp_path):
    """A real 1-minute time limit: SLURM signals USR2 30 s before it, submitit requeues."""
    sweep = tmp_path / "sweep"
    proc = check(submit(app_cmd(sweep, jobs, "x=3", "hang_first_attempt=true", "hang_s=150",
                                "hydra.launcher.timeout_min=1"), timeout=300))
    res = read_json(sweep / "x=3" / "result.json")
    assert [a["previous_attempts_seen"] for a in res["attempts"]] == [0, 1]
    logs = submitit_logs(sweep)
    assert "this job is timed-out" in logs and "remaining timeouts" in logs, logs[-3000:]
    assert proc.returncode == 0


# ---------------------------------------------------------------------------------------------
# real training runs on fixture data

TINY = [
    "model.width=8", "data.batch_size=32", "data.eval_batch_size=256", "data.val_size=100",
    "trainer.max_epochs=1", "logger.wandb.enabled=false", "callbacks.progress=plain",
    "trainer.limit_train_batches=6",
]


@pytest.fixture(scope="module")
def data_root(cluster, tmp_path_factory):
    from poolbench.data.fixtures import write_cifar100

    root = tmp_path_factory.mktemp("data")
    write_cifar100(root)
    return root


def run_dirs(outputs) -> dict[int, Path]:
    found = {}
    for d in Path(outputs).glob("default/cifar100/vgg16/max/seed=*"):
        found[int(d.name.split("=")[1].split("-")[0])] = d
    return found


@pytest.fixture(scope="module")
def trained_sweep(data_root, tmp_path_factory):
    outputs = tmp_path_factory.mktemp("train") / "outputs"
    jobs = Jobs()
    try:
        proc = submit(train_cmd(data_root, outputs, jobs, "seed=0,1"), timeout=480)
    finally:
        jobs.close()
    return {"outputs": outputs, "proc": proc}


@slurm
@pytest.mark.slow
def test_training_sweep_through_slurm_writes_every_results_json(trained_sweep):
    check(trained_sweep["proc"])
    dirs = run_dirs(trained_sweep["outputs"])
    assert sorted(dirs) == [0, 1], dirs
    for seed, d in dirs.items():
        res = read_json(d / "results.json")
        assert res["status"] == "done" and res["seed"] == seed
        assert res["epochs_run"] == 1 and res["test_top1_final"] is not None
        # PyTorch's threads are the task's CPUs (cpus_per_task: 1), not the node's
        assert res["threads"] == 1
    scripts = list(Path(trained_sweep["outputs"]).glob(".submitit/*/*/*_submission.sh"))
    assert len(scripts) == 1 and "#SBATCH --array=0-1%" in scripts[0].read_text()


@slurm
@pytest.mark.slow
def test_resubmitting_a_finished_sweep_reruns_nothing(trained_sweep, data_root, jobs):
    check(trained_sweep["proc"])
    outputs = trained_sweep["outputs"]
    before = {s: (d / "results.json").stat().st_mtime_ns for s, d in run_dirs(outputs).items()}
    old_logs = set(Path(outputs).glob(".submitit/*/*/*_log.out"))
    check(submit(train_cmd(data_root, outputs, jobs, "seed=0,1"), timeout=240))
    new_logs = [p.read_text() for p in Path(outputs).glob(".submitit/*/*/*_log.out")
                if p not in old_logs]
    assert len(new_logs) == 2, new_logs
    for text in new_logs:
        assert "skipping finished run" in text, text[-2000:]
        assert "epoch 1/1" not in text
    after = {s: (d / "results.json").stat().st_mtime_ns for s, d in run_dirs(outputs).items()}
    assert after == before


@slurm
@pytest.mark.slow
def test_training_requeued_by_slurm_resumes_from_last_ckpt(data_root, jobs, tmp_path):
    outputs = tmp_path / "outputs"
    proc = subprocess.Popen(
        train_cmd(data_root, outputs, jobs, "seed=0", "trainer.max_epochs=3"),
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: any(outputs.glob("default/cifar100/vgg16/max/seed=0*/last.ckpt")), 300,
                 "the first epoch's last.ckpt")
        (job_id,) = jobs.ids("R")
        assert _run(["scancel", "--signal=USR2", job_id]).returncode == 0
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-5000:]
    (run_dir,) = run_dirs(outputs).values()
    res = read_json(run_dir / "results.json")
    assert res["status"] == "done" and res["epochs_run"] == 3
    logs = submitit_logs(outputs)
    assert f"Requeued job {job_id}" in logs and "died with" not in logs, logs[-3000:]
    assert "resuming from" in logs and "completed epoch(s)" in logs, logs[-3000:]
    states = [r["state"] for r in sacct_rows(job_id, duplicates=True)]
    assert "REQUEUED" in states, states
