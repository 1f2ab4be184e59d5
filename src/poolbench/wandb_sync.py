"""Upload the offline W&B runs of poolbench runs, whole: every segment of a resumed run.

    python -m poolbench.wandb_sync outputs/                   # every run under outputs/
    python -m poolbench.wandb_sync --dry-run RUN_DIR ...      # what would be uploaded
    python -m poolbench.wandb_sync --print RUN_DIR ...        # the wandb commands only

A run that was resumed (after a kill, a time limit, a requeue) started W&B once per process,
so its ``<run_dir>/wandb/`` holds one ``offline-run-<start time>-<id>`` folder per segment,
all with the run's id (``wandb_id.txt``). For each run this calls

    wandb sync --id <id> <run_dir>/wandb/offline-run-*-<id> ...   (oldest first)

W&B uploads several files of one run one after the other in order of start time (``wandb
sync --help``: "--id ... the files will be synced in order of start time"), so the run
keeps the history of every segment. Folders of online attempts (``run-*``, e.g. one that fell
back to offline) are left alone. Segments already uploaded are skipped by wandb itself.
See docs/wandb.md.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from . import rundir


def offline_segments(run_dir: Path) -> tuple[str | None, list[Path]]:
    """(W&B run id, its offline folders oldest first) of ``run_dir``; (None, []) when the
    run never started W&B. Folder names start with the start time, so name order is time
    order."""
    id_file = Path(run_dir) / rundir.WANDB_ID
    if not id_file.is_file():
        return None, []
    run_id = id_file.read_text().strip()
    return run_id, sorted((Path(run_dir) / "wandb").glob(f"offline-run-*-{run_id}"),
                          key=lambda p: p.name)


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories (those with a W&B id file) at or under each of ``paths``."""
    found = []
    for path in paths:
        if not path.exists():
            raise SystemExit(f"wandb_sync: {path} does not exist")
        if (path / rundir.WANDB_ID).is_file():
            found.append(path)
        else:
            found += sorted(p.parent for p in path.rglob(rundir.WANDB_ID))
    return found


def sync_commands(paths: list[Path], dry_run: bool = False) -> list[list[str]]:
    """One ``wandb sync`` command per run with offline segments under ``paths``."""
    commands = []
    for run_dir in find_run_dirs(paths):
        run_id, segments = offline_segments(run_dir)
        if segments:
            commands.append(["wandb", "sync", *(["--dry-run"] if dry_run else []),
                             "--id", run_id, *map(str, segments)])
    return commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m poolbench.wandb_sync",
        description="Upload poolbench runs' offline W&B data, every resumed segment included.")
    parser.add_argument("paths", nargs="+", type=Path,
                        help="run directories, or folders searched for them (e.g. outputs/)")
    parser.add_argument("--dry-run", action="store_true",
                        help="pass --dry-run to wandb sync: list, upload nothing")
    parser.add_argument("--print", action="store_true", dest="print_only",
                        help="print the wandb sync commands instead of running them")
    args = parser.parse_args(argv)
    commands = sync_commands(args.paths, args.dry_run)
    if not commands:
        print("wandb_sync: no offline W&B runs found under "
              + " ".join(map(str, args.paths)), file=sys.stderr)
        return 1
    failed = 0
    for cmd in commands:
        print(shlex.join(cmd), flush=True)
        if not args.print_only:
            # this Python's wandb (the one that wrote the runs), whatever is on PATH
            failed += subprocess.run([sys.executable, "-m", *cmd]).returncode != 0
    if failed:
        print(f"wandb_sync: {failed} of {len(commands)} runs failed to sync", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
