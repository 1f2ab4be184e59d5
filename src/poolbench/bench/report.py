"""Shared pieces of the benchmark reports: device choice, environment, tables, CSV files."""

from __future__ import annotations

import csv
import datetime as _dt
import platform
from pathlib import Path

import torch


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but CUDA is not available")
    return dev


def environment() -> dict:
    info = {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "torch": torch.__version__, "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


REFUSED = "refused: "


def refusal(exc: ValueError) -> str:
    """A row's ``error`` when the method refuses the benchmark's setting before it runs (its
    constructor or ``check_input_size`` raised ``ValueError`` saying why): the method is
    skipped there, not timed as something else."""
    return REFUSED + str(exc)


def error_cell(error: str, short: bool = False) -> str:
    """Table cell of a row that did not run: ``refused: <why>`` or ``failed: <error>``, or
    just ``refused`` / ``failed`` (``short``)."""
    word, _, why = error.partition(": ") if error.startswith(REFUSED) else ("failed", "", error)
    return word if short else f"{word}: {why}"


def md_table(head, cells) -> str:
    right = [i > 0 for i in range(len(head))]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if r else ":---" for r in right) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines)


def text_table(head, cells) -> str:
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(head)]
    def line(c):
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(c, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(c) for c in cells])


def write_csv_and_markdown(rows, columns, markdown: str, out_dir: Path,
                           stem: str) -> tuple[Path, Path]:
    """Write ``rows`` (dicts) to ``<out_dir>/<stem>.csv`` and ``markdown`` to ``<stem>.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in columns})
    md_path.write_text(markdown + "\n")
    return csv_path, md_path
