"""W&B online never blocks or fails a run (poolbench.wandb_connect): an unreachable server
means offline logging within a bounded time; a missing API key is an error before training.

The "server" is the loopback: a closed port (nothing listens) or a tiny HTTP server that
answers 503 to everything. Credentials come only from the test's environment (a throwaway
HOME, a fake key), never from the developer's own W&B login.
"""

from __future__ import annotations

import http.server
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from test_train import data_root, results_of, run_train  # noqa: F401  (data_root: a fixture)

from poolbench import wandb_connect

pytestmark = pytest.mark.filterwarnings("ignore")

FAKE_KEY = "0123456789abcdef" * 2 + "01234567"  # 40 characters, the shape W&B checks
FALLBACK_LINE = re.compile(r"after ([0-9.]+) s this run logs to W&B OFFLINE")


def closed_port() -> int:
    """A loopback port nothing listens on (bound once by us, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def w_env(tmp_path, base_url, key=FAKE_KEY) -> dict:
    """Environment of a run logging online to ``base_url`` with only ``key`` as credentials."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"WANDB_MODE": "online", "WANDB_BASE_URL": base_url, "HOME": str(home),
            "WANDB_CONFIG_DIR": str(home / "wandb-config"), "NETRC": str(home / "netrc"),
            "WANDB_DISABLE_GIT": "true", "WANDB_API_KEY": key or ""}


@pytest.fixture
def http_503():
    """A loopback HTTP server answering 503 to every request: there, but never working."""
    class Down(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(503)
            self.end_headers()

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Down)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_unreachable_names_the_network_error_and_any_http_answer_counts_as_reachable(http_503):
    reason = wandb_connect.unreachable(f"http://127.0.0.1:{closed_port()}", timeout=5)
    assert reason is not None and "refused" in reason.lower()
    assert wandb_connect.unreachable(http_503, timeout=5) is None


@pytest.mark.parametrize("mode,timeout,bad", [
    ("onlne", 20, "'onlne'"), ("online", 0, "init_timeout=0"), ("online", "20", "'20'"),
    ("online", True, "True"),
])
def test_bad_settings_name_the_value_and_the_choices(mode, timeout, bad):
    with pytest.raises(ValueError, match="online, offline, disabled|seconds > 0") as e:
        wandb_connect.check_settings(mode, timeout)
    assert bad in str(e.value)


def fallback_seconds(run_dir: Path) -> float:
    """The fallback time the run's train.log reports (the line is the evidence it fell back)."""
    match = FALLBACK_LINE.search((run_dir / "train.log").read_text())
    assert match, (run_dir / "train.log").read_text()[-2000:]
    return float(match.group(1))


def assert_offline_wandb_run(run_dir: Path, res: dict) -> None:
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    assert res["status"] == "done" and res["wandb_id"] == run_id
    offline = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir())
    record = offline[0] / f"run-{run_id}.wandb"
    assert record.stat().st_size > 0
    assert b"test_top1_final" in record.read_bytes()  # the summary reached the offline run


def test_online_with_unreachable_server_trains_and_logs_offline(data_root, tmp_path):
    env = w_env(tmp_path, f"http://127.0.0.1:{closed_port()}")
    run_train(data_root, tmp_path / "out", "logger.wandb.enabled=true", "data.val_size=0",
              "trainer.max_epochs=1", "trainer.limit_train_batches=2", env=env)
    run_dir, res = results_of(tmp_path / "out", "cifar100", "vgg16", "max")
    assert_offline_wandb_run(run_dir, res)
    assert fallback_seconds(run_dir) < 10  # a closed port refuses at once


def test_online_without_api_key_fails_before_training(data_root, tmp_path):
    env = w_env(tmp_path, f"http://127.0.0.1:{closed_port()}", key=None)
    proc = run_train(data_root, tmp_path / "out", "logger.wandb.enabled=true",
                     "data.val_size=0", "trainer.max_epochs=1", env=env, check=False)
    assert proc.returncode != 0
    assert "no W&B API key is configured" in proc.stderr + proc.stdout
    run_dir, res = results_of(tmp_path / "out", "cifar100", "vgg16", "max")
    assert res["status"] == "failed" and "wandb login" in res["error"]
    assert not (run_dir / "last.ckpt").exists()  # nothing trained


@pytest.mark.slow
def test_fallback_costs_under_a_minute_against_wandb_disabled(data_root, tmp_path):
    """The issue's bound: an unreachable server adds < 60 s to a run (here a closed port)."""
    args = ("data.val_size=0", "trainer.max_epochs=1", "trainer.limit_train_batches=2")
    seconds = {}
    for name, extra, env in (
            ("disabled", "logger.wandb.enabled=false", {}),
            ("fallback", "logger.wandb.enabled=true",
             w_env(tmp_path, f"http://127.0.0.1:{closed_port()}"))):
        t0 = time.monotonic()
        run_train(data_root, tmp_path / name, extra, *args, env=env)
        seconds[name] = time.monotonic() - t0
    run_dir, res = results_of(tmp_path / "fallback", "cifar100", "vgg16", "max")
    assert_offline_wandb_run(run_dir, res)
    print(f"W&B disabled {seconds['disabled']:.1f} s, online fallback {seconds['fallback']:.1f} s")
    assert seconds["fallback"] - seconds["disabled"] < 60, seconds


