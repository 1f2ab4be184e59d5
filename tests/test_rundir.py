"""poolbench.rundir: layout and identity, statuses, results.json, the ignored config keys."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from poolbench import rundir
from poolbench.config import CONF_DIR, from_section, is_config_group
from poolbench.lease import Owner

ROOT = Path(__file__).resolve().parents[1]
OLD_TREE = ROOT / "tests" / "data" / "outputs_before_rundir"


def make_run(run_dir: Path, status: str) -> Path:
    """A run directory in ``status`` (a key of rundir.STATUSES)."""
    if status == rundir.MISSING:
        return run_dir
    run_dir.mkdir(parents=True)
    (run_dir / rundir.CONFIG).write_text("{}")
    if status in rundir.RESULT_STATUSES:
        (run_dir / rundir.RESULTS).write_text(json.dumps({"status": status}))
    if status in (rundir.INTERRUPTED, rundir.RUNNING):
        (run_dir / rundir.LAST_CKPT).write_bytes(b"")
    if status == rundir.RUNNING:  # owned by a live process: this one
        (run_dir / rundir.OWNER).write_text(json.dumps(asdict(Owner.this_process())))
    return run_dir


@pytest.mark.parametrize("status", list(rundir.STATUSES))
def test_every_status_is_read_back(tmp_path, status):
    d = make_run(tmp_path / "seed=0", status)
    assert rundir.run_status(d) == status
    assert rundir.finished_status(d) == (status if status in ("done", "diverged") else None)


def test_status_vocabulary():
    assert list(rundir.STATUSES) == ["done", "diverged", "failed", "running", "interrupted",
                                     "incomplete", "missing"]
    assert all(rundir.STATUSES.values()), "every status says what it means"
    assert rundir.FINISHED == ("done", "diverged")
    assert set(rundir.FINISHED) < set(rundir.RESULT_STATUSES) < set(rundir.STATUSES)


def test_results_json_decides_only_with_a_known_status(tmp_path):
    d = make_run(tmp_path / "seed=0", rundir.INTERRUPTED)
    (d / rundir.RESULTS).write_text('{"status": "done"')  # cut short by a kill
    assert rundir.run_status(d) == "interrupted"
    (d / rundir.RESULTS).write_text('{"status": "running"}')
    assert rundir.run_status(d) == "interrupted"
    (d / rundir.LAST_CKPT).unlink()
    assert rundir.run_status(d) == "incomplete"
    assert rundir.run_status(d, results={"status": "failed"}) == "failed"


def test_a_live_owner_is_running_over_a_failed_attempt_but_not_over_a_finished_run(tmp_path):
    d = make_run(tmp_path / "seed=0", rundir.RUNNING)
    assert rundir.run_status(d, results={"status": "failed"}) == "running"  # a retry runs
    assert rundir.run_status(d, results={"status": "done"}) == "done"
    record = json.loads((d / rundir.OWNER).read_text())
    (d / rundir.OWNER).write_text(json.dumps({**record, "pid": 2**22 + 12345}))  # no such pid
    assert rundir.run_status(d) == "interrupted"  # a dead owner's lease is stale


def test_layout_is_read_back():
    sub = rundir.run_subdir("smoke", "cifar100", "vgg16", "tmaxavg", 2, ["pool.topk=2"])
    assert sub.startswith("smoke/cifar100/vgg16/tmaxavg/seed=2-") and len(sub.split("-")[-1]) == 8
    ident = {"experiment": "smoke", "data": "cifar100", "model": "vgg16", "pool": "tmaxavg",
             "seed": 2}
    assert rundir.identity_from_path(Path("/out") / sub) == ident
    assert rundir.experiment_dir(Path("/out") / sub) == Path("/out/smoke")
    assert rundir.identity_from_path(Path("/out/smoke/cifar100/vgg16/max/seed=-1")) == \
        {**ident, "pool": "max", "seed": -1}
    for not_a_run in ("/out/smoke/cifar100/vgg16/max/seed=0-abc", "/out/x/seed=0",
                      "/out/smoke/cifar100/vgg16/max/report"):
        assert rundir.identity_from_path(not_a_run) == {}, not_a_run
    assert rundir.run_subdir("e", "d", "m", "p", 0, ["seed=0", "pool=max"],
                             rundir.IDENTITY_EXCLUDED_KEYS) == "e/d/m/p/seed=0"


def test_the_old_tree_is_read_back():
    """Paths, identities and results.json fields of runs made before rundir.py existed."""
    run_dirs = sorted(p for p in OLD_TREE.rglob("seed=*"))
    assert len(run_dirs) == 6
    for d in run_dirs:
        config = json.loads((d / rundir.CONFIG).read_text())
        assert rundir.identity_from_path(d) == rundir.identity_from_config(config) != {}
        results = rundir.read_results(d)
        if results is None:
            continue
        # runs made before DDP have every field but the PARALLEL_FIELDS, appended since
        fields = [f for f in rundir.RESULT_FIELDS if f not in rundir.PARALLEL_FIELDS] \
            if results["status"] != "failed" else rundir.RESULT_FIELDS[:8]
        assert list(results) == list(fields), d  # the same fields, in the same order
        assert {k: results[k] for k in rundir.IDENTITY_FIELDS} == rundir.identity_from_path(d)
    assert rundir.identity_from_config({"seed": 0}) == {}


def test_results_record_fields_and_order(tmp_path):
    old = rundir.read_results(OLD_TREE / "smoke/cifar100/vgg16/max/seed=0")
    parallel = {"world_size": 2, "batch_size_per_device": 64, "global_batch_size": 128,
                "optimizer_steps": 8}
    assert set(parallel) == set(rundir.PARALLEL_FIELDS) and \
        rundir.RESULT_FIELDS[-len(parallel):] == rundir.PARALLEL_FIELDS  # appended
    measured = {k: old[k] for k in rundir.RESULT_FIELDS
                if k not in ("status", "error", "run_dir", "test_top1_final",
                             "test_top1_best_val", "max_epochs", "finished_at", "config",
                             *rundir.IDENTITY_FIELDS, *parallel)}
    rec = rundir.results_record(old["config"], tmp_path, "done", None, **measured, **parallel)
    assert list(rec) == list(rundir.RESULT_FIELDS)
    assert rec["run_dir"] == str(tmp_path)
    for k in rundir.RESULT_FIELDS:
        if k not in ("run_dir", "finished_at"):
            assert rec[k] == {**old, **parallel}[k], k
    with pytest.raises(ValueError, match=r"missing \['wandb_id'\], unknown \['wandb'\]"):
        rundir.results_record(old["config"], tmp_path, "done", None,
                              **{**{k: v for k, v in measured.items() if k != "wandb_id"},
                                 **parallel, "wandb": None})


def test_failure_record_keeps_a_finished_run(tmp_path):
    cfg = OmegaConf.create({"experiment_name": "e", "data": {"name": "d"}, "model": {"name": "m"},
                            "pool": {"name": "p"}, "seed": 3})
    d = tmp_path / "run"
    rundir.record_failure(d, cfg, "Traceback: boom")
    rec = rundir.read_results(d)
    assert rec == {"status": "failed", "error": "Traceback: boom", "experiment": "e",
                   "data": "d", "model": "m", "pool": "p", "seed": 3, "run_dir": str(d)}
    rundir.write_results(d, {"status": "done"})
    rundir.record_failure(d, cfg, "later")
    assert rundir.read_results(d) == {"status": "done"}


def test_clear_leaves_only_the_config_and_the_lease(tmp_path):
    d = make_run(tmp_path / "run", rundir.DONE)
    for name in (*rundir.RUN_FILES, ".results.json.abc123.tmp", rundir.OWNER):
        (d / name).write_text("x")
    (d / rundir.WANDB_DIR / "offline-run-1").mkdir(parents=True)
    rundir.clear(d)
    assert sorted(p.name for p in d.iterdir()) == [rundir.CONFIG, rundir.OWNER]
    assert rundir.run_status(d) == "incomplete"


def test_resume_point(tmp_path):
    import torch

    assert rundir.resume_point(tmp_path) == (None, 0)
    ckpt = {"loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 2}}}}}
    torch.save(ckpt, tmp_path / rundir.LAST_CKPT)
    assert rundir.resume_point(tmp_path) == (str(tmp_path / rundir.LAST_CKPT), 2)


def test_metrics_file_is_lightnings():
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    assert ExperimentWriter.NAME_METRICS_FILE == rundir.METRICS


# ---- config keys that do not change a run's result ---------------------------------------

def test_excluded_keys_are_read_from_train_yaml():
    yaml_keys = OmegaConf.load(CONF_DIR / "train.yaml").hydra.job.config.override_dirname \
        .exclude_keys
    assert list(rundir.IDENTITY_EXCLUDED_KEYS) == list(yaml_keys)


def test_ignored_keys_cover_the_excluded_keys_but_not_the_identity_groups():
    """Keys that poolbench-train leaves out of a run's identity are ignored when comparing the
    configs of one cell; the groups that make the cell (pool, model, data) are not."""
    def ignored(key):
        return any(key == k or key.startswith(k + ".") for k in rundir.IGNORED_CONFIG_KEYS)

    for key in rundir.IDENTITY_EXCLUDED_KEYS:
        assert ignored(key) != is_config_group(key), key
    for key in ("pool.topk", "model.width", "data.val_size", "optim.lr", "trainer.max_epochs"):
        assert not ignored(key), key
    for key in ("run_dir", "run_subdir", "tags", "logger.wandb.job_type", "paths.outputs"):
        assert ignored(key), key


def test_ignored_keys_match_the_collectors_old_list():
    """rundir.IGNORED_CONFIG_KEYS (derived from conf/train.yaml) ignores, on real run configs,
    exactly what the results collector's hand-written list ignored before it was derived."""
    from poolbench.results.configs import comparable_config

    old_hand_list = (
        "seed", "force", "threads", "run_dir", "run_subdir", "paths", "data.root",
        "data.download", "data.num_workers", "logger", "trainer.accelerator",
        "trainer.devices", "callbacks.progress", "callbacks.progress_every_n_steps", "tags",
    )
    configs = [json.loads(p.read_text()) for p in OLD_TREE.rglob(rundir.CONFIG)]
    assert configs
    for config in configs:
        assert comparable_config(config, rundir.IGNORED_CONFIG_KEYS) == \
            comparable_config(config, old_hand_list)


