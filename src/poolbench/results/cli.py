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
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .checks import check_runs, data_report_markdown
from .collect import collect_files
from .runs import Collection, learned_params_frame, runs_csv
from .selection import filter_runs, parse_filters
from .wandb_source import collect_wandb


def _log(msg: str) -> None:
    print(f"[poolbench-results] {msg}", flush=True)


def write_report(coll: Collection, out_dir: str | Path, which: str = "final",
                 seeds=None, alpha: float = 0.05, baseline: str = "max",
                 figures: bool = True, log=_log) -> list[Path]:
    """Every table, figure and the data report for the runs of ``coll`` (one experiment)."""
    from . import figures as F
    from . import tables as T
    from .stats import compare_to_baseline

    log = log or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs, epochs = coll.runs, coll.epochs
    written: list[Path] = []
    sections: list[str] = []
    step = log

    rep = check_runs(runs, seeds)
    report_md = data_report_markdown(rep, len(runs), coll.source)
    (out / "data_report.md").write_text(report_md)
    written.append(out / "data_report.md")
    step("data report: " + ("all expected runs finished, one config per cell" if rep.ok() else
                            f"{len(rep.short_cells)} short cell(s), {len(rep.bad_runs)} bad "
                            f"run(s), {len(rep.mixed)} mixed config key(s)"))
    for w in coll.warnings:
        log(f"warning: {w}")

    (out / "runs.csv").write_text(runs_csv(runs))
    epochs.to_csv(out / "epochs.csv", index=False)
    lp = learned_params_frame(runs, epochs)
    lp.to_csv(out / "learned_params.csv", index=False)
    written += [out / "runs.csv", out / "epochs.csv", out / "learned_params.csv"]

    step("statistics: seed-level paired t-tests and image-level sign-flip tests vs " + baseline)
    stats = compare_to_baseline(runs, which, baseline, alpha)

    tables = []
    for model in T.order_models(runs["model"].dropna().unique()):
        tables.append(T.table1(runs, model, which, stats, baseline, alpha))
    if len(stats) and (stats["method"] != baseline).any():
        tables.append(T.significance_table(stats, which, baseline, alpha))
    else:
        step(f"significance table skipped: no finished runs of {baseline} and another method")
    arch = T.architecture_table(runs, which)
    if arch is not None:
        tables.append(arch)
    else:
        step("architecture table skipped: runs of only one model")
    sets = T.kt_sets(runs)
    for d, m, p in sets:
        tables.append(T.kt_table(runs, d, m, p, which))
    if not sets:
        step("K x T ablation skipped: no method was run at two or more (topk, threshold)")
    if len(T.overhead_frame(runs, baseline)):
        tables.append(T.overhead_table(runs, baseline))
    else:
        step("overhead table skipped: no finished runs")
    for t in tables:
        written += t.write(out)
        sections.append(t.markdown())
        step(f"table {t.name}")

    figs: list[tuple[str, list[Path] | None]] = []
    if figures:
        step("figure 1: each method's output on a small input")
        figs.append(("Figure 1: pooling outputs", F.fig1_pool_outputs(out)))
        figs.append(("Figure 2: accuracy per method", F.fig2_accuracy(runs, out, which, stats,
                                                                      baseline)))
        figs.append(("Figure 3: architecture sensitivity", F.fig3_architecture(runs, out, which)))
        figs.append(("Figure 4: K x T ablation", F.fig4_kt_heatmap(runs, sets, out, which)))
        figs.append(("Figure 5: learning curves", F.fig5_learning_curves(runs, epochs, out)))
        figs.append(("Figure 6: overhead", F.fig6_overhead(runs, out, baseline)))
        figs.append(("Figure 7: learned pooling parameters",
                     F.fig7_learned_params(runs, epochs, out)))
        for title, paths in figs:
            if paths:
                written += paths
                step(f"{title.split(':')[0].lower()}: " + ", ".join(p.name for p in paths))
            else:
                step(f"{title.split(':')[0].lower()} skipped: no data for it")

    index = [f"# poolbench results: {', '.join(coll.experiments()) or 'no runs'}", "",
             f"Source: {coll.source}. Test accuracy {T.WHICH_TEXT[which]}. "
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by poolbench-results from "
             f"{len(runs)} runs; every number below is computed from them.", "",
             report_md.replace("# Data report", "## Data report").replace("\n## ", "\n### "),
             "## Tables", ""]
    for s in sections:
        index += [s, ""]
    if figs:
        index += ["## Figures", ""]
        for title, paths in figs:
            pngs = [p for p in (paths or []) if p.suffix == ".png"]
            for p in pngs:
                index += [f"**{title}** ({p.stem})", "", f"![{title}]({p.name})", ""]
    (out / "report.md").write_text("\n".join(index))
    written.append(out / "report.md")
    return written


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
    if args.source == "wandb":
        if not args.project:
            raise SystemExit("poolbench-results: --source wandb needs --project (and "
                             "usually --entity)")
        if not (args.out or args.outputs):
            raise SystemExit("poolbench-results: --source wandb needs --out DIR or OUTPUTS_DIR")
        experiment = args.experiment[0] if len(args.experiment) == 1 else None
        coll = collect_wandb(args.entity, args.project, experiment=experiment, tags=args.tag,
                             api=api, log=_log)
    else:
        if not args.outputs:
            raise SystemExit("poolbench-results: give the outputs directory (OUTPUTS_DIR)")
        try:
            coll = collect_files(args.outputs, log=_log)
        except FileNotFoundError as e:
            raise SystemExit(f"poolbench-results: {e}") from None
    if args.experiment:
        coll = coll.select(coll.runs["experiment"].isin(args.experiment))
    coll = filter_runs(coll, filters)
    if coll.runs.empty:
        raise SystemExit("poolbench-results: no runs found" +
                         (f" matching {json.dumps(filters)}" if filters else ""))
    out_root = Path(args.out) if args.out else Path(args.outputs) / "report"
    experiments = coll.experiments()
    seeds = parse_seeds(args.seeds)
    written: list[Path] = []
    for exp in experiments:
        out = out_root if len(experiments) == 1 else out_root / exp
        _log(f"experiment {exp}: {int((coll.runs['experiment'] == exp).sum())} runs -> {out}")
        written += write_report(coll.experiment(exp), out, which=args.which, seeds=seeds,
                                alpha=args.alpha, baseline=args.baseline,
                                figures=not args.no_figures)
    _log(f"done in {time.time() - t0:.1f}s; wrote {len(written)} files:")
    for p in written:
        print(f"  {p}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
