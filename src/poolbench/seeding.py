"""Seeds that are pure functions of (seed, step, rank), so interrupted runs resume exactly."""

from __future__ import annotations

_MOD = 2**63 - 1
_RANK_STRIDE = 0x9E3779B97F4A7C15  # odd, ~2**63.3: rank r's seeds land far from rank 0's


def step_seed(seed: int, step: int, stream: int = 0, rank: int = 0) -> int:
    """Seed for training step ``step`` of a run seeded with ``seed``, on process ``rank``.

    ``stream`` separates independent uses within one step (0: the model's own randomness,
    e.g. stochastic pooling; 1: data augmentation). ``rank`` (the global rank under DDP)
    gives every process its own draws; rank 0's seeds are those of a single-process run.
    """
    base = (int(seed) * 1_000_003 + int(step) * 7_919 + int(stream) * 104_729 + 17) % _MOD
    return (base + int(rank) * _RANK_STRIDE) % _MOD
