"""poolbench.results.wandb_source: reading runs from the W&B API, with a fake API (no server).

The fakes carry only what the reader touches: ``api.runs(path, filters=...)`` and, per run,
``summary`` (or ``summary_metrics``), ``config``, ``id``, ``state`` and ``scan_history()``.
tests/test_results.py checks the same numbers come out of W&B as out of the run directories.
"""

from __future__ import annotations

import pandas as pd
import pytest

from poolbench.rundir import STATUSES
from poolbench.results.cli import main as cli_main
from poolbench.results.wandb_source import (
    WANDB_STATE, collect_wandb, run_results, unflatten, wandb_filters,
)

CONFIG = {"experiment_name": "exp", "data": {"name": "cifar100"}, "model": {"name": "vgg16"},
          "pool": {"name": "max"}, "seed": 0, "optim": {"lr": 0.1}}


class Run:
    def __init__(self, id, summary=None, config=None, state="finished", history=()):
        self.id, self.state = id, state
        self.summary = dict(summary or {})
        self.config = dict(CONFIG if config is None else config)
        self._history = list(history)

    def scan_history(self):
        if isinstance(self._history, Exception):
            raise self._history
        return iter(self._history)


class Api:
    def __init__(self, runs):
        self._runs = runs
        self.calls = []

    def runs(self, path, filters=None, **kwargs):
        self.calls.append((path, filters))
        return list(self._runs)


def done(id, pool="max", seed=0, acc=0.5, **extra):
    """A finished run as poolbench-train leaves it in W&B: results.json's scalars in the
    summary next to W&B's own keys, the resolved config as the config."""
    cfg = {**CONFIG, "pool": {"name": pool}, "seed": seed}
    summary = {"status": "done", "experiment": "exp", "data": "cifar100", "model": "vgg16",
               "pool": pool, "seed": seed, "test_top1_final": acc, "test_top1_best_val": acc,
               "_step": 99, "_runtime": 12.5, **extra}
    return Run(id, summary, cfg)


def test_run_results_from_summary_config_and_state():
    r = run_results(done("a1"))
    assert r["status"] == "done" and r["test_top1_final"] == 0.5
    assert not any(k.startswith("_") for k in r)                  # W&B's own keys left out
    assert r["wandb_id"] == "a1" and r["config"]["optim"] == {"lr": 0.1}
    # a config logged flat ("data/name") is unflattened; identity comes from it
    flat = {"experiment_name": "exp", "data/name": "tinyimagenet", "model/name": "resnet18",
            "pool/name": "avg", "seed": 4}
    r = run_results(Run("b2", {}, flat, state="killed"))
    assert (r["experiment"], r["data"], r["model"], r["pool"], r["seed"]) == \
        ("exp", "tinyimagenet", "resnet18", "avg", 4)
    assert r["config"]["data"] == {"name": "tinyimagenet"}
    # no status in the summary: W&B's run state says how far it got
    assert r["status"] == "interrupted"
    assert run_results(Run("c", {}, state="crashed"))["status"] == "failed"
    assert run_results(Run("c", {}, state="running"))["status"] == "incomplete"
    assert run_results(Run("c", {}, state="something new"))["status"] == "incomplete"
    assert set(WANDB_STATE.values()) <= set(STATUSES)
    # the summary's own identity and id win over the config's and the run's
    r = run_results(Run("d", {"seed": 1, "wandb_id": "other"}, {**CONFIG, "seed": 7}))
    assert (r["seed"], r["wandb_id"], r["pool"]) == (1, "other", "max")


@pytest.mark.parametrize("form", ["summary_metrics", "json_dict", "mapping"])
def test_summary_forms_of_the_api(form):
    run = Run("x", config=CONFIG)
    values = {"status": "done", "test_top1_final": 0.25}
    if form == "summary_metrics":
        run.summary_metrics = values
        run.summary = {"status": "failed"}                      # summary_metrics wins
    elif form == "json_dict":
        class Summary:                                          # like wandb's HTTPSummary
            _json_dict = values
        run.summary = Summary()
    else:
        run.summary = values
    r = run_results(run)
    assert (r["status"], r["test_top1_final"]) == ("done", 0.25)


