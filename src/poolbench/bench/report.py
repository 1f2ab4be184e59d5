"""What every benchmark report shares: device choice, environment, progress lines, the
recorded command, Markdown and text tables, and writing the CSV and Markdown files."""

from __future__ import annotations

import csv
import datetime as _dt
import platform
import shlex
import sys
from collections.abc import Iterable, Sequence
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


def log(msg: str) -> None:
    """A progress line, on stderr (stdout carries the report)."""
    print(msg, file=sys.stderr, flush=True)


def command_line(argv: Sequence[str]) -> str:
    """The command a report records: ``poolbench-bench <argv>``, quoted for a shell."""
    return "poolbench-bench " + " ".join(shlex.quote(a) for a in argv)


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


def markdown_head(title: str, command: str | None, env: dict) -> list[str]:
    """A report's first lines: the title, the command (if any) and the date."""
    parts = [title, ""]
    if command:
        parts.append(f"Command: `{command}`  ")
    parts.append(f"Date: {env['date']}  ")
    return parts


def device_line(device: str, env: dict) -> str:
    """``Device: cuda (<GPU>)`` or ``Device: cpu (<CPU>, <n> threads)``, then the versions."""
    return (f"Device: {device}" + (f" ({env['gpu']})" if device == "cuda" and "gpu" in env
                                   else f" ({env['cpu']}, {env['threads']} threads)")
            + f", torch {env['torch']}, python {env['python']}")


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


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> Path:
    """``rows`` (dicts) as CSV with ``columns`` (missing keys empty, other keys left out)."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in columns})
    return path


def write_csv_and_markdown(rows, columns, markdown: str, out_dir: Path,
                           stem: str) -> tuple[Path, Path]:
    """Write ``rows`` (dicts) to ``<out_dir>/<stem>.csv`` and ``markdown`` to ``<stem>.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    write_csv(csv_path, columns, rows)
    md_path.write_text(markdown + "\n")
    return csv_path, md_path


def say_written(paths: Sequence[Path]) -> None:
    """The last line of a subcommand: ``wrote A and B`` (``wrote A, B, C`` for more)."""
    names = [str(p) for p in paths]
    print("\nwrote " + (" and ".join(names) if len(names) == 2 else ", ".join(names)))
