"""The cluster allocation a run starts in, checked against what its trainer will ask for.

:func:`check_allocation` is called once per process at the start of every run
(``poolbench.train.run``), before the run directory is claimed or anything is written, so
a job whose SLURM allocation cannot run ``trainer.devices`` x ``trainer.num_nodes``
processes fails at once, on every rank, with the numbers of both sides (rather than later,
in Lightning, or hanging in the rendezvous).
"""

from __future__ import annotations


def check_allocation(cfg) -> None:
    """Raise ValueError naming SLURM's numbers (tasks per node, nodes) and the trainer's
    (``trainer.devices``, ``trainer.num_nodes``) when they do not match; nothing outside
    SLURM. Not implemented yet: filled in with the SLURM launcher configs
    (``conf/hydra/launcher/``, ``slurm/grid.sbatch``)."""
    return None
