"""The data checks: what is missing, failed, diverged, mixed or duplicated among the collected
runs (:func:`check_runs` -> :class:`DataReport`), and the data report that says so
(:func:`data_report_markdown`, ``data_report.md``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable

import pandas as pd

from ..rundir import DONE
from .configs import comparable_config, config_differences
from .labels import order_methods
from .selection import by_finish
from .table_format import md

CELL = ["experiment", "data", "model", "method"]


@dataclass
class DataReport:
    """What :func:`check_runs` found (each a DataFrame; empty when all is well)."""

    expected_seeds: list[int]
    short_cells: pd.DataFrame    # cells with fewer usable runs than expected seeds
    bad_runs: pd.DataFrame       # failed, diverged, interrupted, incomplete runs
    mixed: pd.DataFrame          # cells whose runs differ in config: key, values
    variants: pd.DataFrame       # K x T ablation variants (kept out of the main tables)
    duplicates: pd.DataFrame     # more than one usable run for the same cell and seed
                                 # (run_ids in finishing order: the last one is used)

    def ok(self) -> bool:
        return all(len(x) == 0 for x in (self.short_cells, self.bad_runs, self.mixed,
                                          self.duplicates))


# ---- the checks --------------------------------------------------------------------------

def check_runs(runs: pd.DataFrame, seeds: Iterable[int] | None = None) -> DataReport:
    """Missing seeds, bad runs and mixed configs, per experiment.

    The expected grid of an experiment is every data x model x method (main methods, not
    K x T ablation variants) seen in it, each with every expected seed: ``seeds`` if given,
    else the union of the seeds seen in that experiment. K x T variants are expected to
    have every seed too, but only in the data/model cells where they were run.
    """
    seeds = sorted(set(int(s) for s in seeds)) if seeds is not None else None
    short, mixed, dup = [], [], []
    all_seeds: set[int] = set()
    for exp, er in runs.groupby("experiment", sort=True):
        exp_seeds = seeds if seeds is not None else sorted(int(s) for s in er["seed"].dropna().unique())
        all_seeds.update(exp_seeds)
        for d, m, meth in _expected_cells(er):
            cell = er[(er["data"] == d) & (er["model"] == m) & (er["method"] == meth)]
            where = dict(zip(CELL, (exp, d, m, meth)))
            usable = cell[cell["status"] == DONE]
            short += _short(cell, usable, where, exp_seeds)
            dup += _duplicates(usable, where)
            mixed += _mixed(cell, where)
    return DataReport(
        expected_seeds=seeds if seeds is not None else sorted(all_seeds),
        short_cells=pd.DataFrame(short, columns=[*CELL, "n", "expected", "seeds_missing",
                                                 "seeds_without_run_dir"]),
        bad_runs=_bad_runs(runs),
        mixed=pd.DataFrame(mixed, columns=[*CELL, "key", "values"]),
        variants=_variants(runs),
        duplicates=pd.DataFrame(dup, columns=[*CELL, "seed", "n", "run_ids"]),
    )


def _expected_cells(er: pd.DataFrame) -> list[tuple]:
    """(data, model, method) an experiment should have: every data x model x main method seen
    in it, and each K x T variant where it was run."""
    main = er[~er["kt_ablation"].astype(bool)]
    cells = [(d, m, meth) for d in sorted(er["data"].dropna().unique())
             for m in sorted(er["model"].dropna().unique())
             for meth in order_methods(main["method"].dropna().unique())]
    kt = er[er["kt_ablation"].astype(bool)]
    return cells + sorted(set(zip(kt["data"], kt["model"], kt["method"])))


def _short(cell: pd.DataFrame, usable: pd.DataFrame, where: dict, seeds: list[int]) -> list[dict]:
    """The cell, if it lacks a finished run of an expected seed (and which never started)."""
    have = sorted(int(s) for s in usable["seed"].dropna().unique())
    missing = [s for s in seeds if s not in have]
    if not missing:
        return []
    no_dir = [s for s in missing if s not in set(cell["seed"].dropna().astype(int))]
    return [{**where, "n": len(have), "expected": len(seeds), "seeds_missing": missing,
             "seeds_without_run_dir": no_dir}]


def _duplicates(usable: pd.DataFrame, where: dict) -> list[dict]:
    """Seeds of the cell that finished more than once, their runs in finishing order."""
    counts = usable["seed"].value_counts()
    return [{**where, "seed": int(s), "n": int(n),
             "run_ids": list(by_finish(usable[usable["seed"] == s])["run_id"])}
            for s, n in counts[counts > 1].items()]


def _mixed(cell: pd.DataFrame, where: dict) -> list[dict]:
    """Config keys (those that change a result) whose values differ among the cell's runs."""
    configs = [comparable_config(c) for c in cell["config"] if isinstance(c, dict)]
    if len(configs) < 2:
        return []
    return [{**where, "key": key, "values": values}
            for key, values in config_differences(configs).items()]