@pytest.mark.slow
def test_server_that_answers_but_fails_falls_back_within_init_timeout(tmp_path, http_503):
    """A server that answers HTTP passes the probe; wandb.init then fails (503s) and the run
    goes offline after W&B's init_timeout (+ its grace), with the same run id."""
    script = textwrap.dedent(f"""
        import time
        from lightning.pytorch.loggers import WandbLogger
        from poolbench.wandb_connect import connect
        t0 = time.monotonic()
        logger = connect(lambda mode, settings: WandbLogger(
            project="pb-test", mode=mode, save_dir={str(tmp_path)!r}, id="pbtest503",
            resume="allow", settings=settings), "online", 3.0)
        print("MODE", logger.experiment.settings.mode, "SECONDS", time.monotonic() - t0)
        logger.experiment.log({{"x": 1}})
        logger.experiment.finish()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, **w_env(tmp_path, http_503)},
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    match = re.search(r"MODE (\w+) SECONDS ([0-9.]+)", out)
    assert match and match.group(1) == "offline", out[-4000:]
    print(f"503 server, init_timeout=3: offline run started after {float(match.group(2)):.1f} s")
    assert float(match.group(2)) < 60
    assert FALLBACK_LINE.search(out) and "CommError" in out
    assert list((tmp_path / "wandb").glob("offline-run-*-pbtest503"))


# ---------------------------------------------------------------------------------------------
# uploading later: every offline segment of a resumed run, oldest first, as one W&B run


def fake_segments(run_dir: Path, run_id: str, stamps) -> list[Path]:
    (run_dir / "wandb").mkdir(parents=True)
    (run_dir / "wandb_id.txt").write_text(run_id + "\n")
    folders = []
    for stamp in stamps:
        folder = run_dir / "wandb" / f"offline-run-{stamp}-{run_id}"
        folder.mkdir()
        (folder / f"run-{run_id}.wandb").write_bytes(b"x")
        folders.append(folder)
    return folders


def test_sync_names_every_offline_segment_oldest_first_with_the_run_id(tmp_path):
    from poolbench.wandb_sync import main, sync_commands

    later, earlier = fake_segments(tmp_path / "out" / "a" / "seed=0-x", "abc123",
                                   ["20261202_101500", "20261201_230000"])
    (later.parent / "run-20261201_225959-abc123").mkdir()  # a failed online attempt: skipped
    (later.parent / "offline-run-20261201_120000-other").mkdir()  # another id: skipped
    fake_segments(tmp_path / "out" / "b" / "seed=1-y", "def456", ["20261201_230000"])
    (tmp_path / "out" / "c").mkdir()  # a run without W&B
    commands = sync_commands([tmp_path / "out"])
    assert commands == [
        ["wandb", "sync", "--id", "abc123", str(earlier), str(later)],
        ["wandb", "sync", "--id", "def456",
         str(tmp_path / "out/b/seed=1-y/wandb/offline-run-20261201_230000-def456")]]
    assert main(["--print", str(tmp_path / "out" / "c")]) == 1  # nothing to sync: says so


def test_wandb_sync_documents_the_option_the_sync_relies_on():
    """The installed wandb still has ``--id`` and syncs several files of one run in order."""
    proc = subprocess.run([sys.executable, "-m", "wandb", "sync", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "--id TEXT" in text and "synced in order of start time" in text


@pytest.mark.slow
def test_resumed_offline_run_leaves_segments_that_one_dry_run_sync_takes(tmp_path):
    """Two W&B starts with one id (a run and its resumption) leave two offline folders;
    the sync command names both, and wandb (dry run, no network) would upload both."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "wandb_id.txt").write_text("pbresume1\n")
    script = textwrap.dedent(f"""
        import time, wandb
        for step in (0, 1):
            run = wandb.init(project="pb-test", mode="offline", id="pbresume1",
                             resume="allow", dir={str(run_dir)!r})
            run.log({{"epoch": step}}, step=step)
            run.finish()
            time.sleep(1.1)  # folder names carry the start time to the second
    """)
    env = {**os.environ, "WANDB_SILENT": "true", "HOME": str(tmp_path), "WANDB_API_KEY": ""}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    segments = sorted((run_dir / "wandb").glob("offline-run-*-pbresume1"))
    assert len(segments) == 2, list((run_dir / "wandb").iterdir())
    proc = subprocess.run([sys.executable, "-m", "poolbench.wandb_sync", "--dry-run", str(run_dir)],
                          capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"--id pbresume1 {segments[0]} {segments[1]}" in out
    assert "Would sync 2 run" in out and all(str(s) in out for s in segments)


def test_a_server_that_never_answers_is_given_up_on_after_the_timeout():
    """A port that accepts connections but never answers (a black hole): the check returns
    after its timeout, not after the operating system's TCP or DNS time-outs."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        t0 = time.monotonic()
        reason = wandb_connect.unreachable(f"http://127.0.0.1:{silent.getsockname()[1]}", 1.0)
        assert reason is not None and time.monotonic() - t0 < 3
