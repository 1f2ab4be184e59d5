"""``poolbench-bench gpu-check``: one command that tells, on a CUDA machine, in about ten
minutes, whether everything works there and how fast, and writes it to docs/gpu_check.md.

In order, each step within its share of ``--budget`` (default 600 s):

1. the CUDA-only tests (``pytest -k cuda`` on the test files that check for CUDA);
2. training throughput (:mod:`.throughput`): one epoch of VGG16 and ResNet18 on a
   CIFAR-100-sized and a Tiny-ImageNet-sized synthetic set, 16-mixed and channels_last,
   eager and compiled, for max pooling and each paper method: images/s, step time, the
   first epoch's compile time separately. What the budget does not fit is cut from the end
   of a priority order (max pooling's full epochs first; the other methods as sampled
   epochs of ``--steps`` steps, eager before compiled) and listed as skipped;
3. ``poolbench-bench latency`` and ``overhead`` with ``--device cuda`` (paper methods);
4. GPU-hours of ``paper_grid`` from the measured eager step times next to the FLOP-based
   estimate (:mod:`.gpu_hours`).

``--dry-run`` runs the same code at a tiny size on the CPU (width 8, batch 8, a few hundred
images, compile with the ``eager`` backend, the quick benches, a two-run grid) and must be
given ``--out``, so it never overwrites docs/gpu_check.md. The test suite runs it.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import project_root
from ..pooling import available_pools
from .report import command_line, environment, log, md_table, resolve_device

HELP = ("on a CUDA machine in ~10 minutes: CUDA tests, epochs eager and compiled, latency and "
        "overhead benches, measured GPU-hours; writes docs/gpu_check.md")
DEFAULT_OUT = Path("docs/gpu_check.md")
PAPER = available_pools(paper_only=True)


@dataclass
class Plan:
    """Sizes and shares of the budget: the real check, or the dry run's tiny one."""

    dry_run: bool
    budget_s: float
    steps: int
    device: torch.device

    @property
    def shares(self) -> dict[str, float]:
        """Seconds each step may take (the training epochs get what the others leave)."""
        b = self.budget_s
        return {"tests": 0.12 * b, "benches": 0.15 * b, "gpu_hours": 0.08 * b}


def _plan(args) -> Plan:
    if args.dry_run:
        if args.out is None or Path(args.out).resolve() == (
                Path(project_root()) / DEFAULT_OUT).resolve():
            raise SystemExit("--dry-run needs --out PATH other than docs/gpu_check.md (the dry "
                             "run's CPU numbers must not replace the GPU's)")
        return Plan(True, args.budget or 600.0, 2, torch.device("cpu"))
    device = resolve_device("auto")
    if device.type != "cuda":
        raise SystemExit("gpu-check needs a CUDA device (torch.cuda.is_available() is False); "
                         "--dry-run runs the same code on the CPU at a tiny size")
    return Plan(False, args.budget or 600.0, args.steps, device)


# ---- 1. tests ---------------------------------------------------------------------------------

def cuda_test_files(root: Path) -> list[str]:
    """Test files that check for CUDA (``torch.cuda.is_available`` in their text)."""
    return sorted(str(p.relative_to(root)) for p in (root / "tests").glob("test_*.py")
                  if "cuda.is_available" in p.read_text())


def run_cuda_tests(timeout_s: float, root: Path | None = None) -> dict:
    """``pytest -q -rfEs -k cuda`` on :func:`cuda_test_files` of ``root`` (default: the
    project): its summary line and status."""
    root = Path(root or project_root())
    files = cuda_test_files(root)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "-k",
           "cuda", *files]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True,
                              timeout=max(10.0, timeout_s))
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out, rc = f"timed out after {exc.timeout:.0f} s", -1
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    summary = next((ln.strip("= ") for ln in reversed(lines)
                    if re.search(r"\d+ (passed|failed|skipped|error|deselected)", ln)),
                   lines[-1] if lines else "no output")
    return dict(command=" ".join(["python", *cmd[1:]]), summary=summary,
                ok=rc in (0, 5), rc=rc, seconds=time.perf_counter() - t0,
                failures=[ln for ln in lines if ln.startswith(("FAILED", "ERROR"))][:20])


# ---- 2. throughput -------------------------------------------------------------------------

def run_throughput(plan: Plan, budget_s: float) -> tuple[list[dict], list[str]]:
    from .throughput import Setting, plan_cases, run_cases

    if plan.dry_run:  # every kind of case once, every model and dataset, no budget cut
        setting = Setting(plan.device, batch=8, width=8, steps=plan.steps,
                          images={"cifar100": 32, "tinyimagenet": 16},
                          compile_options={"backend": "eager"})
        cases = [c for c in plan_cases(["max", "tmaxavg"]) if _in_dry_run(c)]
        budget_s = math.inf
    else:
        setting = Setting(plan.device, steps=plan.steps,
                          compile_options={"backend": "inductor", "mode": "default"})
        cases = plan_cases(PAPER)
    log(f"throughput: {len(cases)} cases, budget {budget_s:.0f} s")
    return run_cases(cases, setting, budget_s, log)


