"""Results: finished runs (results.json files or the W&B API) -> tables, statistics, figures.

    poolbench-results outputs/<experiment>          # writes outputs/<experiment>/report/

>>> from poolbench.results import collect_files, check_runs, compare_to_baseline, table1
>>> coll = collect_files("outputs/paper")                      # doctest: +SKIP
>>> stats = compare_to_baseline(coll.runs, which="final")      # doctest: +SKIP
>>> print(table1(coll.runs, "vgg16", "final", stats).markdown())  # doctest: +SKIP

Modules, in the order data flows through them:

- ``collect`` reads run directories, ``wandb_source`` the W&B API (``wandb`` imported only
  there, and only when no API object is given); both build a ``runs.Collection``.
- ``runs``: the collected data (one row per run, per run and epoch; runs.csv,
  learned_params.csv); ``labels``: method labels and the order of methods, models, datasets;
  ``configs``: comparing run configs. The run-directory rules (statuses, identity, file
  names, config keys that do not change a result) are ``poolbench.rundir``'s.
- ``selection``: ``--filter`` and which runs count (one per seed, the latest finished);
  ``checks``: what is missing, failed or mixed, and the data report.
- ``stats``: the two tests; ``tables`` (with ``table_format``) and ``figures``: the paper's.
- ``report`` orchestrates a report; ``cli`` parses ``poolbench-results``' arguments;
  ``simulate`` checks the tests' rejection rates.
"""

from .checks import DataReport, check_runs, data_report_markdown
from .collect import collect_files
from .runs import Collection
from .selection import filter_runs, parse_filters
from .stats import (
    compare_to_baseline, describe, holm, image_test, mcnemar, mcnemar_counts, pair_with_baseline,
    paired_test, signflip_test,
)
from .table_format import Table
from .tables import architecture_table, kt_table, overhead_table, significance_table, table1

__all__ = [
    "Collection", "DataReport", "Table", "architecture_table", "check_runs", "collect_files",
    "collect_wandb", "compare_to_baseline", "data_report_markdown", "describe",
    "filter_runs", "holm", "image_test", "kt_table", "mcnemar", "mcnemar_counts",
    "overhead_table", "pair_with_baseline", "paired_test", "parse_filters",
    "signflip_test", "significance_table", "table1", "write_report",
]


def __getattr__(name: str):
    if name == "collect_wandb":  # only a W&B source needs wandb_source (and wandb)
        from .wandb_source import collect_wandb

        return collect_wandb
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def write_report(*args, **kwargs):
    """See :func:`poolbench.results.report.write_report` (imported lazily: it pulls matplotlib
    when it draws figures)."""
    from .report import write_report as _write

    return _write(*args, **kwargs)
