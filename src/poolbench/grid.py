"""poolbench-grid: the runs of an experiment, their run directories and their status.

    poolbench-grid paper_grid                      # table: index, status, run dir, overrides
    poolbench-grid paper_grid --count              # number of runs (e.g. for sbatch --array)
    poolbench-grid paper_grid --index 7            # overrides of run 7, one line, for a shell
    poolbench-grid paper_grid seed=0 trainer.max_epochs=20 --summary

Runs are enumerated exactly as Hydra's basic sweeper does for
``poolbench-train -m experiment=<name> [overrides]``: the experiment's
``hydra.sweeper.params``, then the command-line overrides (which replace a swept key).
Status of a run (:data:`poolbench.rundir.STATUSES`): done | diverged | failed
(results.json), running (a live launch owns it: its lease, owner.json), interrupted (a
last.ckpt but no results.json), incomplete (a directory with neither: killed in its first
epoch), missing (no directory).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import rundir
from .config import CONF_DIR, is_config_group, register_resolvers

register_resolvers()

STATUSES = tuple(rundir.STATUSES)


@dataclass
class GridRun:
    index: int
    overrides: list[str]
    _run_dir: Path | None = None

    @property
    def run_dir(self) -> Path:
        """The run directory, composed with Hydra as poolbench-train does (~0.1 s; for many
        runs, :func:`resolve_run_dirs` shares compositions)."""
        if self._run_dir is None:
            resolve_run_dirs([self])
        return self._run_dir

    @property
    def status(self) -> str:
        """One of :data:`STATUSES` (:func:`poolbench.rundir.run_status`)."""
        return rundir.run_status(self.run_dir)


def _split_overrides(overrides: list[str]):
    """(config-group choices, plain ``key=value`` overrides of config values), or None when an
    override needs Hydra itself (``+``/``~`` prefixes, sweeps, ``hydra.*``, packages)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups, values = [], []
    for text, o in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        if o.key_or_group.startswith("hydra") or o.package is not None or \
                o.is_sweep_override() or o.get_key_element() != o.key_or_group:
            return None
        if is_config_group(o.key_or_group):
            groups.append(text)
        else:
            values.append((o.key_or_group, o.value()))
    return groups, values


def composed_configs(runs: list[GridRun]):
    """Yield ``(run, cfg)``: each run's config as ``poolbench-train`` composes it (with the
    Hydra config, set as the current one while the caller holds it).

    Runs that differ only in plain value overrides (``seed=1``, ``pool.topk=3``) share one
    Hydra composition of their config-group choices; each run's values are then set on a
    copy, with ``hydra.overrides.task`` (what the run directory's hash covers) set to the
    run's overrides, as Hydra does. A run whose overrides need more (``+key``, ``~key``, an
    unknown key) is composed in full. ``tests/test_grid.py`` checks both give the same
    directories.
    """
    import copy

    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    base: dict[tuple[str, ...], object] = {}
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        for run in runs:
            split = _split_overrides(run.overrides)
            cfg = None
            if split is not None:
                groups, values = split
                key = tuple(sorted(groups))
                if key not in base:
                    base[key] = compose("train", overrides=groups, return_hydra_config=True)
                cfg = copy.deepcopy(base[key])
                for k, v in values:
                    if OmegaConf.select(cfg, k, default="__missing__") == "__missing__":
                        cfg = None  # not a key of this config: Hydra's own error, below
                        break
                    OmegaConf.update(cfg, k, v, merge=True)  # as Hydra applies overrides
                if cfg is not None:
                    with open_dict(cfg):
                        cfg.hydra.overrides.task = list(run.overrides)
            if cfg is None:
                cfg = compose("train", overrides=run.overrides, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            yield run, cfg


def resolve_run_dirs(runs: list[GridRun]) -> None:
    """Set every run's directory, composed as ``poolbench-train`` would
    (:func:`composed_configs`)."""
    for run, cfg in composed_configs([r for r in runs if r._run_dir is None]):
        run._run_dir = Path(cfg.run_dir)


def _none_started(runs: list[GridRun]) -> bool:
    """Whether no run can have a directory yet: the first run's experiment folder
    (``<paths.outputs>/<experiment_name>``) does not exist, and every run has the same
    overrides of the outputs folder and experiment name (so that folder is every run's).
    One composition instead of one per group of runs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()

    def placement(run: GridRun) -> list[str]:
        keys = [o.key_or_group.lstrip("+~") for o in parser.parse_overrides(run.overrides)]
        return [text for text, k in zip(run.overrides, keys)
                if k in ("experiment_name", "paths") or k.startswith("paths.")]

    if not runs or any(placement(r) != placement(runs[0]) for r in runs[1:]):
        return False
    return not rundir.experiment_dir(runs[0].run_dir).exists()


def experiments() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def grid_runs(experiment: str, overrides: list[str] | None = None) -> list[GridRun]:
    """The runs ``poolbench-train -m experiment=<experiment> <overrides>`` launches."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if experiment not in experiments():
        raise ValueError(f"unknown experiment {experiment!r}; choose one of {experiments()}")
    overrides = list(overrides or [])
    base = [f"experiment={experiment}"]
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        # The sweep parameters come from the experiment; non-sweep overrides may change them.
        plain = [o for o in overrides if "," not in o.partition("=")[2]]
        cfg = compose("train", overrides=base + plain, return_hydra_config=True)
        params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
        parsed = OverridesParser.create().parse_overrides(params + overrides)
        jobs = BasicSweeper.split_arguments(parsed, None)[0]
    return [GridRun(i, base + job) for i, job in enumerate(jobs)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="poolbench-grid", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="experiments: " + ", ".join(experiments()))
    parser.add_argument("experiment", help="a config in conf/experiment/")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for poolbench-train")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--count", action="store_true", help="print the number of runs")
    what.add_argument("--index", type=int, metavar="I",
                      help="print the overrides of run I (0-based), shell-quoted on one line")
    what.add_argument("--summary", action="store_true", help="print only the status counts")
    what.add_argument("--json", action="store_true", help="print the runs as JSON lines")
    parser.add_argument("--status", choices=STATUSES, action="append",
                        help="list only runs with this status (repeatable)")
    args = parser.parse_args(argv)
    try:
        runs = grid_runs(args.experiment, args.overrides)
    except ValueError as e:
        parser.error(str(e))
    if args.count:
        print(len(runs))
        return 0
    if args.index is not None:
        if not 0 <= args.index < len(runs):
            parser.error(f"--index {args.index} is out of range: {args.experiment} has "
                         f"{len(runs)} runs (0..{len(runs) - 1})")
        print(shlex.join(runs[args.index].overrides))
        return 0
    if args.summary and _none_started(runs):
        statuses = ["missing"] * len(runs)  # (without composing every run's directory)
    else:
        resolve_run_dirs(runs)
        statuses = [r.status for r in runs]
    if args.summary:
        counts = Counter(statuses)
        print(f"{args.experiment}: {len(runs)} runs: " + ", ".join(
            f"{counts[s]} {s}" for s in STATUSES if counts[s]))
        return 0
    for run, status in zip(runs, statuses):
        if args.status and status not in args.status:
            continue
        if args.json:
            print(json.dumps({"index": run.index, "status": status, "run_dir": str(run.run_dir),
                              "overrides": run.overrides}))
        else:
            print(f"{run.index:4d}  {status:<11}  {run.run_dir}  {' '.join(run.overrides[1:])}")
    counts = Counter(statuses)
    print(f"# {len(runs)} runs: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
