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

from tf_reweight.core import joint
from tf_reweight.core.group_structures import top_indices
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


# The least share of a residual stream's channels a global budget keeps (see
# `stream_max_prune`).
STREAM_MIN_KEEP = 0.25


def stream_max_prune(sparsity: float, writers: int = 2) -> float:
    """The largest share of a residual stream's channels a global budget removes.

    A stream's channels (filter ``c`` of every kernel of a group, see
    `tf_reweight.core.joint`) are also its identity path, which the weights'
    energy does not measure, and the more blocks add to a stream, the more
    that path carries. So a stream written by ``k`` kernels keeps at least
    ``(1 - sparsity) ** (2 / k)`` of its channels, and never less than
    ``STREAM_MIN_KEEP``, a quarter: with two writers, the share of weights
    the target keeps; with four (a ResNet stage), ``sqrt(1 - sparsity)``,
    what uniform width scaling keeps; with many, nearly all. A deep net whose
    streams are emptied collapses (ResNet-20 at 16x with 2 of 32 stream
    channels left).

    Chosen on real data (see BENCHMARKS.md): the small residual net of
    ``benchmarks/structured.py`` (two writers) did much better with a quarter
    of its stream at 4x than with half, and ResNet-20 (four writers per
    stream) better with half; at 16x ResNet-20 needs a quarter. A per-layer
    ``max_prune`` on a stream's kernels keeps more of it (the stricter floor
    applies).

    Args:
        sparsity: The global target sparsity.
        writers: The number of kernels that write the stream (2 or more).

    Example:
    >>> stream_max_prune(0.75), stream_max_prune(0.75, writers=4)
    (0.75, 0.5)
    >>> stream_max_prune(0.5), stream_max_prune(0.99, writers=4)
    (0.5, 0.75)
    """
    keep = (1.0 - float(sparsity)) ** (2.0 / max(int(writers), 2))
    return 1.0 - max(keep, STREAM_MIN_KEEP)


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