def test_unflatten_and_filters():
    assert unflatten({"a/b": 1, "a/c/d": 2, "e": 3}) == {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    assert wandb_filters() is None
    assert wandb_filters("exp") == {"config.experiment_name": "exp"}
    assert wandb_filters(tags=["t"]) == {"tags": {"$in": ["t"]}}
    assert wandb_filters("exp", ["t", "u"]) == {"$and": [
        {"config.experiment_name": "exp"}, {"tags": {"$in": ["t"]}}, {"tags": {"$in": ["u"]}}]}


def test_collect_wandb_skips_other_runs_and_logs_progress():
    other = Run("zz", {"loss": 1.0}, {"lr": 0.1})                 # not a poolbench run
    runs = [done(f"r{i}", seed=i) for i in range(30)]
    api, lines = Api([other, *runs]), []
    coll = collect_wandb("me", "proj", experiment="exp", tags=["t"], api=api, history=False,
                         log=lines.append)
    assert api.calls == [("me/proj", {"$and": [{"config.experiment_name": "exp"},
                                               {"tags": {"$in": ["t"]}}]})]
    assert len(coll.runs) == 30 and coll.source == "wandb:me/proj"
    assert sorted(coll.runs["run_id"]) == sorted(f"wandb:me/proj/r{i}" for i in range(30))
    assert list(coll.runs["seed"]) == list(range(30))
    assert coll.epochs.empty and coll.warnings == []
    assert lines[0].startswith("querying W&B runs of me/proj with filters {")
    assert "  read 25 runs" in lines                 # counts every run the API returned
    assert lines[-1] == "collected 30 runs from W&B (30 done)"
    # without an entity the path is the project
    coll = collect_wandb(None, "proj", api=Api([done("a")]), history=False)
    assert coll.runs["run_id"].tolist() == ["wandb:proj/a"]


def test_history_becomes_epoch_rows_and_a_broken_one_is_only_logged():
    history = [{"epoch": 0, "_step": 0, "val/acc": 0.1}, {"epoch": 0, "_step": 1, "train/loss": 3.0},
               {"epoch": 1, "_step": 2, "val/acc": 0.2}, {"epoch": 1, "_step": 3, "train/loss": 2.0},
               {"epoch": 2, "_step": 4, "test/acc": 0.2}]
    good = done("good")
    good._history = history
    broken = done("broken", pool="avg")
    broken._history = RuntimeError("HTTP 502")
    lines = []
    coll = collect_wandb("me", "proj", api=Api([good, broken]), log=lines.append)
    assert "  wandb:me/proj/broken: could not read history (HTTP 502)" in lines
    assert len(coll.runs) == 2                                   # the broken run is kept
    assert set(coll.epochs["run_id"]) == {"wandb:me/proj/good"}
    ep = coll.epochs.drop(columns="run_id")
    assert ep.to_dict("list") == {"epoch": [0, 1], "val/acc": [0.1, 0.2], "train/loss": [3.0, 2.0]}


def test_cli_passes_experiment_and_tags_to_the_api(tmp_path, capsys):
    api = Api([done("m0"), done("a0", pool="avg", acc=0.55)])
    assert cli_main(["--source", "wandb", "--entity", "me", "--project", "proj", "--experiment",
                     "exp", "--tag", "paper", "--out", str(tmp_path), "--no-figures"],
                    api=api) == 0
    assert api.calls == [("me/proj", {"$and": [{"config.experiment_name": "exp"},
                                               {"tags": {"$in": ["paper"]}}]})]
    out = capsys.readouterr().out
    assert "[poolbench-results] collected 2 runs from W&B (2 done)" in out
    t1 = pd.read_csv(tmp_path / "table1_vgg16.csv").set_index("method")
    assert t1.loc["avg", "top1_mean_pct"] == pytest.approx(55.0)
    assert "Source: wandb:me/proj." in (tmp_path / "report.md").read_text()
    # two experiments: no server-side experiment filter, the selection happens here
    api = Api([done("m0")])
    with pytest.raises(SystemExit, match="no runs found"):
        cli_main(["--source", "wandb", "--project", "proj", "--experiment", "a",
                  "--experiment", "b", "--out", str(tmp_path / "x")], api=api)
    assert api.calls == [("proj", None)]
