"""Launch overhead: the process start clock, the first-step time in results.json, and
``poolbench-bench launch`` run for real (one repeat at width 8)."""

from __future__ import annotations

import csv
import subprocess
import sys
import time

import pytest

from poolbench.bench import cli
from poolbench.bench import startup as B
from poolbench.utils import process_start_time


def test_process_start_time_is_when_the_process_started():
    before = time.time()
    out = subprocess.run(
        [sys.executable, "-c",
         "import time; time.sleep(0.5); from poolbench.utils import process_start_time as p; "
         "print(p(), time.time())"], capture_output=True, text=True, check=True).stdout
    started, now = map(float, out.split())
    after = time.time()
    # /proc's clock ticks are 10 ms: allow that much before our own clock reading.
    assert before - 0.05 <= started <= now - 0.5
    assert started < after


def test_process_start_time_of_this_process_is_in_the_past():
    assert process_start_time() < time.time()


def test_summary_medians_ratios_and_verdicts():
    rows = []
    for r, (floor, launch, skip) in enumerate([(2.0, 6.0, 1.0), (4.0, 12.0, 3.0),
                                               (3.0, 9.0, 1.5)]):
        for phase, s in (("floor", floor), ("launch", launch), ("skip", skip)):
            rows.append(dict(repeat=r, phase=phase, seconds=s, ratio_to_floor=s / floor))
    summ = {s["phase"]: s for s in B.summary(rows)}
    assert summ["launch"]["median_s"] == 9.0 and summ["launch"]["met"] is True
    assert summ["launch"]["ratio_to_floor"] == 3.0
    assert summ["skip"]["median_s"] == 1.5 and summ["skip"]["met"] is True
    assert (summ["skip"]["min_s"], summ["skip"]["max_s"]) == (1.0, 3.0)
    assert summ["floor"]["met"] is None
    rows[4]["seconds"] = rows[7]["seconds"] = 11.0  # launch medians over 10 s: not met
    assert {s["phase"]: s for s in B.summary(rows)}["launch"]["met"] is False


@pytest.fixture(scope="module")
def launch_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("launch")
    assert cli.main(["launch", "model.width=8", "logger.wandb.enabled=false", "--repeats", "1",
                     "--out", str(out)]) == 0
    with open(out / "launch.csv") as fh:
        return out, list(csv.DictReader(fh))


def test_launch_bench_times_a_real_run_and_its_skip(launch_run):
    out, rows = launch_run
    by = {r["phase"]: r for r in rows}
    assert set(by) == {"floor", "launch", "skip"}
    floor, launch, skip = (float(by[p]["seconds"]) for p in ("floor", "launch", "skip"))
    # (launch is not always above the floor: both are dominated by the same imports, and
    # they vary by seconds from process to process on a shared machine.)
    assert floor > 0 and launch > 0 and skip > 0
    assert skip < launch  # skipping imports neither torch nor lightning
    assert float(by["launch"]["ratio_to_floor"]) == pytest.approx(launch / floor)
    assert "poolbench-train" in by["launch"]["command"] or "poolbench.train" in by["launch"][
        "command"]
    md = (out / "launch.md").read_text()
    assert "| launch |" in md and "< 10 s" in md and "< 2 s" in md