def allocate(
    structures: Sequence[Structure],
    kernels: Sequence[np.ndarray],
    sparsity: float | Sequence[float],
    max_prune: float | Sequence[float | None] | None = None,
    couplings: Sequence[tuple] | None = None,
    groups: Sequence[Sequence[int]] | None = None,
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
    on the weights that are really kept. With ``groups``, filter ``c`` of
    every kernel of a group is one joint unit (`tf_reweight.core.joint`):
    the group's kernels keep the same number of filters, and `select` gives
    the arrays that make them keep the same ones.

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
        couplings: ``(producers, consumer, repeat)`` kernel indices: input
            row ``c + r * filters`` of the consumer reads filter ``c`` of every
            producer (a tuple of indices, or one index). Only filter-pruned
            producers in the global ranking count.
        groups: Tuples of kernel indices whose filters are merged
            elementwise (`tf_reweight.core.dependency.Dependencies.groups`).
            Only groups of filter-pruned kernels of one width in the global
            ranking count; the strictest floor of a group applies to it.

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
    return select(structures, kernels, sparsity, max_prune, couplings, groups)[0]


def _protected(scores, members, scored, shares, sparsity) -> np.ndarray:
    """The indices of the units the floors protect (see `select`).

    Each entity keeps its best units: at least one, ``1 - max_prune`` of its
    kernels' units, and for a stream (a group) with ``sparsity`` given, what
    `stream_max_prune` leaves.
    """
    protected, start = [], 0
    for e, m in enumerate(members):
        units = len(scored[e][0])
        share = min(shares[i] for i in m)
        if len(m) > 1 and sparsity is not None:
            share = min(share, stream_max_prune(sparsity, len(m)))
        floor = min(max(math.ceil((1.0 - share) * units - 1e-9), 1), units)
        mine = scores[start : start + units]
        best = (
            [np.argmax(mine)]  # the first best, as a stable sort gives
            if floor == 1
            else np.argsort(-mine, kind="stable")[:floor]
        )
        protected.append(start + np.asarray(best, np.int64))
        start += units
    return np.concatenate(protected)


def _descending(scores, weight, budget: float, whole: bool) -> np.ndarray:
    """The units in stable descending order of score, as far as the budget needs.

    Without couplings a unit's weights are its cost, so only the best units
    whose weights pass the budget by one unit can be taken: those are found
    by partition and only they are sorted (a global unstructured budget has
    millions of units). With couplings (``whole``) every unit is sorted.
    """
    if not whole and len(scores):
        need = (budget + float(np.max(weight))) / max(float(np.min(weight)), 1e-30)
        candidates = top_indices(scores, math.ceil(need) + 1)
        if len(candidates) < len(scores):
            return candidates[np.argsort(-scores[candidates], kind="stable")]
    return np.argsort(-scores, kind="stable")


def select(
    structures: Sequence[Structure],
    kernels: Sequence[np.ndarray],
    sparsity: float | Sequence[float],
    max_prune: float | Sequence[float | None] | None = None,
    couplings: Sequence[tuple] | None = None,
    groups: Sequence[Sequence[int]] | None = None,
) -> tuple[list[int], list[np.ndarray]]:
    """`allocate`, with the arrays each kernel's units are selected on.

    Returns:
        ``(keep, views)``: ``structures[i].project(views[i], keep[i])`` is
        kernel ``i``'s mask. A view is the kernel itself, or for a kernel of
        a group, `tf_reweight.core.joint.selection_view` of the group's
        joint scores, so that its kernels keep the same filters.
    """
    shapes = [np.shape(k) for k in kernels]
    views = list(kernels)
    targets = [sparsity] * len(shapes) if np.isscalar(sparsity) else list(sparsity)
    shares = _max_prune_shares(
        max_prune, structures, float(sparsity) if np.isscalar(sparsity) else 0.0
    )
    keep = [
        s.keep_for(shape, t)
        for s, shape, t in zip(structures, shapes, targets, strict=True)
    ]
    if not np.isscalar(sparsity):
        return keep, views
    pooled = [i for i, s in enumerate(structures) if s.fixed_sparsity is None]
    sizes = {i: structures[i].unit_sizes(shapes[i]) for i in pooled}
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
        return keep, views
    pool = set(pooled)
    valid = joint.valid_couplings(structures, kernels, couplings, pool)
    members = joint.entities(
        pooled, joint.valid_groups(structures, kernels, groups, pool)
    )
    base = {
        i: (_ranking_scores(structures[i], kernels[i], sizes[i]) * sizes[i], sizes[i])
        for i in pooled
    }
    scored = [joint.unit_scores(kernels, base, m, valid) for m in members]
    for m, (share, cost) in zip(members, scored, strict=True):
        for i in m if len(m) > 1 else ():
            views[i] = joint.selection_view(structures[i], shapes[i], share / cost)
    scores = np.concatenate([share / cost for share, cost in scored])
    owner = np.concatenate(
        [np.full(len(share), e) for e, (share, _) in enumerate(scored)]
    )
    weight = np.concatenate(
        [np.broadcast_to(cost, share.shape) for share, cost in scored]
    )

    def counts(units) -> list[int]:
        taken_units = np.bincount(owner[units], minlength=len(members))
        trial = list(keep)
        for e, m in enumerate(members):
            for i in m:
                trial[i] = int(taken_units[e])
        return trial

    # The scores units are kept by, for the exact count (couplings only).
    selection = {i: structures[i].unit_scores(views[i]) for i in pooled if valid}
    masks: dict = {}

    def kept(units) -> int:
        """The weights really kept when these units are."""
        if not valid:
            return int(np.sum(weight[units]))
        return joint.kept_weights(
            structures, views, counts(units), sizes, valid, selection, masks
        )

    # The units each floor protects (at least the entity's best one) rank
    # first, so they count against the budget instead of being added on top.
    # A stream's own floor gives way where it alone would break the budget.
    streams = any(len(m) > 1 for m in members)
    protected = _protected(scores, members, scored, shares, sparsity)
    if streams and kept(protected) > budget * (1.0 + 1e-9):
        protected = _protected(scores, members, scored, shares, None)
    scores[protected] = np.inf
    floors = len(protected)
    if not valid and np.all(weight == weight[0]):
        # Units of one size (single weights): the count nearest the budget,
        # then the best units, unsorted (a model can hold millions).
        base = math.floor(budget / weight[0])
        options = sorted({min(max(c, 1), len(scores)) for c in (base, base + 1)})
        taken = min(options, key=lambda c: abs(c * weight[0] - budget))
        return counts(top_indices(scores, max(taken, floors))), views
    order = _descending(scores, weight, budget, whole=bool(valid))
    cumulative = np.cumsum(weight[order])
    taken = max(int(np.argmin(np.abs(cumulative - budget))) + 1, floors)
    if valid:
        # Kept weights grow with the units taken: the first count whose kept
        # weights reach the budget, or the one before it if that is closer.
        low, high = floors, len(order)
        while low < high:
            mid = (low + high) // 2
            low, high = (mid + 1, high) if kept(order[:mid]) < budget else (low, mid)
        taken = low
        if taken > floors and (
            budget - kept(order[: taken - 1]) < kept(order[:taken]) - budget
        ):
            taken -= 1
    return counts(order[:taken]), views