def _bad_runs(runs: pd.DataFrame) -> pd.DataFrame:
    bad = runs[runs["status"] != DONE]
    bad = bad[[*CELL, "seed", "status", "error", "run_id"]]
    return bad.assign(error=bad["error"].map(_last_line)).reset_index(drop=True)


def _variants(runs: pd.DataFrame) -> pd.DataFrame:
    """How many runs each K x T ablation variant has."""
    kt = runs["kt_ablation"].astype(bool)
    if not kt.any():
        return pd.DataFrame(columns=["experiment", "data", "model", "pool", "variant", "runs"])
    return runs[kt].groupby(["experiment", "data", "model", "pool", "variant"],
                            sort=False).size().rename("runs").reset_index()


def _last_line(err) -> str:
    if not isinstance(err, str) or not err.strip():
        return ""
    return err.strip().splitlines()[-1][:200]


# ---- the data report -----------------------------------------------------------------------

def data_report_markdown(rep: DataReport, n_runs: int, source: str = "") -> str:
    """What is missing or suspicious, as Markdown (empty sections say 'none')."""
    seeds = ", ".join(str(s) for s in rep.expected_seeds) or "none"
    out = ["# Data report", "",
           f"{n_runs} runs collected{f' from {source}' if source else ''}; expected seeds: "
           f"{seeds}."]
    out += _report_section(
        "Cells with fewer finished runs than expected seeds", rep.short_cells,
        "| experiment | data | model | method | finished | expected | seeds missing "
        "| of which never started |\n|---|---|---|---|---:|---:|---|---|",
        lambda r: f"| {r['experiment']} | {r['data']} | {r['model']} | {md(r['method'])} "
                  f"| {r['n']} | {r['expected']} | {_seeds(r['seeds_missing'])} "
                  f"| {_seeds(r['seeds_without_run_dir'])} |")
    out += _report_section(
        "Failed, diverged, interrupted or incomplete runs", rep.bad_runs,
        "| status | experiment | data | model | method | seed | error | run |\n"
        "|---|---|---|---|---|---:|---|---|",
        lambda r: f"| {r['status']} | {r['experiment']} | {r['data']} | {r['model']} | "
                  f"{md(r['method'])} | {r['seed']} | {md(r['error'] or '')} | "
                  f"{md(r['run_id'])} |")
    out += _report_section(
        "Cells mixing runs of different configs", rep.mixed,
        "| experiment | data | model | method | key | values |\n|---|---|---|---|---|---|",
        lambda r: f"| {r['experiment']} | {r['data']} | {r['model']} | {md(r['method'])} "
                  f"| `{r['key']}` | "
                  f"{md(', '.join(json.dumps(v, default=str) for v in r['values']))} |")
    out += _report_section(
        "Same cell and seed finished more than once", rep.duplicates, None,
        lambda r: f"- {r['experiment']}/{r['data']}/{r['model']}/{r['method']} seed "
                  f"{r['seed']}: {r['n']} runs ({', '.join(r['run_ids'])}, in finishing "
                  "order); every table, test and figure uses the last listed")
    out += _report_section(
        "K x T ablation variants (kept out of the main tables)", rep.variants, None,
        lambda r: f"- {r['experiment']}/{r['data']}/{r['model']}/{r['pool']} "
                  f"({r['variant']}): {r['runs']} run(s)")
    return "\n".join(out) + "\n"


def _report_section(title: str, frame: pd.DataFrame, head: str | None, line) -> list[str]:
    """A data report section: its title, then 'none' or ``head`` (a Markdown table's header,
    None for a list) and ``line(row)`` for every row of ``frame``."""
    out = ["", f"## {title}", ""]
    if frame.empty:
        return out + ["none"]
    if head is not None:
        out += head.split("\n")
    return out + [line(r) for _, r in frame.iterrows()]


def _seeds(seeds) -> str:
    return ", ".join(str(s) for s in seeds) if seeds else "—"