def _in_dry_run(case) -> bool:
    """The dry run's cases: max pooling's full eager epoch of every model and dataset, its
    compiled one once, and a sampled epoch of tmaxavg eager and compiled."""
    if case.method == "max":
        return not case.compiled or (case.data, case.model) == ("cifar100", "resnet18")
    return (case.data, case.model) == ("tinyimagenet", "vgg16")


# ---- 3. benches ----------------------------------------------------------------------------

def _run_subcommand(argv: list[str]) -> int:
    """``poolbench-bench latency|overhead ARGS`` in this process (the subcommand modules
    directly: importing the CLI from here would close an import cycle)."""
    import argparse

    from . import latency, overhead

    module = {"latency": latency, "overhead": overhead}[argv[0]]
    parser = argparse.ArgumentParser(prog=f"poolbench-bench {argv[0]}")
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv[1:]), argv)


def run_benches(plan: Plan, work: Path, budget_s: float) -> dict[str, Path | str]:
    """latency and overhead on the device; their Markdown files (or why not)."""
    dev = "cpu" if plan.dry_run else "cuda"
    methods = ["max", "tmaxavg"] if plan.dry_run else PAPER
    quick = ["--quick"] if plan.dry_run else []
    each = str(max(5, int(budget_s / 3)))
    commands = {
        "latency": ["latency", "--device", dev, "--methods", *methods, "--budget", each,
                    "--quick", "--out", str(work / "latency")],
        "overhead": ["overhead", "--device", dev, "--methods", *methods, "--budget", each,
                     "--repeats", "5", *quick, "--out", str(work / "overhead")],
    }
    out: dict[str, Path | str] = {}
    for name, argv in commands.items():
        log(f"{name}: poolbench-bench {' '.join(argv)}")
        try:
            _run_subcommand(argv)
            out[name] = work / name / f"{name}.md"
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - recorded in the report
            out[name] = f"failed: {type(exc).__name__}: {exc}"
    return out


# ---- 4. GPU-hours ------------------------------------------------------------------------------

def grid_overrides(plan: Plan) -> list[str]:
    if plan.dry_run:  # the dry run's measured settings, a two-run grid
        return ["data=tinyimagenet", "model=vgg16", "pool=max,tmaxavg", "seed=0",
                "model.width=8", "data.batch_size=8", "trainer.max_epochs=1"]
    return []


def compare_gpu_hours(plan: Plan, rows: list[dict], work: Path) -> dict:
    """paper_grid's GPU-hours measured (eager step times of the check) and estimated."""
    from .gpu_hours import gpu_hours
    from .gpu_hours.extras import RunExtras
    from .throughput import step_times_csv

    overrides, cache, out = grid_overrides(plan), {}, {}
    try:
        out["estimate"] = gpu_hours("paper_grid", overrides, cache=cache, extras=RunExtras())
    except Exception as exc:  # noqa: BLE001
        out["estimate_error"] = f"{type(exc).__name__}: {exc}"
    csv_path = work / "step_times.csv"
    step_times_csv(rows, csv_path)
    try:  # the step times were measured through Lightning: no separate framework term
        out["measured"] = gpu_hours("paper_grid", overrides, step_times=[csv_path],
                                    cache=cache, extras=RunExtras(framework_ms=0.0))
    except Exception as exc:  # noqa: BLE001
        out["measured_error"] = f"{type(exc).__name__}: {exc}"
    return out


# ---- report ----------------------------------------------------------------------------------

def machine_lines(plan: Plan) -> list[str]:
    env = environment()
    import lightning

    lines = [f"- date: {env['date']}", f"- host: {os.uname().nodename}, {os.cpu_count()} CPUs"
             f" ({env['cpu']})", f"- torch {torch.__version__}, lightning "
             f"{lightning.__version__}, python {env['python']}"]
    if plan.device.type == "cuda":
        p = torch.cuda.get_device_properties(plan.device)
        lines += [f"- GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability "
                  f"{p.major}.{p.minor}, {torch.cuda.device_count()} device(s)",
                  f"- CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"]
    else:
        lines.append("- device: CPU (dry run: tiny sizes, eager compile backend; these numbers "
                     "say nothing about a GPU)")
    return lines


def _num(v, digits=1) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else \
        f"{v:,.{digits}f}"


def throughput_table(rows: list[dict]) -> str:
    head = ["data", "model", "method", "mode", "epoch", "steps", "step ms", "img/s",
            "epoch s", "first step s", "compile s"]
    cells = [[r["data"], r["model"], r["method"], r["compile"],
              "full" if r["full_epoch"] else "sampled", f"{r['steps']}/{r['steps_per_epoch']}",
              _num(r["step_ms"], 2), _num(r["img_per_s"], 0), _num(r["epoch_s"]),
              _num(r["first_step_s"]), _num(r["compile_s"])] for r in rows]
    return md_table(head, cells)


