"""Ownership of a run directory: one launch at a time trains a run.

The owner (global rank 0 of the launch that trains the run) holds a lease,
``<run_dir>/owner.json``, naming its host (and boot id), pid (and the pid's start time),
SLURM job, step and restart count, launch id and start time. A heartbeat thread touches
the file every :data:`HEARTBEAT_S` seconds (its mtime is the heartbeat) and checks that
the lease still names this owner. The owner deletes it when the run ends; a kill leaves it
behind, and the rule below then calls it stale.

Taking the lease is atomic on every file system, NFS and Lustre included: the record is
written to a temporary file, which is then hard-linked to the lease's name; ``link``
fails when the name exists, so of two launches exactly one gets it, and a reader never
sees half a record. (``fcntl``/``flock`` locks are not used: on NFS they depend on the
lock daemon, on Lustre on a mount option, and a lock that is silently not taken is worse
than none.) A stale lease is moved aside by ``rename`` (one contender wins), checked to
be the one judged stale, and deleted before the new owner links its own.

**The stale-owner rule** (:func:`owner_state`), in order:

1. the lease names this host (hostname and boot id): its owner is alive if and only if its
   pid runs and started when the lease says (a reused pid is another program);
2. it names this process's SLURM job with a smaller restart count: the job's run before
   it was requeued, which SLURM has ended: stale;
3. its heartbeat is younger than two heartbeats: alive;
4. its heartbeat is older than :data:`STALE_AFTER_S`: stale (the owner's node died, or it
   lost the file system for that long);
5. it names a SLURM job and ``squeue`` answers: alive while the job is pending, running
   or completing, stale once it is not;
6. otherwise alive (a missed heartbeat or two, and no way to ask).

Limits: rule 1 takes the hostname as the machine: two containers sharing a hostname but
not a PID namespace would each call the other's live lease stale (a boot id differing
between them is seen). Rules 3-4 compare the file's mtime (set by the file server) with
this host's clock: skew between nodes must stay well below :data:`STALE_AFTER_S`. An
owner whose file system stalls longer than that may be called stale while it still runs;
its heartbeat then finds the lease gone and it stops writing results (:meth:`Lease.lost`).

No torch or Lightning here: a re-run must decide in well under a second.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("poolbench.train")

LEASE = "owner.json"
HEARTBEAT_S = 30.0      # the owner touches its lease this often
STALE_AFTER_S = 600.0   # a lease whose heartbeat is older than this is stale, whoever holds it
_SQUEUE_ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
                  "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT",
                  "STOPPED", "PREEMPTED"}


class OwnedError(RuntimeError):
    """The run directory has a live owner; ``owner`` is its lease record."""

    def __init__(self, run_dir: Path, owner: dict, why: str):
        self.run_dir, self.owner, self.why = run_dir, owner, why
        super().__init__(f"{run_dir} is owned by {describe(owner)} ({why})")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _proc_stat(pid: int) -> list[str]:
    """Fields 3.. of /proc/<pid>/stat (state, ppid, ...; after the command name), or []."""
    stat = _read(Path(f"/proc/{pid}/stat"))
    return stat.rsplit(")", 1)[1].split() if stat and ")" in stat else []


def _pid_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, from /proc), or None."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else None


def _pid_runs(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (killed, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    return _proc_stat(pid)[:1] != ["Z"]


@dataclass(frozen=True)
class Owner:
    """Who holds a lease (the record in owner.json)."""

    token: str
    host: str
    boot_id: str | None
    pid: int
    pid_start: str | None
    slurm_job: str | None
    slurm_step: str | None
    slurm_restart: int
    launch: str | None
    started_at: float

    @classmethod
    def this_process(cls, launch: str | None = None) -> "Owner":
        env = os.environ
        return cls(token=secrets.token_hex(8), host=socket.gethostname(),
                   boot_id=_read(Path("/proc/sys/kernel/random/boot_id")), pid=os.getpid(),
                   pid_start=_pid_start(os.getpid()), slurm_job=env.get("SLURM_JOB_ID"),
                   slurm_step=env.get("SLURM_STEP_ID"),
                   slurm_restart=int(env.get("SLURM_RESTART_COUNT") or 0), launch=launch,
                   started_at=time.time())


def describe(owner: dict) -> str:
    """``pid 123 on host n01 (SLURM job 45, step 0), since 2026-12-01 10:00:00``."""
    slurm = ""
    if owner.get("slurm_job"):
        step = owner.get("slurm_step")
        slurm = f" (SLURM job {owner['slurm_job']}" + (f", step {step}" if step else "") + ")"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started_at", 0)))
    return f"pid {owner.get('pid')} on host {owner.get('host')}{slurm}, since {since}"


def read_lease(run_dir: str | Path) -> tuple[dict | None, float | None]:
    """(the lease record of ``run_dir`` or None, its heartbeat age in seconds or None)."""
    path = Path(run_dir) / LEASE
    try:
        text, mtime = path.read_text(), path.stat().st_mtime
        record = json.loads(text)
    except (OSError, ValueError):
        return None, None
    return (record, max(0.0, time.time() - mtime)) if isinstance(record, dict) else (None, None)


def _squeue_state(job: str) -> str | None:
    """The state squeue gives SLURM job ``job`` ('' when it no longer knows the job), or
    None when squeue cannot be asked."""
    if not shutil.which("squeue"):
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%T"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return "" if "invalid job id" in out.stderr.lower() else None
    return out.stdout.strip().splitlines()[0].strip() if out.stdout.strip() else ""


def owner_state(owner: dict, age_s: float, me: Owner | None = None) -> tuple[bool, str]:
    """(whether the lease's owner is alive, why): the stale-owner rule of this module's
    docstring. ``age_s``: the heartbeat's age; ``me``: this process (default: as now)."""
    me = me or Owner.this_process()
    if owner.get("host") == me.host and owner.get("boot_id") == me.boot_id:
        pid = int(owner.get("pid") or -1)
        if not _pid_runs(pid):
            return False, f"pid {pid} is gone"
        start = _pid_start(pid)
        if owner.get("pid_start") and start and start != owner["pid_start"]:
            return False, f"pid {pid} now runs another program"
        return True, f"pid {pid} runs on this host"
    if me.slurm_job and owner.get("slurm_job") == me.slurm_job and \
            int(owner.get("slurm_restart") or 0) < me.slurm_restart:
        return False, f"SLURM job {me.slurm_job} was requeued since"
    if age_s < 2 * HEARTBEAT_S:
        return True, f"heartbeat {age_s:.0f} s ago"
    if age_s > STALE_AFTER_S:
        return False, f"no heartbeat for {age_s:.0f} s"
    if owner.get("slurm_job"):
        state = _squeue_state(owner["slurm_job"])
        if state is not None:
            alive = state in _SQUEUE_ACTIVE
            return alive, f"SLURM job {owner['slurm_job']} is {state or 'gone'}"
    return True, f"heartbeat {age_s:.0f} s ago"


def live_owner(run_dir: str | Path) -> dict | None:
    """The lease record of ``run_dir``'s live owner, or None (no lease, or a stale one)."""
    record, age = read_lease(run_dir)
    if record is None or not owner_state(record, age)[0]:
        return None
    return record


def owned_by_another(run_dir: str | Path) -> bool:
    """Whether a live process other than this one owns ``run_dir``."""
    owner = live_owner(run_dir)
    return owner is not None and not (owner.get("pid") == os.getpid() and
                                      owner.get("host") == socket.gethostname())


class Lease:
    """This process's ownership of a run directory: :meth:`acquire`, :meth:`release`."""

    def __init__(self, run_dir: Path, owner: Owner):
        self.run_dir, self.owner, self.path = Path(run_dir), owner, Path(run_dir) / LEASE
        self.lost: str | None = None  # why the lease stopped naming this owner, if it did
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def acquire(cls, run_dir: str | Path, launch: str | None = None) -> "Lease":
        """Take the lease of ``run_dir`` (creating the directory), taking over a stale one;
        raises :class:`OwnedError` when a live owner holds it. Starts the heartbeat."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        lease = cls(run_dir, Owner.this_process(launch))
        for _ in range(5):  # a few rounds of races with other launches, then give up
            if lease._link():
                lease._start_heartbeat()
                return lease
            record, age = read_lease(run_dir)
            if record is None:
                continue  # released (or half-visible) meanwhile: try again
            alive, why = owner_state(record, age, lease.owner)
            if alive:
                raise OwnedError(run_dir, record, why)
            log.warning("taking over the lease of %s from %s: %s", run_dir, describe(record), why)
            lease._reap(record)
        raise OwnedError(run_dir, read_lease(run_dir)[0] or {}, "other launches kept taking it")

    def _link(self) -> bool:
        """Create the lease with this owner's record; False if the name exists."""
        tmp = self.run_dir / f".{LEASE}.{self.owner.token}.tmp"
        tmp.write_text(json.dumps(asdict(self.owner), indent=2) + "\n")
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # NFS may report a link that did succeed as failed: check the count
            try:
                return os.stat(tmp).st_nlink == 2
            except OSError:
                return False
        finally:
            tmp.unlink(missing_ok=True)

    def _reap(self, stale: dict) -> None:
        """Move the stale lease ``stale`` aside and delete it; put back a lease that turns
        out to be another (a live owner that took it meanwhile)."""
        aside = self.run_dir / f".{LEASE}.{self.owner.token}.stale"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another launch reaped it first
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = None
        if moved is not None and moved.get("token") != stale.get("token"):
            try:
                os.link(aside, self.path)  # not the stale one: give it back
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)

    def still_mine(self) -> bool:
        record, _ = read_lease(self.run_dir)
        return record is not None and record.get("token") == self.owner.token

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="poolbench-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if not self.still_mine():
                record, _ = read_lease(self.run_dir)
                self.lost = f"now held by {describe(record)}" if record else "deleted"
                log.error("lost the lease of %s (%s): this launch no longer owns the run",
                          self.run_dir, self.lost)
                return
            try:
                os.utime(self.path)
            except OSError as e:
                log.warning("could not renew the lease of %s: %s", self.run_dir, e)

    def release(self) -> None:
        """Stop the heartbeat and delete the lease, if it is still this owner's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.still_mine():
            self.path.unlink(missing_ok=True)
