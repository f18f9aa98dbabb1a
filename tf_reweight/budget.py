"""Budgets: turn a sparsity target into per-kernel keep counts.

A target is either one *global* sparsity, met across all pruned kernels by
ranking their units together (so the budget flows to where weights matter
least), or a per-layer sparsity. Compression is reported both as a sparsity
and as a rate, ``dense weights / nonzero weights``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from tf_reweight.structures import Structure


def parse_target(target) -> float:
    """Converts a target to a sparsity in (0, 1).

    Args:
        target: A sparsity as a float in (0, 1), or a compression rate as a
            string such as ``"100x"`` (rate > 1; sparsity ``1 - 1/rate``).

    Returns:
        The sparsity as a float.

    Example:
    >>> parse_target("50x")
    0.98
    """
    if isinstance(target, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*x\s*", target.lower())
        if not match or float(match[1]) <= 1.0:
            raise ValueError(
                "A compression rate must be a string 'Nx' with N > 1, such as "
                f"'100x'. Received: target={target!r}"
            )
        return 1.0 - 1.0 / float(match[1])
    if isinstance(target, bool) or not isinstance(target, (int, float, np.floating)):
        raise ValueError(
            "A target must be a sparsity in (0, 1) or a rate string such as "
            f"'100x'. Received: target={target!r}"
        )
    if not 0.0 < float(target) < 1.0:
        raise ValueError(
            "A sparsity target must lie strictly between 0 and 1; give a "
            f"compression rate as a string such as '100x'. Received: "
            f"target={target!r}"
        )
    return float(target)


def rate(dense: int, nonzeros: int) -> float:
    """Compression rate ``dense / nonzeros`` (inf when nothing is left)."""
    return math.inf if nonzeros == 0 else dense / nonzeros


def _ranking_scores(structure: Structure, kernel: np.ndarray) -> np.ndarray:
    scores = structure.unit_scores(kernel)
    if structure.layer_relative_scores:
        scores = scores / (np.sqrt(np.mean(np.square(kernel))) + 1e-12)
    return scores


def allocate(
    structures: Sequence[Structure],
    kernels: Sequence[np.ndarray],
    sparsity: float | Sequence[float],
) -> list[int]:
    """Keep counts (in units) for a set of canonical kernels.

    Args:
        structures: One structure per kernel.
        kernels: The canonical ``(kh, kw, cin, cout)`` kernels.
        sparsity: One global sparsity for all kernels, ranked together, or
            one sparsity per kernel.

    Global ranking compares single weights by magnitude (global magnitude
    pruning) and structured units (filters, blocks, ...) by their RMS relative
    to their own kernel's RMS, so that layers initialized or trained at larger
    scales do not take the whole budget.

    Returns:
        The number of units each kernel keeps. Kernels whose structure fixes
        its own sparsity (N:M) keep their fixed count and stay out of the
        global ranking. Every kernel keeps at least one unit.
    """
    shapes = [np.shape(k) for k in kernels]
    targets = [sparsity] * len(shapes) if np.isscalar(sparsity) else list(sparsity)
    keep = [
        s.keep_for(shape, t)
        for s, shape, t in zip(structures, shapes, targets, strict=True)
    ]
    if not np.isscalar(sparsity):
        return keep
    pooled = [i for i, s in enumerate(structures) if s.fixed_sparsity is None]
    if len(pooled) < 2:
        return keep
    scores = np.concatenate(
        [_ranking_scores(structures[i], kernels[i]) for i in pooled]
    )
    owner = np.concatenate(
        [np.full(structures[i].num_units(shapes[i]), i) for i in pooled]
    )
    weight = np.concatenate(
        [
            np.full(
                structures[i].num_units(shapes[i]),
                structures[i].unit_weights(shapes[i]),
            )
            for i in pooled
        ]
    )
    total = sum(math.prod(shapes[i]) for i in pooled)
    budget = (1.0 - sparsity) * total
    # Every kernel's best unit ranks first, so the one unit each kernel keeps
    # counts against the budget instead of being added on top of it.
    for i in pooled:
        units = np.flatnonzero(owner == i)
        scores[units[np.argmax(scores[units])]] = np.inf
    order = np.argsort(-scores, kind="stable")
    cumulative = np.cumsum(weight[order])
    taken = max(int(np.argmin(np.abs(cumulative - budget))) + 1, len(pooled))
    counts = np.bincount(owner[order[:taken]], minlength=len(structures))
    for i in pooled:
        keep[i] = int(counts[i])
    return keep