# ---- fast imports ------------------------------------------------------------------------

def test_skipping_needs_no_heavy_imports():
    code = ("import sys, poolbench.rundir, poolbench.train, poolbench.grid; "
            "print(sorted(m for m in ('torch', 'lightning', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_pooling_methods_load_without_timm():
    """timm takes seconds to import; only blurpool uses it, and imports it when built (so
    poolbench-results and a run of another method never load it)."""
    code = ("import sys, poolbench.pooling as p; m = 'timm' in sys.modules; "
            "p.create_pool('blurpool', 8); print(m, 'timm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "True"]


# ---- config sections as constructor arguments --------------------------------------------

def test_a_config_section_is_passed_as_keyword_arguments():
    from poolbench.data import PoolbenchDataModule

    section = OmegaConf.create({"name": "cifar100", "root": "/nowhere", "batch_size": 16,
                                "val_size": 0})
    dm = from_section(PoolbenchDataModule, section, "data", seed=3)
    assert (dm.batch_size, dm.val_size, dm.seed, str(dm.root)) == (16, 0, 3, "/nowhere")
    with pytest.raises(ValueError, match=r"data\.bogus is not an option of "
                                         r"PoolbenchDataModule; valid: \[.*'batch_size'"):
        from_section(PoolbenchDataModule, OmegaConf.create({**section, "bogus": 1}), "data",
                     seed=3)


def test_build_takes_data_and_optim_sections():
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from poolbench.train import build

    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("train", overrides=["model.width=8", "data.batch_size=16",
                                          "optim.lr=0.05", "optim.warmup_epochs=2", "seed=4"],
                      return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        dm, module = build(cfg)
        assert (dm.batch_size, dm.seed, dm.val_size) == (16, 4, 5000)
        assert module.optim_cfg == {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                                    "nesterov": False, "warmup_epochs": 2, "min_lr": 0.0}
        assert module.seed == 4 and module.check_every == 20
        bad = compose("train", overrides=["+optim.betas=1"], return_hydra_config=True)
        with pytest.raises(ValueError, match=r"optim\.betas is not an option of "
                                             r"ClassifierModule; valid: \['lr', "):
            build(bad)


def test_progress_choice_is_checked():
    from poolbench.callbacks import rich_progress

    assert rich_progress("rich") and not rich_progress("plain")
    with pytest.raises(ValueError, match=r"callbacks.progress='bars' is not valid; choose one "
                                         r"of \['auto', 'rich', 'plain'\]"):
        rich_progress("bars")
