"""poolbench-bench gpu-check: its dry run on the CPU (the same code as on a GPU, tiny), its
refusals, and the budgeted plan of the training cases."""

from __future__ import annotations

import pytest
import torch

from poolbench.bench import cli
from poolbench.bench.throughput import Case, Setting, plan_cases, run_cases

pytestmark = pytest.mark.filterwarnings("ignore")


def test_dry_run_writes_a_complete_report(tmp_path):
    # --skip-tests: the CUDA-test step is run_cuda_tests (tested below on its own); here it
    # would collect three test files in a subprocess, minutes on a busy CPU
    out = tmp_path / "gpu_check.md"
    assert cli.main(["gpu-check", "--dry-run", "--skip-tests", "--out", str(out)]) == 0
    md = out.read_text()
    assert md.startswith("# GPU check (DRY RUN on CPU)")
    assert "## CUDA-only tests\n\nskipped (--skip-tests)" in md
    table = [ln for ln in md.splitlines() if ln.startswith("| cifar100") or
             ln.startswith("| tinyimagenet")]
    expected = [(d, m, "max", "eager", "full") for d in ("cifar100", "tinyimagenet")
                for m in ("vgg16", "resnet18")]
    expected += [("cifar100", "resnet18", "max", "compiled", "full"),
                 ("tinyimagenet", "vgg16", "tmaxavg", "eager", "sampled"),
                 ("tinyimagenet", "vgg16", "tmaxavg", "compiled", "sampled")]
    for case in expected:
        assert sum(ln.startswith("| " + " | ".join(case) + " |") for ln in table) == 1, case
    assert len(table) == len(expected)
    assert "failed" not in md, md
    assert "- measured: MEASURED step times: paper_grid" in md
    assert "- estimate: ESTIMATE" in md.upper() or "- estimate: " in md
    assert "not available" not in md
    for bench in ("### latency", "### overhead"):
        assert bench in md
    assert (tmp_path / "gpu_check_files" / "step_times.csv").is_file()


def test_cuda_tests_step_runs_the_files_that_check_for_cuda(tmp_path):
    from poolbench.bench.gpu_check import run_cuda_tests

    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(
        "import pytest, torch\n"
        "@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')\n"
        "def test_on_cuda():\n    assert torch.cuda.is_available()\n"
        "def test_cuda_fails():\n    assert False\n"
        "def test_other():\n    assert False\n")
    (tmp_path / "tests" / "test_b.py").write_text("def test_cuda_elsewhere():\n    assert False\n")
    res = run_cuda_tests(600, root=tmp_path)  # generous: a busy CPU imports slowly
    assert "tests/test_a.py" in res["command"] and "test_b.py" not in res["command"]
    assert not res["ok"] and res["failures"] == ["FAILED tests/test_a.py::test_cuda_fails - "
                                                 "assert False"]
    assert "1 failed" in res["summary"] and "deselected" in res["summary"]


@pytest.mark.parametrize("argv, needle", [
    (["--dry-run"], "--dry-run needs --out PATH"),
    (["--dry-run", "--out", "docs/gpu_check.md"], "--dry-run needs --out PATH"),
    (["--steps", "1", "--dry-run", "--out", "x.md"], "--steps must be >= 2, got 1"),
    (["--budget", "0", "--dry-run", "--out", "x.md"], "--budget must be > 0, got 0"),
])
def test_refusals(argv, needle, monkeypatch):
    from poolbench.config import project_root

    monkeypatch.chdir(project_root())
    with pytest.raises(SystemExit, match=needle.replace("(", r"\(")):
        cli.main(["gpu-check", *argv])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_without_cuda_it_says_so(tmp_path):
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        cli.main(["gpu-check", "--out", str(tmp_path / "x.md")])


def test_plan_puts_eager_first_and_max_full_epochs_first_of_each_part():
    cases = plan_cases(["max", "tmaxavg", "gated"])
    assert len(cases) == len(set(cases)) == 2 * 2 * 2 * 3
    assert all(c.full == (c.method == "max") for c in cases)
    n_eager = sum(not c.compiled for c in cases)
    eager, compiled = cases[:n_eager], cases[n_eager:]
    assert not any(c.compiled for c in eager) and all(c.compiled for c in compiled)
    assert [c.full for c in eager] == [True] * 4 + [False] * 8
    for part in (compiled[:6], compiled[6:]):  # one dataset after the other
        assert len({c.data for c in part}) == 1
        assert [c.full for c in part] == [True] * 2 + [False] * 4


def test_budget_cuts_cases_from_the_end():
    setting = Setting(torch.device("cpu"), batch=4, width=8, steps=2,
                      images={"cifar100": 8, "tinyimagenet": 8})
    cases = [Case("cifar100", "resnet18", "max", False, True),
             Case("cifar100", "resnet18", "max", False, True)]
    rows, skipped = run_cases(cases, setting, budget_s=0.0, log=lambda m: None)
    assert rows == [] and len(skipped) == 2 and "skipped (budget" in skipped[0]
    rows, skipped = run_cases(cases[:1], setting, budget_s=600.0, log=lambda m: None)
    assert len(rows) == 1 and not skipped
    r = rows[0]
    assert r["steps"] == r["steps_per_epoch"] == 2 and r["step_ms"] > 0
    assert r["img_per_s"] == pytest.approx(4 / (r["step_ms"] / 1e3))
