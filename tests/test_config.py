"""Hydra config composition: every group composes, pool configs mirror the registry,
run directories are pure functions of the run identity."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from poolbench.config import CONF_DIR, register_resolvers
from poolbench.rundir import override_suffix
from poolbench.pooling import available_pools, pool_hparams

register_resolvers()


def compose_cfg(overrides=()):
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_pool_group_mirrors_registry():
    assert group_options("pool") == sorted(available_pools())
    for name in available_pools():
        data = yaml.safe_load((CONF_DIR / "pool" / f"{name}.yaml").read_text())
        assert data.pop("name") == name
        assert data == pool_hparams(name), f"conf/pool/{name}.yaml is out of date: " \
            "run scripts/gen_pool_configs.py"


@pytest.mark.parametrize("pool", available_pools())
def test_every_pool_composes(pool):
    cfg = compose_cfg([f"pool={pool}"])
    assert cfg.pool.name == pool
    assert cfg.run_dir.endswith(f"/{pool}/seed=0")


@pytest.mark.parametrize("data", group_options("data"))
@pytest.mark.parametrize("model", group_options("model"))
def test_data_model_compose(data, model):
    cfg = compose_cfg([f"data={data}", f"model={model}", "seed=3"])
    name = f"timm-{cfg.model.arch}" if model == "timm" else model  # timm: names the arch
    assert cfg.data.name == data and cfg.model.name == name
    assert Path(cfg.run_dir).parts[-5:] == ("default", data, name, "max", "seed=3")


def test_paper_recipe_defaults():
    cfg = compose_cfg()
    assert cfg.optim.lr == 0.1 and cfg.optim.momentum == 0.9
    assert cfg.optim.weight_decay == pytest.approx(5e-4)
    assert cfg.trainer.max_epochs == 200 and cfg.data.batch_size == 128
    assert cfg.trainer.precision == "auto"
    assert cfg.data.val_size == 5000
    assert compose_cfg(["data=tinyimagenet"]).data.val_size == 10000


def test_debug_group_composes():
    cfg = compose_cfg(["debug=fast"])
    assert cfg.trainer.max_epochs == 1 and cfg.logger.wandb.enabled is False


def test_run_dir_identity_and_hash():
    base = compose_cfg(["pool=tmaxavg"]).run_dir
    a = compose_cfg(["pool=tmaxavg", "pool.topk=2", "trainer.max_epochs=50"]).run_dir
    b = compose_cfg(["trainer.max_epochs=50", "pool=tmaxavg", "pool.topk=2"]).run_dir
    c = compose_cfg(["pool=tmaxavg", "pool.topk=3", "trainer.max_epochs=50"]).run_dir
    assert a == b, "order of overrides must not matter"
    assert a != c and a.startswith(base + "-")
    # Paths and non-semantic options do not change the identity.
    d = compose_cfg(["pool=tmaxavg", "data.root=/elsewhere", "data.num_workers=8",
                     "logger.wandb.mode=online", "force=true", "threads=1"]).run_dir
    assert d == base
    assert compose_cfg(["pool=tmaxavg", "paths.outputs=/tmp/o"]).run_dir == \
        "/tmp/o/default/cifar100/vgg16/tmaxavg/seed=0"


def test_override_suffix():
    assert override_suffix("") == ""
    s = override_suffix("pool.topk=2")
    assert len(s) == 9 and s.startswith("-") and s == override_suffix("pool.topk=2")


def test_override_suffix_of_hydra_task_lists():
    assert override_suffix([], ["seed"]) == override_suffix(["seed=3"], ["seed"]) == ""
    # The same overrides, hashed as the canonical string.
    assert override_suffix(["pool.topk=2", "seed=1"], ["seed"]) == override_suffix("pool.topk=2")
    # Spelled differently, the same values: the same suffix.
    assert override_suffix(["optim.lr=1e-1"]) == override_suffix(["optim.lr=0.1"])
    assert override_suffix(["a=[1, 2]"]) == override_suffix(["a=[1,2]"])
    assert override_suffix(["x=1", "y=2"]) == override_suffix(["y=2", "x=1"])
    assert override_suffix(["optim.lr=0.1"]) != override_suffix(["optim.lr=0.2"])
    assert override_suffix(["+a=1"]) != override_suffix(["a=1"])


@pytest.mark.parametrize("typed,swept", [
    ("optim.lr=1e-1", "optim.lr=1e-1,2e-1"),
    ("model.pool_positions=[3, 4]", "model.pool_positions=[3,4],[4]"),
    ("optim.weight_decay=5.e-4", "optim.weight_decay=5.e-4,1e-3"),
])
def test_single_run_and_sweep_job_share_the_run_dir(typed, swept):
    """A run typed by hand finds the directory the same run got inside a multirun (Hydra's
    sweeper rewrites values: 1e-1 -> 0.1), so finished sweep runs are skipped, not redone."""
    from poolbench.grid import grid_runs

    ids = ["seed=0", "pool=max", "data=cifar100", "model=vgg16"]
    single = compose_cfg(["experiment=smoke", *ids, typed]).run_dir
    jobs = grid_runs("smoke", [*ids, swept])
    assert len(jobs) == 2 and jobs[0].overrides[-1] != typed  # the sweeper did rewrite it
    assert str(jobs[0].run_dir) == single
    assert str(jobs[1].run_dir) != single


def test_resolve_precision_cpu(monkeypatch):
    import torch

    from poolbench.trainer import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    prec, msg = resolve_precision("auto", "auto")
    assert prec == "32-true" and "CPU" in msg
    assert resolve_precision("16-mixed", "cpu")[0] == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == ("bf16-mixed", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_precision("auto", "auto") == ("16-mixed", None)


def test_lr_schedule():
    from poolbench.module import lr_at

    total, base = 1000, 0.1
    assert lr_at(0, total, 0, base) == pytest.approx(base)
    assert lr_at(500, total, 0, base) == pytest.approx(base / 2)
    assert lr_at(1000, total, 0, base) == pytest.approx(0.0, abs=1e-12)
    lrs = [lr_at(s, total, 0, base) for s in range(total)]
    assert all(x >= y for x, y in zip(lrs, lrs[1:])), "cosine must decrease monotonically"
    # Warm-up: linear to base over 100 steps, then cosine over the remaining 900.
    assert lr_at(0, total, 100, base) == pytest.approx(base / 100)
    assert lr_at(99, total, 100, base) == pytest.approx(base)
    assert lr_at(100 + 450, total, 100, base) == pytest.approx(base / 2)
    assert lr_at(250, total, 0, base, min_lr=0.01) == pytest.approx(
        0.01 + 0.5 * 0.09 * (1 + math.cos(math.pi * 0.25)))


def test_console_scripts_resolve_and_are_documented():
    """Every console script in pyproject.toml names an importable callable and is documented
    (README.md or docs/); a script added without both fails here."""
    import importlib
    import tomllib

    root = Path(__file__).resolve().parents[1]
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"poolbench-train", "poolbench-eval", "poolbench-wandb-sync"} <= set(scripts)
    docs = (root / "README.md").read_text() + "".join(
        p.read_text() for p in sorted((root / "docs").glob("*.md")))
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), (name, target)
        assert name in docs, f"console script {name} is not documented in README.md or docs/"


@pytest.mark.parametrize("overrides,epochs,batches", [
    (["data=cifar100"], 2, 48),
    (["data=tinyimagenet"], 2, 4),
    # docs/smoke.md's Tiny ImageNet runs that learn: only Tiny ImageNet's budget changes
    (["data=tinyimagenet", "smoke_train_batches.tinyimagenet=15",
      "smoke_epochs.tinyimagenet=8"], 8, 15),
    (["data=cifar100", "smoke_train_batches.tinyimagenet=15", "smoke_epochs.tinyimagenet=8"],
     2, 48),
])
def test_smoke_budget_is_per_dataset(overrides, epochs, batches):
    cfg = compose_cfg(["experiment=smoke", *overrides])
    assert (cfg.trainer.max_epochs, cfg.trainer.limit_train_batches) == (epochs, batches)
