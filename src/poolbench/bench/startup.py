"""Start-up time of ``poolbench-train`` (``poolbench-bench launch``): command to first
training step, and skipping a finished run.

Each repeat runs, as separate processes, in a fresh output directory:

* ``floor``: ``python -c "import torch, lightning"``, the import cost no run can avoid (the
  baseline the other two are divided by, measured in the same repeat);
* ``launch``: ``poolbench-train`` for one run of one step (``trainer.max_epochs=1``, one
  training, validation and test batch), timed from just before the process is started to
  the start of its first training step (``first_step_at`` in the run's results.json,
  recorded by :class:`poolbench.callbacks.FirstStepClock`);
* ``skip``: the same command again, which finds the finished run and skips it: its whole
  wall time.

The run uses generated fixture data (``poolbench-fixtures``) unless ``--data-root`` points
at real data; W&B stays as configured (offline by default), so its start-up is counted.
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from . import options
from .report import (
    command_line, environment, log, md_table, say_written, text_table, write_csv_and_markdown,
)

HELP = "poolbench-train's launch overhead: command to first training step, and a skipped run"
TARGETS = {"launch": 10.0, "skip": 2.0}  # seconds on the project's 2-core machine
PHASES = ("floor", "launch", "skip")
CSV_COLUMNS = ("repeat", "phase", "seconds", "ratio_to_floor", "command")


def train_command() -> list[str]:
    """``poolbench-train`` of this environment (the console script beside the interpreter)."""
    script = Path(sys.executable).with_name("poolbench-train")
    return [str(script)] if script.exists() else [sys.executable, "-m", "poolbench.train"]


def _run(cmd: Sequence[str], env: dict, timeout: float) -> tuple[float, str]:
    t0 = time.time()
    proc = subprocess.run(list(cmd), env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"command failed with exit code {proc.returncode}: "
                           f"{shlex.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout + proc.stderr


def measure(overrides: Sequence[str], data_root: Path, repeats: int = 3,
            timeout: float = 600.0, log=print) -> list[dict]:
    """Rows (repeat, phase, seconds, ...) for ``repeats`` rounds of floor, launch and skip."""
    from .. import rundir

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    floor_cmd = [sys.executable, "-c", "import torch, lightning"]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="poolbench-launch-") as tmp:
        for r in range(repeats):
            out = Path(tmp) / f"repeat{r}"
            cmd = train_command() + [
                *overrides, f"data.root={data_root}", f"paths.outputs={out}",
                "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                "callbacks.progress=plain"]
            floor, _ = _run(floor_cmd, env, timeout)
            t0 = time.time()
            wall, text = _run(cmd, env, timeout)
            results = list(out.rglob(rundir.RESULTS))
            res = rundir.read_results(results[0].parent) if len(results) == 1 else None
            if not res or res.get("status") != rundir.DONE or res.get("first_step_at") is None:
                raise RuntimeError(f"the run did not finish with a first step recorded "
                                   f"({results}):\n{text[-3000:]}")
            launch = res["first_step_at"] - t0
            skip, text = _run(cmd, env, timeout)
            if rundir.SKIP_NOTICE not in text:
                raise RuntimeError(f"the second invocation did not skip the run:\n{text[-3000:]}")
            for phase, seconds, c in (("floor", floor, floor_cmd), ("launch", launch, cmd),
                                      ("skip", skip, cmd)):
                rows.append(dict(repeat=r, phase=phase, seconds=seconds,
                                 ratio_to_floor=seconds / floor, command=shlex.join(c)))
            log(f"repeat {r + 1}/{repeats}: floor {floor:.2f} s, launch {launch:.2f} s "
                f"(whole run {wall:.1f} s), skip {skip:.2f} s")
    return rows


def summary(rows: Sequence[dict]) -> list[dict]:
    """Per phase: median seconds, min, max, median ratio to the floor, target and verdict."""
    out = []
    for phase in PHASES:
        sec = [r["seconds"] for r in rows if r["phase"] == phase]
        ratio = [r["ratio_to_floor"] for r in rows if r["phase"] == phase]
        med = statistics.median(sec)
        target = TARGETS.get(phase)
        out.append(dict(phase=phase, median_s=med, min_s=min(sec), max_s=max(sec),
                        ratio_to_floor=statistics.median(ratio), target_s=target,
                        met=None if target is None else med < target, n=len(sec)))
    return out


def _cells(summ: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["phase", "median (s)", "min-max (s)", "x floor", "target", "met"]
    cells = [[s["phase"], f"{s['median_s']:.2f}", f"{s['min_s']:.2f}-{s['max_s']:.2f}",
              f"{s['ratio_to_floor']:.2f}",
              "-" if s["target_s"] is None else f"< {s['target_s']:g} s",
              "-" if s["met"] is None else ("yes" if s["met"] else "NO")] for s in summ]
    return head, cells


def to_markdown(rows: Sequence[dict], command: str, load: tuple[float, ...] | None) -> str:
    summ = summary(rows)
    head, cells = _cells(summ)
    env = environment()
    lines = [
        "# Launch overhead of poolbench-train",
        "",
        f"`{command}` ({env['date']}; torch {env['torch']}, Python {env['python']}, "
        f"{env['cpu']}, {env['threads']} threads"
        + (f"; load average {load[0]:.2f} at the start" if load else "") + ").",
        "",
        "- floor: `python -c \"import torch, lightning\"`, the imports every run pays;",
        "- launch: from starting `poolbench-train` to the start of its first training step;",
        "- skip: re-running the same command once the run is finished (whole wall time).",
        "",
        f"Medians over {summ[0]['n']} repeats; x floor is the median of each repeat's ratio.",
        "",
        md_table(head, cells),
        "",
        "Run command of the last repeat: `" + rows[-1]["command"] + "`",
    ]
    return "\n".join(lines)


def add_arguments(p) -> None:
    """Arguments of ``poolbench-bench launch``."""
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                   help="Hydra overrides of the timed run (default: the configs' defaults, "
                        "VGG16 with max pooling on CIFAR-100, at data.val_size=100 on "
                        "fixture data)")
    options.add_repeats(p, "rounds of floor/launch/skip (default 3)", default=3)
    p.add_argument("--data-root", type=Path, default=None,
                   help="dataset root for data.root (default: fixture datasets generated in a "
                        "temporary directory)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="limit per command (default 600)")
    options.add_out(p, "launch")


def run(args, argv: Sequence[str]) -> int:
    """Run ``poolbench-bench launch`` with parsed ``args`` (``argv`` is recorded)."""
    options.check_positive(repeats=args.repeats)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="poolbench-fixtures-") as tmp:
        overrides = list(args.overrides)
        if args.data_root is None:
            from ..data.fixtures import write_cifar100, write_tinyimagenet

            root = Path(tmp)
            write_cifar100(root)
            write_tinyimagenet(root)
            if not any(o.startswith("data.val_size=") for o in overrides):
                overrides.append("data.val_size=100")  # the fixtures have 500-600 images
        else:
            root = args.data_root.resolve()
        try:
            rows = measure(overrides, root, repeats=args.repeats, timeout=args.timeout, log=log)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            raise SystemExit(f"poolbench-bench launch: {exc}") from None
    print(text_table(*_cells(summary(rows))))
    command = command_line(argv)
    say_written(write_csv_and_markdown(rows, CSV_COLUMNS, to_markdown(rows, command, load),
                                       args.out, "launch"))
    return 0
