"""The report: collected runs -> every table, figure and data file, and report.md indexing them.

:func:`read_runs` collects the runs (run directories, or W&B: imported only then),
:func:`select_runs` keeps those asked for, :func:`write_reports` writes one report per
experiment and :func:`write_report` one report: the data report and data files, the
statistics, the tables, the figures and ``report.md``. Progress goes to ``log`` as plain
lines (:func:`say` prints them the way ``poolbench-results`` does). The command line itself
is :mod:`~poolbench.results.cli`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from .checks import check_runs, data_report_markdown
from .collect import collect_files
from .labels import order_models
from .runs import Collection, learned_params_frame, runs_csv
from .selection import filter_runs
from .stats import compare_to_baseline
from .table_format import Table
from .tables import (
    WHICH_TEXT, architecture_table, kt_sets, kt_table, overhead_frame, overhead_table,
    significance_table, table1,
)

Log = Callable[[str], None]
FigureResult = tuple[str, "list[Path] | None"]  # (title, paths written or None)


def say(msg: str) -> None:
    """A progress line of poolbench-results."""
    print(f"[poolbench-results] {msg}", flush=True)


def read_runs(source: str = "files", outputs: str | Path | None = None, entity: str | None = None,
              project: str | None = None, experiment: str | None = None,
              tags: Iterable[str] = (), api=None, log: Log | None = say) -> Collection:
    """The runs under ``outputs`` (``source="files"``) or of a W&B project (``"wandb"``)."""
    if source == "wandb":
        from .wandb_source import collect_wandb

        return collect_wandb(entity, project, experiment=experiment, tags=tags, api=api, log=log)
    return collect_files(outputs, log=log)


def select_runs(coll: Collection, experiments: Iterable[str] = (),
                filters: dict[str, Any] | None = None) -> Collection:
    """The runs of ``experiments`` (all when empty) whose config matches ``filters``."""
    experiments = list(experiments)
    if experiments:
        coll = coll.select(coll.runs["experiment"].isin(experiments))
    return filter_runs(coll, filters or {})


def write_reports(coll: Collection, out_root: str | Path, log: Log | None = say,
                  **options) -> list[Path]:
    """:func:`write_report` for each experiment of ``coll``: into ``out_root`` when there is
    one, else into ``out_root/<experiment>``. ``options``: those of :func:`write_report`."""
    out_root = Path(out_root)
    experiments = coll.experiments()
    written: list[Path] = []
    for exp in experiments:
        out = out_root if len(experiments) == 1 else out_root / exp
        if log:
            log(f"experiment {exp}: {int((coll.runs['experiment'] == exp).sum())} runs -> {out}")
        written += write_report(coll.experiment(exp), out, log=log, **options)
    return written


def write_report(coll: Collection, out_dir: str | Path, which: str = "final",
                 seeds=None, alpha: float = 0.05, baseline: str = "max",
                 figures: bool = True, log: Log | None = say) -> list[Path]:
    """Every table, figure and the data report for the runs of ``coll`` (one experiment)."""
    log = log or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report_md, written = write_data(coll, out, seeds, log)
    log("statistics: seed-level paired t-tests and image-level sign-flip tests vs " + baseline)
    stats = compare_to_baseline(coll.runs, which, baseline, alpha)
    kt = kt_sets(coll.runs)
    tables = build_tables(coll.runs, which, stats, baseline, alpha, kt, log)
    for t in tables:
        written += t.write(out)
        log(f"table {t.name}")
    figs = draw_figures(coll, out, which, stats, baseline, kt, log) if figures else []
    for _, paths in figs:
        written += paths or []
    (out / "report.md").write_text(index_markdown(coll, which, report_md, tables, figs))
    written.append(out / "report.md")
    return written


def write_data(coll: Collection, out: Path, seeds, log: Log) -> tuple[str, list[Path]]:
    """The data report (``data_report.md``; returned as text too) and the data files
    (``runs.csv``, ``epochs.csv``, ``learned_params.csv``), with the warnings of collection."""
    rep = check_runs(coll.runs, seeds)
    report_md = data_report_markdown(rep, len(coll.runs), coll.source)
    (out / "data_report.md").write_text(report_md)
    log("data report: " + ("all expected runs finished, one config per cell" if rep.ok() else
                           f"{len(rep.short_cells)} short cell(s), {len(rep.bad_runs)} bad "
                           f"run(s), {len(rep.mixed)} mixed config key(s)"))
    for w in coll.warnings:
        log(f"warning: {w}")
    (out / "runs.csv").write_text(runs_csv(coll.runs))
    coll.epochs.to_csv(out / "epochs.csv", index=False)
    learned_params_frame(coll.runs, coll.epochs).to_csv(out / "learned_params.csv", index=False)
    return report_md, [out / name for name in ("data_report.md", "runs.csv", "epochs.csv",
                                               "learned_params.csv")]


def build_tables(runs: pd.DataFrame, which: str, stats: pd.DataFrame, baseline: str,
                 alpha: float, sets: list, log: Log) -> list[Table]:
    """Every table the runs allow: Table 1 per model, significance, architecture, the K x T
    ablations (one per (data, model, pool) of ``sets``: :func:`~.tables.kt_sets`), overhead;
    a line says why any is left out."""
    tables = [table1(runs, model, which, stats, baseline, alpha)
              for model in order_models(runs["model"].dropna().unique())]
    if len(stats) and (stats["method"] != baseline).any():
        tables.append(significance_table(stats, which, baseline, alpha))
    else:
        log(f"significance table skipped: no finished runs of {baseline} and another method")
    arch = architecture_table(runs, which)
    if arch is not None:
        tables.append(arch)
    else:
        log("architecture table skipped: runs of only one model")
    tables += [kt_table(runs, d, m, p, which) for d, m, p in sets]
    if not sets:
        log("K x T ablation skipped: no method was run at two or more (topk, threshold)")
    if len(overhead_frame(runs, baseline)):
        tables.append(overhead_table(runs, baseline))
    else:
        log("overhead table skipped: no finished runs")
    return tables


def draw_figures(coll: Collection, out: Path, which: str, stats: pd.DataFrame, baseline: str,
                 sets: list, log: Log) -> list[FigureResult]:
    """Figures 1-7 as (title, paths written or None when there is no data for it); ``sets``:
    the K x T ablation sets Figure 4 draws (:func:`~.tables.kt_sets`)."""
    from .figures import (  # matplotlib: only when figures are drawn
        fig1_pool_outputs, fig2_accuracy, fig3_architecture, fig4_kt_heatmap,
        fig5_learning_curves, fig6_overhead, fig7_learned_params,
    )

    runs, epochs = coll.runs, coll.epochs
    log("figure 1: each method's output on a small input")
    figs = [
        ("Figure 1: pooling outputs", fig1_pool_outputs(out)),
        ("Figure 2: accuracy per method", fig2_accuracy(runs, out, which, stats, baseline)),
        ("Figure 3: architecture sensitivity", fig3_architecture(runs, out, which)),
        ("Figure 4: K x T ablation", fig4_kt_heatmap(runs, sets, out, which)),
        ("Figure 5: learning curves", fig5_learning_curves(runs, epochs, out)),
        ("Figure 6: overhead", fig6_overhead(runs, out, baseline)),
        ("Figure 7: learned pooling parameters", fig7_learned_params(runs, epochs, out)),
    ]
    for title, paths in figs:
        name = title.split(":")[0].lower()
        log((f"{name}: " + ", ".join(p.name for p in paths)) if paths else
            f"{name} skipped: no data for it")
    return figs


def index_markdown(coll: Collection, which: str, report_md: str, tables: list[Table],
                   figs: list[FigureResult]) -> str:
    """report.md: where the numbers come from, the data report, every table, every figure."""
    index = [f"# poolbench results: {', '.join(coll.experiments()) or 'no runs'}", "",
             f"Source: {coll.source}. Test accuracy {WHICH_TEXT[which]}. "
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by poolbench-results from "
             f"{len(coll.runs)} runs; every number below is computed from them.", "",
             report_md.replace("# Data report", "## Data report").replace("\n## ", "\n### "),
             "## Tables", ""]
    for t in tables:
        index += [t.markdown(), ""]
    if figs:
        index += ["## Figures", ""]
        for title, paths in figs:
            for p in [p for p in (paths or []) if p.suffix == ".png"]:
                index += [f"**{title}** ({p.stem})", "", f"![{title}]({p.name})", ""]
    return "\n".join(index)
