"""The configs and lists that name pooling methods agree with the registry: the generated
files are up to date, the paper's grids list the paper's eight, the README names every method.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import pooling_contract as contract
from poolbench.config import CONF_DIR
from poolbench.pooling import available_pools

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen():
    return contract.generator()


def test_generated_configs_are_up_to_date(gen):
    """conf/pool/*.yaml and conf/experiment/extended_grid.yaml are what the generator writes."""
    files = gen.generated_files(CONF_DIR)
    assert len(files) == len(available_pools()) + 1
    for path, text in files.items():
        assert path.exists() and path.read_text() == text, \
            f"{path.relative_to(ROOT)} is out of date: run scripts/gen_pool_configs.py"


def test_extended_grid_leaves_out_only_fractional_max(gen):
    """The generated grid holds every method but the one that refuses 2x2/2 pools on even
    sizes; the others build in both models at both datasets' image sizes."""
    assert gen.grid_refusal("fractional_max") == "the pools of vgg16 at cifar100's 32 px"
    params = yaml.safe_load(gen.render_extended_grid())["hydra"]["sweeper"]["params"]
    assert params["pool"].split(",") == [p for p in available_pools() if p != "fractional_max"]


def experiment_pool_lists() -> dict[str, list[str]]:
    """Experiment name -> the pooling methods its sweep lists (those that list any)."""
    lists = {}
    for path in sorted((CONF_DIR / "experiment").glob("*.yaml")):
        params = yaml.safe_load(path.read_text()).get("hydra", {}).get("sweeper", {})
        pools = (params.get("params") or {}).get("pool")
        if pools is not None:
            lists[path.stem] = str(pools).split(",")
    return lists


def test_every_hand_written_pool_list_is_the_papers_eight():
    """paper_grid and smoke sweep the paper's eight, in the registry's order; the other lists
    of methods are the generated extended grid (checked above) and softpool_imagenet's
    SoftPool Table 2 pair (the original pooling vs softpool)."""
    lists = experiment_pool_lists()
    assert {"paper_grid", "smoke", "extended_grid", "softpool_imagenet"} <= set(lists)
    assert lists["softpool_imagenet"] == ["max", "softpool"]
    for experiment, pools in lists.items():
        if experiment not in ("extended_grid", "softpool_imagenet"):
            assert pools == available_pools(paper_only=True), experiment


def readme_method_table() -> list[str]:
    """The names in the README's method table (the rows after its "| name | method |"
    header), in order."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| name | method |"))
    names = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        names.append(re.match(r"\| `([^`]+)` \|", line).group(1))
    return names


def test_readme_method_table_names_every_method():
    """The README's method table documents every registry method, in registry order (it is
    documentation: a new method's row is written by hand)."""
    assert readme_method_table() == available_pools(), \
        "README.md's method table and the registry differ"
