"""Joint units of a global budget: the filters that dependencies tie.

`tf_reweight.core.dependency` finds, in a model's graph, the kernel rows that
read other kernels' filters (*couplings*) and the kernels whose filters are
merged elementwise (*groups*: the convolutions that write one residual
stream). A global budget (`tf_reweight.core.budget.allocate`) ranks units
with them:

- filter ``c`` of every kernel of a group is one *joint unit*: its filters
  are ranked, kept and removed together, so that the channel really leaves
  the stream (and `tflite_export.shrink` can remove it);
- a unit's importance adds the share of each coupled consumer's energy that
  its rows hold, and its cost the weights of those rows: removing the unit
  frees them, and the hard prune masks them.

Kernels are indices into the budget's lists. A coupling is
``(producers, consumer, repeat)``: input row ``c + r * filters`` of the
consumer reads filter ``c`` of every producer (a tuple of indices; a single
index is accepted for one producer).
"""

from __future__ import annotations

import keras
import numpy as np

from tf_reweight.core.group_structures import top_k
from tf_reweight.core.structures import Structure


def producers(coupling) -> tuple[int, ...]:
    """The producer indices of a coupling (an index or a tuple of them)."""
    found = coupling[0]
    return (int(found),) if np.isscalar(found) else tuple(int(p) for p in found)


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


def valid_couplings(structures, kernels, couplings, pooled) -> list:
    """The couplings of filter-pruned producers (all in ``pooled``) whose
    consumer (in ``pooled``) has rows that fit, as ``(producers, c, repeat)``."""
    valid = []
    for coupling in couplings or ():
        found, consumer, repeat = producers(coupling), coupling[1], int(coupling[2])
        if consumer in pooled and all(
            p in pooled
            and coupling_fits(
                structures[p], np.shape(kernels[p]), np.shape(kernels[consumer]), repeat
            )
            for p in found
        ):
            valid.append((found, consumer, repeat))
    return valid


def valid_groups(structures, kernels, groups, pooled) -> list[tuple[int, ...]]:
    """The groups whose kernels are all filter-pruned in ``pooled`` with the
    same number of filters; each kernel in one group at most."""
    valid, seen = [], set()
    for group in groups or ():
        members = tuple(int(i) for i in group)
        if (
            len(members) > 1
            and not seen.intersection(members)
            and all(i in pooled and structures[i].removes_outputs for i in members)
            and len({np.shape(kernels[i])[3] for i in members}) == 1
        ):
            valid.append(members)
            seen.update(members)
    return valid


def entities(pooled, groups) -> list[tuple[int, ...]]:
    """The ranking entities: every valid group, then every other kernel alone."""
    grouped = {i for group in groups for i in group}
    return list(groups) + [(i,) for i in pooled if i not in grouped]


def unit_scores(kernels, base: dict, members, valid) -> tuple[np.ndarray, np.ndarray]:
    """``(importance, cost)`` per unit of one entity.

    Args:
        kernels: The canonical kernels.
        base: Kernel index to ``(energy share, weights)`` per unit.
        members: The entity's kernel indices.
        valid: `valid_couplings`; those whose producers are all members add
            their consumer's rows.
    """
    share = sum(base[i][0] for i in members)
    cost = sum(base[i][1] for i in members)
    for found, consumer, repeat in valid:
        if not set(found) <= set(members):
            continue
        rows = np.square(np.asarray(kernels[consumer], np.float64)).sum(axis=(0, 1, 3))
        filters = np.shape(kernels[found[0]])[3]
        share = share + rows.reshape(repeat, filters).sum(axis=0) / (
            float(np.sum(rows)) + 1e-30
        )
        shape = np.shape(kernels[consumer])
        cost = cost + shape[0] * shape[1] * shape[3] * repeat
    return share, cost


def selection_view(structure: Structure, shape4, scores: np.ndarray) -> np.ndarray:
    """A kernel-shaped array whose units rank exactly as ``scores``.

    Unit ``c`` holds a constant: its rank among the units (the best holds the
    largest), so ``structure.project(view, keep)`` keeps the ``keep``
    best-scored units, ties broken as
    `tf_reweight.core.group_structures.top_k` breaks them, whatever the
    kernel's shape: the kernels of a group keep the same filters.
    """
    ranks = np.empty(len(scores), np.float32)
    ranks[np.argsort(-np.asarray(scores), kind="stable")] = np.arange(
        len(scores), 0, -1
    )
    return np.asarray(
        keras.ops.convert_to_numpy(structure.ungroup(ranks[:, None], tuple(shape4)))
    )


def kept_weights(structures, views, keep, sizes, valid, selection, masks) -> int:
    """The weights kept by these keep counts, rows of removed filters excluded.

    ``views`` are the arrays units are selected on (see `selection_view`),
    ``sizes`` maps each pooled kernel to its units' sizes and ``selection``
    to the scores its units are kept by (``unit_scores`` of its view).
    ``masks`` caches the weights each input row of a consumer keeps, by
    ``(kernel, keep)``, across calls.
    """
    kept = 0
    for i, unit_sizes in sizes.items():
        kept += int(np.sum(unit_sizes[top_k(selection[i], keep[i])]))
    for found, consumer, repeat in valid:
        removed = np.logical_and.reduce([~top_k(selection[p], keep[p]) for p in found])
        rows = coupled_rows(np.shape(views[found[0]])[3], repeat, removed)
        key = (consumer, keep[consumer])
        if key not in masks:  # the weights each input row keeps
            mask = structures[consumer].project(views[consumer], keep[consumer])
            masks[key] = np.count_nonzero(mask, axis=(0, 1, 3))
        kept -= int(np.sum(masks[key][rows]))
    return kept
