"""Seeds that are pure functions of (seed, step), so interrupted runs resume exactly."""

from __future__ import annotations


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """Seed for training step ``step`` of a run seeded with ``seed``.

    ``stream`` separates independent uses within one step (0: the model's own randomness,
    e.g. stochastic pooling; 1: data augmentation).
    """
    return (int(seed) * 1_000_003 + int(step) * 7_919 + int(stream) * 104_729 + 17) % (2**63 - 1)
