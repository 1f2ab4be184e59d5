"""poolbench-results: tables, statistics and figures from finished runs.

    poolbench-results outputs/paper                       # -> outputs/paper/report/
    poolbench-results outputs/paper --which best_val --seeds 0,1,2
    poolbench-results --source wandb --entity me --project poolbench --experiment paper \\
        --out report/
    poolbench-results outputs --filter model.name=vgg16 --filter optim.lr=0.1

Reads every run under OUTPUTS_DIR (or a W&B project), says what is missing, and writes
tables (Markdown, LaTeX, CSV), figures (PNG, PDF) and an index, report.md, under
``<OUTPUTS_DIR>/report/`` (``--out`` to change), one sub-directory per experiment when
OUTPUTS_DIR holds several. The paths written are printed at the end.

This module parses the command line; :mod:`~poolbench.results.report` does the work.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .report import read_runs, say, select_runs, write_reports
from .selection import parse_filters


def parse_seeds(text: str | None):
    if not text:
        return None
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise SystemExit(f"--seeds expects comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="poolbench-results", description=__doc__.split("\n\n")[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outputs", nargs="?", help="outputs directory (the whole outputs/ or one "
                   "experiment's outputs/<experiment>); with --source wandb, only where the "
                   "report goes unless --out is given")
    p.add_argument("--out", help="where to write (default: <OUTPUTS_DIR>/report)")
    p.add_argument("--which", choices=("final", "best_val"), default="final",
                   help="test accuracy of the final weights or of the best-validation "
                   "checkpoint (default: final); captions say which")
    p.add_argument("--seeds", help="expected seeds, e.g. 0,1,2 (default: every seed seen)")
    p.add_argument("--baseline", default="max", help="method the others are compared with")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (Holm)")
    p.add_argument("--experiment", action="append", default=[],
                   help="only this experiment (repeatable)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="only runs whose resolved config has KEY=VALUE (dotted key, e.g. "
                   "model.name=vgg16, pool.topk=2; repeatable)")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.add_argument("--source", choices=("files", "wandb"), default="files")
    p.add_argument("--entity", help="W&B entity (--source wandb)")
    p.add_argument("--project", help="W&B project (--source wandb)")
    p.add_argument("--tag", action="append", default=[],
                   help="W&B: only runs with this tag (repeatable)")
    return p


def main(argv=None, api=None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.time()
    try:
        filters = parse_filters(args.filter)
    except ValueError as e:
        raise SystemExit(f"poolbench-results: {e}") from None
    coll = select_runs(_read(args, api), args.experiment, filters)
    if coll.runs.empty:
        raise SystemExit("poolbench-results: no runs found" +
                         (f" matching {json.dumps(filters)}" if filters else ""))
    out_root = Path(args.out) if args.out else Path(args.outputs) / "report"
    written = write_reports(coll, out_root, which=args.which, seeds=parse_seeds(args.seeds),
                            alpha=args.alpha, baseline=args.baseline,
                            figures=not args.no_figures)
    say(f"done in {time.time() - t0:.1f}s; wrote {len(written)} files:")
    for p in written:
        print(f"  {p}", flush=True)
    return 0


def _read(args, api):
    """The runs the arguments name (``api``: a W&B API object instead of ``wandb.Api()``)."""
    if args.source == "wandb":
        if not args.project:
            raise SystemExit("poolbench-results: --source wandb needs --project (and "
                             "usually --entity)")
        if not (args.out or args.outputs):
            raise SystemExit("poolbench-results: --source wandb needs --out DIR or OUTPUTS_DIR")
        experiment = args.experiment[0] if len(args.experiment) == 1 else None
        return read_runs("wandb", entity=args.entity, project=args.project,
                         experiment=experiment, tags=args.tag, api=api)
    if not args.outputs:
        raise SystemExit("poolbench-results: give the outputs directory (OUTPUTS_DIR)")
    try:
        return read_runs("files", args.outputs)
    except FileNotFoundError as e:
        raise SystemExit(f"poolbench-results: {e}") from None


if __name__ == "__main__":
    sys.exit(main())