def _hours_lines(result: dict) -> list[str]:
    from .gpu_hours import headline

    lines = []
    for kind in ("measured", "estimate"):
        if kind in result:
            lines.append(f"- {kind}: {headline(result[kind])}")
        else:
            lines.append(f"- {kind}: not available ({result.get(kind + '_error', '?')})")
    return lines


def _bench_section(name: str, md) -> list[str]:
    if isinstance(md, str):
        return [f"### {name}", "", md, ""]
    body = Path(md).read_text().splitlines()
    return [f"### {name}", "", f"(from `{md}`)", ""] + [
        ("##" + ln if ln.startswith("#") else ln) for ln in body[1:]] + [""]


def to_markdown(plan: Plan, argv: Sequence[str], tests: dict | None, rows, skipped,
                benches, hours, elapsed_s: float) -> str:
    title = "# GPU check" + (" (DRY RUN on CPU)" if plan.dry_run else "")
    parts = [title, "", f"Command: `{command_line(argv)}`, {elapsed_s:.0f} s of a "
             f"{plan.budget_s:.0f} s budget.", "", "## Machine", "", *machine_lines(plan), ""]
    parts += ["## CUDA-only tests", ""]
    parts += (["skipped (--skip-tests)"] if tests is None else
              [f"`{tests['command']}`: **{tests['summary']}** ({tests['seconds']:.0f} s)"]
              + [f"- {ln}" for ln in tests["failures"]])
    parts += ["", "## Training throughput", "",
              "Synthetic data of the real sets' sizes on the device, one random batch reused "
              "(poolbench.bench.throughput); Lightning with the training module; "
              f"{rows[0]['precision'] if rows else '?'}, channels_last, batch "
              f"{rows[0]['batch'] if rows else '?'}, cuDNN autotuning as a run sets it. "
              "`epoch s`: measured (full) or steps per epoch x step time (sampled), without "
              "compilation; `compile s`: first step minus a steady step.", "",
              throughput_table(rows) if rows else "no case ran", ""]
    if skipped:
        parts += ["Not run (budget) or failed:", ""] + [f"- {s}" for s in skipped] + [""]
    parts += ["## Benchmarks on the device", ""]
    for name, md in benches.items():
        parts += _bench_section(name, md)
    parts += ["## GPU-hours of paper_grid", ""]
    parts += _hours_lines(hours) + [
        "", "Measured: the eager step times above (which include Lightning's own per-step "
        "cost, so no separate framework term), sampled methods included; evaluation scaled "
        "by FLOPs; checkpoint and start-up terms as `poolbench-bench gpu-hours` adds them.", ""]
    return "\n".join(parts)


# ---- command line -------------------------------------------------------------------------------

def add_arguments(p) -> None:
    """Arguments of ``poolbench-bench gpu-check``."""
    p.add_argument("--dry-run", action="store_true",
                   help="the same code at a tiny size on the CPU (needs --out)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"the report (default {DEFAULT_OUT}; required with --dry-run)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="time for the whole check (default 600)")
    p.add_argument("--steps", type=int, default=60,
                   help="steps of a sampled epoch (default 60)")
    p.add_argument("--skip-tests", action="store_true", help="leave out the CUDA-only tests")
    p.add_argument("--work", type=Path, default=None,
                   help="directory for the benches' files (default: outputs/bench/gpu_check, "
                        "beside --out with --dry-run)")


def run(args, argv: Sequence[str]) -> int:
    """Run ``poolbench-bench gpu-check``; exit status 1 if the CUDA tests failed."""
    if args.steps < 2:
        raise SystemExit(f"--steps must be >= 2, got {args.steps}")
    if args.budget is not None and args.budget <= 0:
        raise SystemExit(f"--budget must be > 0, got {args.budget}")
    plan = _plan(args)
    out = Path(args.out or DEFAULT_OUT)
    work = args.work or (out.parent / (out.stem + "_files") if plan.dry_run
                         else Path("outputs/bench/gpu_check"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    shares = plan.shares
    # a dry run on a busy CPU may need longer to import and collect than a GPU machine
    tests = None if args.skip_tests else run_cuda_tests(
        max(shares["tests"], 300.0) if plan.dry_run else shares["tests"])
    if tests:
        log(f"tests: {tests['summary']}")
    spent = time.perf_counter() - t0
    rows, skipped = run_throughput(
        plan, plan.budget_s - spent - shares["benches"] - shares["gpu_hours"])
    benches = run_benches(plan, work, shares["benches"])
    hours = compare_gpu_hours(plan, rows, work)
    text = to_markdown(plan, argv, tests, rows, skipped, benches, hours,
                       time.perf_counter() - t0)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    log(f"wrote {out}")
    return 0 if tests is None or tests["ok"] else 1
