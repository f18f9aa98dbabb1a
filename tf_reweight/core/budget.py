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

from tf_reweight.core.group_structures import top_k
from tf_reweight.core.structures import Structure


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


# The largest share of a kernel's structured units that a global budget may
# remove by default (see `allocate`). Chosen on real data with
# ``benchmarks/structured.py`` (filter pruning at 4x on MNIST and a CIFAR-10
# slice): clearly better than 0.75 (a uniform allocation at that target) and
# 1.0 (no floor) on both, level with 0.8 (ahead on CIFAR-10, behind on MNIST).
DEFAULT_MAX_PRUNE = 0.9


def _ranking_scores(
    structure: Structure, kernel: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
    """Importance per weight removed of every unit (see `allocate`)."""
    scores = structure.unit_scores(kernel)
    if not structure.layer_relative_scores:
        return scores
    energy = np.square(scores) * sizes
    total = float(np.sum(np.square(kernel, dtype=np.float64)))
    return energy / (total + 1e-30) / sizes


def check_max_prune(value, max_prune=None) -> float:
    """Returns one ``max_prune`` share as a float if it lies in (0, 1].

    Args:
        value: The share: the largest part of a kernel's units a global
            budget may prune.
        max_prune: The whole argument ``value`` came from (a list, a dict),
            for the error message; None when it is ``value`` itself.

    Returns:
        ``float(value)``.

    Raises:
        ValueError: For a bool, a non-number or a number outside (0, 1].

    Example:
    >>> check_max_prune(0.9)
    0.9
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not 0.0 < float(value) <= 1.0
    ):
        whole = value if max_prune is None else max_prune
        raise ValueError(
            "`max_prune` must be None or a share of units in (0, 1]: one for "
            "all kernels, one (or None) per kernel, or a dict from layer name "
            f"to one. Received: max_prune={whole!r}"
        )
    return float(value)


def _max_prune_shares(max_prune, structures, sparsity: float) -> list[float]:
    """Validates ``max_prune`` and returns one share per kernel."""
    n = len(structures)
    values = (
        list(max_prune)
        if isinstance(max_prune, (list, tuple, np.ndarray))
        else [max_prune] * n
    )
    if len(values) != n:
        raise ValueError(
            "`max_prune` must be None, a float in (0, 1] or one value per kernel. "
            f"Expected {n} values. Received: max_prune={max_prune!r}"
        )
    shares = []
    for value, structure in zip(values, structures, strict=True):
        if value is None:
            # Single weights keep plain global magnitude pruning; structured
            # units get the default floor, relaxed to the target above it.
            default = max(DEFAULT_MAX_PRUNE, sparsity)
            shares.append(default if structure.layer_relative_scores else 1.0)
            continue
        shares.append(check_max_prune(value, max_prune))
    return shares


def coupled_rows(filters: int, repeat: int, removed: np.ndarray) -> np.ndarray:
    """The consumer input rows that read the ``removed`` producer filters.

    Row ``c + r * filters`` reads filter ``c`` (``r < repeat``; see
    `tf_reweight.core.dependency.Coupling`).
    """
    filters_removed = np.flatnonzero(removed)
    return (filters_removed[:, None] + filters * np.arange(repeat)).reshape(-1)


def coupling_fits(structure: Structure, producer_shape, consumer_shape, repeat) -> bool:
    """Whether a coupling frees rows: the producer's structure removes whole
    filters and the consumer has ``filters * repeat`` input rows."""
    return bool(structure.removes_outputs) and (
        consumer_shape[2] == producer_shape[3] * repeat
    )


def _valid_couplings(structures, kernels, couplings, pooled) -> list:
    """The couplings of filter-pruned producers whose consumer's rows fit."""
    return [
        (p, c, int(repeat))
        for p, c, repeat in couplings or ()
        if p in pooled
        and c in pooled
        and coupling_fits(
            structures[p], np.shape(kernels[p]), np.shape(kernels[c]), repeat
        )
    ]


def _coupled_cost(kernels, valid, scores: dict) -> None:
    """Adds each filter's downstream rows to its importance and its cost.

    ``scores[i]`` is ``(energy share, weights)`` per unit; a producer's units
    gain the share of each consumer's energy their rows hold, and their size.
    """
    for p, c, repeat in valid:
        consumer = np.asarray(kernels[c], np.float64)
        filters = np.shape(kernels[p])[3]
        rows = np.square(consumer).sum(axis=(0, 1, 3))
        per_filter = rows.reshape(repeat, filters).sum(axis=0)
        share, size = scores[p]
        total = float(np.sum(rows)) + 1e-30
        width = consumer.shape[0] * consumer.shape[1] * consumer.shape[3] * repeat
        scores[p] = (share + per_filter / total, size + width)


def _kept_weights(structures, kernels, keep, sizes, valid, unit_scores) -> int:
    """The weights kept by these keep counts, rows of removed filters excluded.

    ``sizes`` maps each pooled kernel to its units' sizes."""
    kept = 0
    for i, unit_sizes in sizes.items():
        kept += int(np.sum(unit_sizes[top_k(unit_scores[i], keep[i])]))
    for p, c, repeat in valid:
        removed = ~top_k(unit_scores[p], keep[p])
        rows = coupled_rows(np.shape(kernels[p])[3], repeat, removed)
        mask = structures[c].project(kernels[c], keep[c])
        kept -= int(np.count_nonzero(mask[:, :, rows, :]))
    return kept


def allocate(
    structures: Sequence[Structure],
    kernels: Sequence[np.ndarray],
    sparsity: float | Sequence[float],
    max_prune: float | Sequence[float | None] | None = None,
    couplings: Sequence[tuple[int, int, int]] | None = None,
) -> list[int]:
    """Keep counts (in units) for a set of canonical kernels.

    With one global sparsity, the units of all kernels are ranked together
    by their *importance per weight removed*, and the most important are kept
    until the kept weights meet the budget as closely as the units allow:

    - Single weights (``unstructured``) rank by magnitude: global magnitude
      pruning.
    - A structured unit ``u`` (a filter, a block, ...) of kernel ``W`` ranks
      by the share of its kernel's energy it holds, divided by the weights it
      holds: ``(||u||^2 / ||W||^2) / size(u)``, which is
      ``rms(u)^2 / ||W||^2``. The share makes the rule scale-invariant (a
      layer trained at a larger scale does not take the budget), and dividing
      by the unit's size makes a unit's cost count: a filter of a wide layer
      holds a small share of its layer for many weights, so it frees more
      budget for less damage than a filter of a narrow layer.

    With ``couplings``, a filter's cost also counts the rows of later
    kernels that read it (`tf_reweight.core.dependency`): removing it frees
    them too, and the hard prune masks them. Its importance adds the share of
    those kernels' energy the rows hold, and the keep counts meet the budget
    on the weights that are really kept.

    A per-kernel floor keeps the ranking from emptying a layer: no kernel
    loses more than ``max_prune`` of its units (rounded so the share is never
    exceeded; every kernel keeps at least one unit). The units a floor
    protects count against the budget, and the rest is taken from the other
    kernels.

    Args:
        structures: One structure per kernel.
        kernels: The canonical ``(kh, kw, cin, cout)`` kernels.
        sparsity: One global sparsity for all kernels, ranked together, or
            one sparsity per kernel (then ``max_prune`` is only validated).
        max_prune: The largest share of its units a kernel may lose to the
            global ranking: None, a float in (0, 1], or one value per kernel
            (None entries take the default). The default is
            ``DEFAULT_MAX_PRUNE`` for structured kernels, or the target
            sparsity where that is higher (so a default call always meets its
            target), and no floor (1.0) for unstructured kernels.
        couplings: ``(producer, consumer, repeat)`` kernel indices: input row
            ``c + r * filters`` of the consumer reads filter ``c`` of the
            producer. Only filter-pruned producers in the global ranking
            count.

    Returns:
        The number of units each kernel keeps. Kernels whose structure fixes
        its own sparsity (N:M) keep their fixed count and stay out of the
        global ranking. Every kernel keeps at least one unit.

    Raises:
        ValueError: If ``max_prune`` is malformed, or if the floors keep more
            weights than the global target allows.

    Example:
    A narrow stem (32 filters of 9 weights) next to a wide layer (128 filters
    of 64 weights): the stem keeps every filter, the wide layer pays.

    >>> f = structures.get("filter")
    >>> allocate([f, f], [np.ones((3, 3, 1, 32)), np.ones((1, 1, 64, 128))], 0.75)
    [32, 29]
    """
    shapes = [np.shape(k) for k in kernels]
    targets = [sparsity] * len(shapes) if np.isscalar(sparsity) else list(sparsity)
    shares = _max_prune_shares(
        max_prune, structures, float(sparsity) if np.isscalar(sparsity) else 0.0
    )
    keep = [
        s.keep_for(shape, t)
        for s, shape, t in zip(structures, shapes, targets, strict=True)
    ]
    if not np.isscalar(sparsity):
        return keep
    pooled = [i for i, s in enumerate(structures) if s.fixed_sparsity is None]
    sizes = {i: structures[i].unit_sizes(shapes[i]) for i in pooled}
    units = {i: len(sizes[i]) for i in pooled}
    total = sum(math.prod(shapes[i]) for i in pooled)
    budget = (1.0 - sparsity) * total
    least = sum((1.0 - shares[i]) * float(np.sum(sizes[i])) for i in pooled)
    if least > budget * (1.0 + 1e-9):
        raise ValueError(
            "The per-kernel floors keep more weights than the global target "
            f"allows: at least {least:.0f} of {total} weights, a sparsity of at "
            f"most {1.0 - least / total:.4f}. Expected a larger `max_prune` or "
            f"a lower target. Received: max_prune={max_prune!r}, "
            f"sparsity={sparsity}"
        )
    if len(pooled) < 2:
        return keep
    valid = _valid_couplings(structures, kernels, couplings, set(pooled))
    ranked = {
        i: (_ranking_scores(structures[i], kernels[i], sizes[i]) * sizes[i], sizes[i])
        for i in pooled
    }
    _coupled_cost(kernels, valid, ranked)
    scores = np.concatenate([ranked[i][0] / ranked[i][1] for i in pooled])
    owner = np.concatenate([np.full(units[i], i) for i in pooled])
    weight = np.concatenate([ranked[i][1] for i in pooled])
    # The units each floor protects (at least the kernel's best one) rank
    # first, so they count against the budget instead of being added on top.
    for i in pooled:
        floor = min(max(math.ceil((1.0 - shares[i]) * units[i] - 1e-9), 1), units[i])
        mine = np.flatnonzero(owner == i)
        scores[mine[np.argsort(-scores[mine], kind="stable")[:floor]]] = np.inf
    order = np.argsort(-scores, kind="stable")
    cumulative = np.cumsum(weight[order])
    protected = int(np.sum(np.isinf(scores)))
    taken = max(int(np.argmin(np.abs(cumulative - budget))) + 1, protected)
    if valid:
        unit_scores = {i: structures[i].unit_scores(kernels[i]) for i in pooled}

        def kept(n: int) -> int:
            counts = np.bincount(owner[order[:n]], minlength=len(structures))
            trial = [int(counts[i]) if i in units else k for i, k in enumerate(keep)]
            return _kept_weights(structures, kernels, trial, sizes, valid, unit_scores)

        # Kept weights grow with the units taken: the first count whose kept
        # weights reach the budget, or the one before it if that is closer.
        low, high = protected, len(order)
        while low < high:
            mid = (low + high) // 2
            low, high = (mid + 1, high) if kept(mid) < budget else (low, mid)
        taken = low
        if taken > protected and budget - kept(taken - 1) < kept(taken) - budget:
            taken -= 1
    counts = np.bincount(owner[order[:taken]], minlength=len(structures))
    for i in pooled:
        keep[i] = int(counts[i])
    return keep
