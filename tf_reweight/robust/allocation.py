"""Per-layer pruning ratios from sensitivity scores, meeting a global budget.

`allocate_ratios` turns per-layer scores (such as the Module Robustness
Sensitivity of `tf_reweight.robust.sensitivity`) into per-layer sparsities
that prune exactly the global budget, the most sensitive layers least;
`mrs_ratios` applies it to a `SensitivityTable` with MRPF's default cap
(`default_max_ratio`). Plain NumPy: no TensorFlow needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from tf_reweight.core import budget, checks

if TYPE_CHECKING:
    from tf_reweight.robust.sensitivity import SensitivityTable

#: No layer keeps less than ``1 / MAX_RATE_FACTOR`` of the global keep fraction
#: by default: at a 16x global rate, no layer is pruned beyond 64x.
MAX_RATE_FACTOR = 4.0


def default_max_ratio(target: float) -> float:
    """The default highest per-layer sparsity for a global sparsity ``target``.

    ``1 - (1 - target) / MAX_RATE_FACTOR``: a layer is compressed at most
    `MAX_RATE_FACTOR` times more than the model. Without such a cap a small
    layer that MRS finds insensitive (a first convolution of a few hundred
    weights, say) can be driven to a handful of weights, which costs little
    of the budget but cuts the signal path of the whole network.

    Args:
        target: Global sparsity in (0, 1).

    Returns:
        A sparsity in [target, 1).
    """
    return 1.0 - (1.0 - target) / MAX_RATE_FACTOR


def mrs_ratios(
    table: SensitivityTable,
    target,
    *,
    max_ratio: float | None = None,
    min_ratio: float = 0.0,
    temperature: float = 1.0,
) -> dict[str, float]:
    """Per-layer sparsities from an MRS table, with `mrpf`'s defaults.

    Args:
        table: A `SensitivityTable`.
        target: Global sparsity or rate string over the table's layers.
        max_ratio: Highest sparsity of a layer; None for `default_max_ratio`.
        min_ratio: Lowest sparsity of a layer.
        temperature: Spread of the ratios (see `allocate_ratios`).

    Returns:
        ``{layer: sparsity}`` keeping exactly ``round((1 - target) * total)``
        weights.

    Example:
    >>> mrs_ratios(SensitivityTable.from_json("mrs.json"), "16x")
    {'conv1': ..., 'conv2': ..., 'fc1': ..., 'logits': ...}
    """
    sparsity = budget.parse_target(target)
    if max_ratio is None:
        max_ratio = default_max_ratio(sparsity)
    return allocate_ratios(
        table.scores, table.sizes, sparsity, min_ratio, max_ratio, temperature
    )


def allocate_ratios(
    scores: Mapping[str, float],
    sizes: Mapping[str, int],
    target: float,
    min_ratio: float = 0.0,
    max_ratio: float = 0.99,
    temperature: float = 1.0,
) -> dict[str, float]:
    """Per-layer sparsities that meet a global budget, pruning sensitive layers less.

    Scores are min-max normalized to ``s_i`` in [0, 1] (all equal: uniform
    ratios) and each layer gets ``r_i = clip(c * exp(-s_i / temperature),
    min_ratio, max_ratio)``; the scale ``c`` is found by bisection so that
    ``sum(r_i * size_i) / sum(size_i) == target``. The ratios are then rounded
    to whole weights (largest remainders first, within the bounds) so that
    exactly ``round((1 - target) * total)`` weights are kept.

    Args:
        scores: ``{layer: sensitivity}``; higher means prune less.
        sizes: ``{layer: number of prunable weights}``, same keys, all ``>= 1``.
        target: Global sparsity in (0, 1).
        min_ratio: Lowest sparsity of a layer, in [0, max_ratio].
        max_ratio: Highest sparsity of a layer, in [min_ratio, 1].
        temperature: ``> 0``; lower values spread the ratios further apart.

    Returns:
        ``{layer: sparsity}``, where each ``sparsity * size`` is an integer.

    Raises:
        ValueError: If the keys differ, a size or option is out of range, or
            the bounds cannot meet ``target``.

    Example:

    >>> allocate_ratios({"a": 0.0, "b": 1.0}, {"a": 100, "b": 100}, 0.5)
    {'a': 0.73, 'b': 0.27}

    References:
        Bai et al., "Adaptive Pruning with Module Robustness Sensitivity:
        Balancing Compression and Robustness", https://arxiv.org/abs/2410.15176.
    """
    names = list(scores)
    _check_allocation(scores, sizes, target, min_ratio, max_ratio, temperature)
    size = np.array([sizes[n] for n in names], np.int64)
    s = np.array([scores[n] for n in names], np.float64)
    spread = s.max() - s.min()
    s = (s - s.min()) / spread if spread > 0 else np.zeros_like(s)
    weight = np.exp(-s / temperature)  # In (0, 1], largest for the least sensitive.
    total = int(size.sum())

    def ratios(c: float) -> np.ndarray:
        return np.clip(c * weight, min_ratio, max_ratio)

    lo, hi = 0.0, max_ratio / weight.min()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ratios(mid) @ size < target * total else (lo, mid)
    pruned = _round_counts(
        ratios(hi) * size,
        total - round((1.0 - target) * total),
        np.ceil(min_ratio * size - 1e-9).astype(np.int64),
        np.floor(max_ratio * size + 1e-9).astype(np.int64),
    )
    return {n: int(p) / int(k) for n, p, k in zip(names, pruned, size, strict=True)}


def _round_counts(values, total, lower, upper) -> np.ndarray:
    """Integers near ``values`` within bounds that sum to ``total``."""
    counts = np.clip(np.floor(values + 1e-9), lower, upper).astype(np.int64)
    while counts.sum() != total:
        step = 1 if counts.sum() < total else -1
        room = counts < upper if step > 0 else counts > lower
        residual = np.where(room, step * (values - counts), -np.inf)
        counts[int(np.argmax(residual))] += step
    return counts


def _check_allocation(scores, sizes, target, min_ratio, max_ratio, temperature):
    if not scores or set(scores) != set(sizes):
        raise ValueError(
            "`scores` and `sizes` must be non-empty with the same layer names. "
            f"Received: scores keys={list(scores)}, sizes keys={list(sizes)}"
        )
    for name, size in sizes.items():
        checks.check_int(f"sizes[{name!r}]", size, low=1)
    for name, score in scores.items():
        checks.check_number(f"scores[{name!r}]", score)
    if not 0 < checks.check_number("target", target) < 1:
        raise ValueError(f"`target` must lie in (0, 1). Received: target={target!r}")
    checks.check_number("temperature", temperature, 0.0, strict=True)
    checks.check_number("min_ratio", min_ratio)
    checks.check_number("max_ratio", max_ratio)
    if not 0 <= min_ratio <= target <= max_ratio <= 1:
        raise ValueError(
            "The ratio bounds cannot meet the target: expected "
            "0 <= min_ratio <= target <= max_ratio <= 1. Received: "
            f"min_ratio={min_ratio!r}, target={target!r}, max_ratio={max_ratio!r}"
        )
    total = sum(sizes.values())
    kept = round((1.0 - target) * total)
    low = sum(math.ceil(min_ratio * k - 1e-9) for k in sizes.values())
    high = sum(math.floor(max_ratio * k + 1e-9) for k in sizes.values())
    if not low <= total - kept <= high:
        raise ValueError(
            f"No whole-weight allocation prunes {total - kept} of {total} weights "
            f"within min_ratio={min_ratio!r} and max_ratio={max_ratio!r}."
        )
