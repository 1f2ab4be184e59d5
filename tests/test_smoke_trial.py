"""scripts/smoke_trial.py, the smoke budget's learning-speed probe: a short trial prints its
accuracy and CPU time, and a budget under one batch is refused."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "smoke_trial.py"


@pytest.fixture(scope="module")
def trial():
    spec = importlib.util.spec_from_file_location("smoke_trial", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_trial_prints_accuracy_and_cpu_time(trial, tmp_path, capsys):
    from poolbench.data.fixtures import write_cifar100

    write_cifar100(tmp_path)
    assert trial.main(["--root", str(tmp_path), "--data", "cifar100", "--model", "resnet18",
                       "--images", "64", "--batch", "16", "--seeds", "0", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3, lines
    for seed, line in enumerate(lines[:2]):
        m = re.fullmatch(r"cifar100 resnet18 max width 8: 64 images, batch 16, lr 0\.05, "
                         rf"seed {seed}: test top-1 (\d+\.\d)% \(chance 1\.0%\), "
                         r"(\d+\.\d) s CPU \((\d+\.\d) ms an image\)", line)
        assert m, line
        assert 0 <= float(m.group(1)) <= 100 and float(m.group(2)) > 0
    assert lines[2].startswith("mean over seeds [0, 1]: ")


def test_a_budget_under_one_batch_is_refused(trial, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        trial.main(["--root", str(tmp_path), "--images", "8", "--batch", "16"])
    assert e.value.code == 2
    assert "--images 8 is less than one batch (--batch 16)" in capsys.readouterr().err
