"""Adding a pooling method is its class, one registry line and the generated configs.

A throw-away method is registered for the duration of one test (and removed afterwards):
the generator writes its config and puts it in the extended grid, Hydra composes it, and the
generic per-method contract (tests/pooling_contract.py) holds for it, with no test written
for it. docs/adding_a_method.md walks through the same steps.
"""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

import pooling_contract as contract
from poolbench.config import CONF_DIR, register_resolvers
from poolbench.pooling import POOLS, available_pools, create_pool
from poolbench.pooling.base import PoolBase, check_range
from poolbench.pooling.functional import max_pool

NAME = "midrange"


class MidRangePool2d(PoolBase):
    r"""Mid-range pooling, a throw-away test method: :math:`Y = w \max(X) + (1 - w) \min(X)`.

    ``weight`` (w, in [0, 1]) weighs the window's max against its min; padding never wins.
    """

    name = NAME
    citation = "none: tests/test_pooling_new_method.py"

    def __init__(self, channels, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                 weight: float = 0.5):
        super().__init__(channels, kernel_size, stride, padding, ceil_mode)
        self.weight = float(check_range("weight", weight, 0, 1))

    def forward(self, x):
        hi, lo = max_pool(x, self.geometry), -max_pool(-x, self.geometry)
        return torch.lerp(lo, hi, self.weight)

    def hparams_repr(self):
        return f"weight={self.weight}"


@pytest.fixture
def registered(monkeypatch):
    """The throw-away method, registered as a line in ``_CLASSES`` would register it."""
    assert NAME not in POOLS
    monkeypatch.setitem(POOLS, NAME, MidRangePool2d)
    yield NAME
    # monkeypatch removes it again


@pytest.fixture
def conf(tmp_path, registered):
    """A copy of conf/ with the generator run on it while the method is registered."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    contract.generator().main(["--conf", str(conf)])
    return conf


def compose_from(conf, overrides):
    register_resolvers()
    with initialize_config_dir(str(conf), version_base=None):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg


def test_registered_method_is_a_method_like_the_others(registered):
    assert available_pools()[-1] == NAME and NAME not in available_pools(paper_only=True)
    layer = create_pool(NAME, 4, weight=1.0)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(layer(x), max_pool(x, layer.geometry))


def test_generator_writes_its_config_and_grids_it(conf):
    data = yaml.safe_load((conf / "pool" / f"{NAME}.yaml").read_text())
    assert data == {"name": NAME, "weight": 0.5}
    grid = yaml.safe_load((conf / "experiment" / "extended_grid.yaml").read_text())
    pools = grid["hydra"]["sweeper"]["params"]["pool"].split(",")
    assert pools[-1] == NAME and "fractional_max" not in pools


def test_hydra_composes_it_alone_and_in_the_grid(conf):
    cfg = compose_from(conf, [f"pool={NAME}", "pool.weight=0.25"])
    assert cfg.pool.name == NAME and cfg.pool.weight == 0.25
    assert "/" + NAME in cfg.run_dir
    grid = compose_from(conf, ["experiment=extended_grid"])
    assert NAME in grid.hydra.sweeper.params.pool.split(",")


def test_the_generic_contract_holds_for_it(registered):
    contract.check_contract(NAME)


@pytest.mark.parametrize("broken", ["nan", "dtype"])
def test_the_contract_catches_a_broken_method(registered, monkeypatch, broken):
    """The contract can fail: a method returning NaN, or fp64 for fp32 input, does not pass."""
    def forward(self, x):
        y = max_pool(x, self.geometry)
        return y * float("nan") if broken == "nan" else y.double()

    monkeypatch.setattr(MidRangePool2d, "forward", forward)
    with pytest.raises(AssertionError):
        contract.check_contract(NAME)
