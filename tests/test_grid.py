"""poolbench-grid: enumerates an experiment's runs as Hydra's sweeper does, with status."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from dataclasses import asdict

import pytest

from poolbench.config import model_arguments
from poolbench.data import dataset_spec
from poolbench.grid import composed_configs, experiments, grid_runs, main, resolve_run_dirs
from poolbench.lease import Owner
from poolbench.models import build_model
from poolbench.pooling import available_pools

GRID_DATA, GRID_MODELS = ("cifar100", "tinyimagenet"), ("vgg16", "resnet18")


@pytest.mark.parametrize("experiment,count", [
    ("paper_grid", 8 * 2 * 2 * 3), ("ablation_kt", 4 * 5 * 3), ("smoke", 96),
])
def test_counts(experiment, count):
    assert len(grid_runs(experiment)) == count


@functools.cache
def runs_in_the_grid(pool: str) -> bool:
    """Whether ``pool`` builds in both models at both datasets' image sizes (not where it
    refuses the geometry: fractional_max on 2x2/2 pools of even sizes)."""
    try:
        for data in GRID_DATA:
            for model in GRID_MODELS:
                build_model(model, 10, pool=pool, width=8,
                            input_size=dataset_spec(data).image_size)
    except ValueError:
        return False
    return True


def test_extended_grid_is_every_method_that_runs_in_the_grid():
    runs = grid_runs("extended_grid")
    pools = {o.partition("=")[2] for r in runs for o in r.overrides if o.startswith("pool=")}
    assert pools == {p for p in available_pools() if runs_in_the_grid(p)}
    assert "fractional_max" not in pools  # refuses 2x2/2 pools on 32 and 64 px images
    assert len(runs) == len(pools) * len(GRID_DATA) * len(GRID_MODELS) * 3


@pytest.mark.slow
@pytest.mark.parametrize("experiment", experiments())
def test_every_run_builds_at_its_data_resolution(experiment):
    """No grid holds a run that would fail at build time (a method refusing the geometry),
    checked on the composed configs at width 8, one per data, model and pool."""
    firsts = {}
    for run in grid_runs(experiment, ["seed=0", "model.width=8"]):
        key = tuple(o for o in run.overrides if o.split("=")[0] in ("data", "model", "pool"))
        firsts.setdefault(key, run)
    for _, cfg in composed_configs(list(firsts.values())):
        pool_hparams, model_kwargs = model_arguments(cfg)
        spec = dataset_spec(cfg.data.name)
        build_model(cfg.model.name, spec.num_classes, pool=cfg.pool.name,
                    pool_hparams=pool_hparams, input_size=spec.image_size, **model_kwargs)


def test_command_line_overrides_replace_swept_keys():
    runs = grid_runs("paper_grid", ["seed=0", "pool=max,softpool", "trainer.max_epochs=20"])
    assert len(runs) == 2 * 2 * 2
    assert {o for r in runs for o in r.overrides if o.startswith("pool=")} == \
        {"pool=max", "pool=softpool"}
    assert all("seed=0" in r.overrides and "trainer.max_epochs=20" in r.overrides for r in runs)
    # The non-identity override puts a hash on every run directory.
    resolve_run_dirs(runs)
    assert all("-" in r.run_dir.name for r in runs)


def _composed_one_by_one(runs):
    """Each run's directory from a full Hydra composition of its own overrides."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from poolbench.config import CONF_DIR

    dirs = []
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        for r in runs:
            cfg = compose("train", overrides=r.overrides, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            dirs.append(Path(cfg.run_dir))
    return dirs


@pytest.mark.parametrize("experiment,overrides,every", [
    ("ablation_kt", [], 3),  # value overrides only: one composition for all 60 runs
    ("paper_grid", ["seed=1", "trainer.max_epochs=20"], 2),
    ("smoke", ["seed=2", "optim.lr=1e-1", "data=cifar100", "model=vgg16,resnet18"], 1),
    ("smoke", ["seed=0", "model=vgg16", "model.pool_positions=[3, 4]", "data=tinyimagenet"], 1),
    ("smoke", ["seed=0", "data=cifar100", "+trainer.gradient_clip_val=1.0"], 1),  # full path
])
def test_shared_compositions_give_the_directories_hydra_gives(experiment, overrides, every):
    runs = grid_runs(experiment, overrides)[::every]
    resolve_run_dirs(runs)
    assert [r.run_dir for r in runs] == _composed_one_by_one(runs)
    assert len({r.run_dir for r in runs}) == len(runs)


def test_an_override_of_no_key_still_fails_as_hydra_does():
    from hydra.errors import ConfigCompositionException

    runs = grid_runs("smoke", ["seed=0", "data=cifar100", "model=resnet18", "pool=max",
                               "model.pool_positions=[3,4]"])  # a VGG16 key
    with pytest.raises(ConfigCompositionException, match="pool_positions"):
        resolve_run_dirs(runs)


def test_paper_grid_covers_the_paper(tmp_path):
    runs = [r for r in grid_runs("paper_grid", [f"paths.outputs={tmp_path}"])
            if "seed=1" in r.overrides]
    resolve_run_dirs(runs)
    dirs = {r.run_dir.relative_to(tmp_path).parts for r in runs}
    assert len(runs) == len(dirs) == 32, "every run has its own directory"
    assert {d[3] for d in dirs} == set(available_pools(paper_only=True))
    assert {d[:3] for d in dirs} == {("paper_grid", d, m) for d in ("cifar100", "tinyimagenet")
                                     for m in ("vgg16", "resnet18")}
    assert {d[4] for d in dirs} == {"seed=1"}, "no hash: the experiment's own sweep only"


def test_status_and_index(tmp_path, capsys):
    args = ["smoke", f"paths.outputs={tmp_path}", "data=cifar100", "model=vgg16", "seed=0"]
    runs = grid_runs(args[0], args[1:])
    assert len(runs) == 8
    resolve_run_dirs(runs)
    done, diverged, failed, interrupted, running = (r.run_dir for r in runs[:5])
    for d, status in ((done, "done"), (diverged, "diverged"), (failed, "failed")):
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({"status": status}))
    interrupted.mkdir(parents=True)
    (interrupted / "last.ckpt").write_bytes(b"x")
    running.mkdir(parents=True)  # owned by a live launch (this process), retrying a failure
    (running / "results.json").write_text(json.dumps({"status": "failed"}))
    (running / "owner.json").write_text(json.dumps(asdict(Owner.this_process())))
    assert [r.status for r in runs[:6]] == ["done", "diverged", "failed", "interrupted",
                                            "running", "missing"]

    assert main(args + ["--summary"]) == 0
    out = capsys.readouterr().out
    assert "8 runs: 1 done, 1 diverged, 1 failed, 1 running, 1 interrupted, 3 missing" in out
    assert main(args + ["--index", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.split() == runs[3].overrides
    assert main(args + ["--json", "--status", "missing"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["index"] for r in rows] == [5, 6, 7]


def test_errors_name_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["no_such_experiment"])
    assert "paper_grid" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ablation_kt", "--index", "60"])
    assert "0..59" in capsys.readouterr().err


def test_index_feeds_poolbench_train(tmp_path):
    """The printed overrides are exactly a job of the sweep: composing them gives its run dir."""
    out = subprocess.run([sys.executable, "-m", "poolbench.grid", "ablation_kt",
                          f"paths.outputs={tmp_path}", "--index", "5"],
                         capture_output=True, text=True, check=True).stdout
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from poolbench.config import CONF_DIR

    run = grid_runs("ablation_kt", [f"paths.outputs={tmp_path}"])[5]
    resolve_run_dirs([run])
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("train", overrides=out.split(), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        assert cfg.pool.name == "tmaxavg" and cfg.experiment_name == "ablation_kt"
        assert cfg.run_dir == str(run.run_dir)


def test_started_run_is_incomplete_not_missing(tmp_path, capsys):
    """A directory without results.json or last.ckpt (a run killed in its first epoch, or in
    it now) is 'incomplete', as the results collector calls it; 'missing' has no directory."""
    args = ["smoke", f"paths.outputs={tmp_path}", "data=cifar100", "model=vgg16", "seed=0"]
    runs = grid_runs(args[0], args[1:])
    resolve_run_dirs(runs)
    runs[0].run_dir.mkdir(parents=True)
    (runs[0].run_dir / "config.json").write_text("{}")
    assert [r.status for r in runs[:2]] == ["incomplete", "missing"]
    assert main(args + ["--summary"]) == 0
    assert "8 runs: 1 incomplete, 7 missing" in capsys.readouterr().out
    assert main(args + ["--json", "--status", "incomplete"]) == 0
    assert [json.loads(x)["index"] for x in capsys.readouterr().out.splitlines()] == [0]


def test_summary_of_a_fresh_outputs_folder_composes_one_run(tmp_path, capsys, monkeypatch):
    """With no experiment folder yet, every run is missing: the summary says so after one
    composition (not one per method, model and dataset: seconds for the smoke's 96 runs).
    Runs that choose other folders (a swept experiment_name) are all looked up."""
    import poolbench.grid as grid

    sizes = []
    real = grid.resolve_run_dirs
    monkeypatch.setattr(grid, "resolve_run_dirs", lambda runs: sizes.append(len(runs)) or real(runs))
    args = ["smoke", f"paths.outputs={tmp_path}", "data=cifar100", "model=vgg16", "seed=0"]
    assert main(args + ["--summary"]) == 0
    assert "smoke: 8 runs: 8 missing" in capsys.readouterr().out and sizes == [1]

    swept = args + ["experiment_name=a,b", "pool=max"]
    b = grid_runs("smoke", swept[1:])[1]
    assert "experiment_name=b" in b.overrides
    b.run_dir.mkdir(parents=True)  # a run of the second folder, started
    sizes.clear()
    assert main(swept + ["--summary"]) == 0
    assert "smoke: 2 runs: 1 incomplete, 1 missing" in capsys.readouterr().out
    assert sizes[-1] == 2  # every run's directory

    a = grid_runs("smoke", args[1:])[3]
    a.run_dir.mkdir(parents=True)  # the experiment folder exists: every run is looked up
    sizes.clear()
    assert main(args + ["--summary"]) == 0
    assert "smoke: 8 runs: 1 incomplete, 7 missing" in capsys.readouterr().out
    assert sizes[-1] == 8
