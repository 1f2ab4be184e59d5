"""Results: finished runs (results.json files or the W&B API) -> tables, statistics, figures.

    poolbench-results outputs/<experiment>          # writes outputs/<experiment>/report/

>>> from poolbench.results import collect_files, check_runs, compare_to_baseline, table1
>>> coll = collect_files("outputs/paper")                      # doctest: +SKIP
>>> stats = compare_to_baseline(coll.runs, which="final")      # doctest: +SKIP
>>> print(table1(coll.runs, "vgg16", "final", stats).markdown())  # doctest: +SKIP
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
    """See :func:`poolbench.results.cli.write_report` (imported lazily: it pulls matplotlib)."""
    from .cli import write_report as _write

    return _write(*args, **kwargs)
