"""ADMM pruning: the sparsity target as a hard constraint.

Pruning is posed as ``min_W loss(W)`` subject to ``W in S``, where ``S`` holds
the kernels that keep the target's number of units of a structure. ADMM
(alternating direction method of multipliers) splits it with a copy ``Z`` of
the weights and a scaled dual variable ``U``:

- *W-step*: ordinary training on ``loss(W) + rho / 2 * ||W - Z + U||^2``
  (`ADMMPenalty`, every training step);
- *Z-step*: ``Z = project_S(W + U)``, the Euclidean projection onto the
  constraint: keep the units of ``W + U`` that the structure's `project`
  keeps and zero the rest;
- *U-step*: ``U = U + W - Z``.

The Z and U steps run every few epochs or steps (the callback
`tf_reweight.ADMMUpdate`, which calls `tf_reweight.admm.update` on the whole
model), and ``rho`` may grow at each of them so that ``W`` is
pulled ever closer to ``S``. Then `tf_reweight.callbacks.HardPrune` projects
``W`` itself, switches the penalty off, and masked retraining follows,
exactly as with reweighting. This module holds the per-kernel part and
imports `tf_reweight.core` only.

``Z``, ``U`` and ``rho`` are non-trainable weights of the
`tf_reweight.PruningWrapper`, so a `.keras` round trip restores them.

Example:
>>> pruned = tf_reweight.apply(model, "unstructured", "100x",
...                            method=ADMMPenalty(rho=1e-3))
>>> pruned.compile("adam", loss, metrics=["accuracy"])
>>> update = tf_reweight.ADMMUpdate(every=100, unit="step", rho_factor=1.2,
...                                 rho_max=1.0)
>>> pruned.fit(x, y, epochs=8, callbacks=[update, tf_reweight.HardPrune(4)])

References:
    Zhang, Ye, Zhang et al., "A Systematic DNN Weight Pruning Framework using
    Alternating Direction Method of Multipliers", ECCV 2018 (arXiv
    1804.03294); Boyd et al., "Distributed Optimization and Statistical
    Learning via the Alternating Direction Method of Multipliers",
    Foundations and Trends in Machine Learning 3 (2011).
"""

from __future__ import annotations

import keras
import numpy as np

from tf_reweight.core.checks import check_number
from tf_reweight.core.structures import Structure
from tf_reweight.methods.penalty import KernelPenalty


def units_kept(structure: Structure, kept: np.ndarray, shape4) -> int:
    """The keep count (in units) behind a boolean vector of kept groups.

    Units are the penalty groups for most structures; for N:M and pattern
    pruning the groups are single weights and a unit keeps
    ``structure.unit_weights`` of them.

    Args:
        structure: The kernel's structure.
        kept: Boolean per penalty group, as passed to `KernelPenalty.refresh`.
        shape4: The canonical kernel shape.

    Returns:
        The number of units to keep.

    Example:
    >>> from tf_reweight import structures
    >>> units_kept(structures.get("2:4"), np.ones(64, bool), (1, 1, 8, 16))
    32
    """
    count = int(np.count_nonzero(kept))
    if structure.num_units(shape4) == structure.num_groups(shape4):
        return count
    return max(count // structure.unit_weights(shape4), 1)


@keras.saving.register_keras_serializable(package="tf_reweight")
class ADMMPenalty(KernelPenalty):
    """The ADMM proximal term ``rho / 2 * ||W - Z + U||^2``.

    `build` creates ``Z`` and ``U`` (kernel-shaped, zero) and ``rho`` (a
    scalar starting at ``rho``) as non-trainable weights of the wrapper.
    `update` is the Z/U step; `ADMMUpdate` calls it during `fit` and starts
    with a Z-step, so that ``Z`` is the projection of the trained weights
    before the first training step. `deactivate` (the final hard prune) sets
    ``rho`` to 0.

    Args:
        rho: The initial penalty parameter (> 0). The loss is a mean over
            the batch while this term sums over all weights, so ``rho`` is
            small; BENCHMARKS.md has the values tuned per model.

    Example:
    >>> pruned = tf_reweight.apply(model, "filter", "4x", method=ADMMPenalty(1e-3))

    References:
        Zhang et al., "A Systematic DNN Weight Pruning Framework using
        Alternating Direction Method of Multipliers", ECCV 2018.
    """

    def __init__(self, rho: float = 1e-3):
        self.initial_rho = check_number("rho", rho, 0.0, strict=True)
        self.z = self.u = self.rho = None

    def build(self, layer, layout, structure):
        super().build(layer, layout, structure)

        def state(suffix, shape, initializer):
            return layer.add_weight(
                name=f"{layout.weight_name}_admm_{suffix}",
                shape=shape,
                initializer=initializer,
                trainable=False,
            )

        self.z = state("z", layout.shape, "zeros")
        self.u = state("u", layout.shape, "zeros")
        self.rho = state("rho", (), keras.initializers.Constant(self.initial_rho))

    def _canonical(self, variable) -> np.ndarray:
        return self.layout.to_canonical(keras.ops.convert_to_numpy(variable))

    def penalty(self, w4):
        z = self.layout.to_canonical(keras.ops.cast(self.z, w4.dtype))
        u = self.layout.to_canonical(keras.ops.cast(self.u, w4.dtype))
        rho = keras.ops.cast(self.rho, w4.dtype)
        return 0.5 * rho * keras.ops.sum(keras.ops.square(w4 - z + u))

    @property
    def active(self) -> bool:
        """Whether ``rho > 0`` (False after `deactivate`)."""
        return bool(keras.ops.convert_to_numpy(self.rho) > 0.0)

    def update(self, w4, keep: int, dual: bool = True, scale=None) -> None:
        """The Z-step ``Z = project(W + U)`` and, if ``dual``, ``U += W - Z``.

        Args:
            w4: The canonical kernel as a NumPy array.
            keep: Units the constraint keeps (see `tf_reweight.pruning.allocate`).
            dual: Also take the U-step.
            scale: None, or a factor broadcast against ``w4`` that the units
                are ranked with (`tf_reweight.pruning.importance.ranking_scale`,
                BatchNorm folded in), so that Z keeps the units the hard prune
                will keep.
        """
        v = np.asarray(w4, np.float32) + self._canonical(self.u)
        ranked = v if scale is None else v * np.asarray(scale, np.float32)
        z = v * self.structure.project(ranked, keep)
        self.z.assign(self.layout.from_canonical(z))
        if dual:
            self.u.assign(self.layout.from_canonical(v - z))

    def refresh(self, w4, kept):
        """A full Z/U step, with the keep count read from ``kept``.

        This lets `tf_reweight.refresh_penalties` (and the `Reweight`
        callback) drive ADMM too; `ADMMUpdate` calls `update` directly.
        """
        self.update(w4, units_kept(self.structure, kept, np.shape(w4)))

    def set_rho(self, rho: float) -> None:
        """Changes ``rho`` and rescales the scaled dual ``U`` by ``old / new``."""
        old = float(keras.ops.convert_to_numpy(self.rho))
        if old > 0.0 and rho != old:
            self.u.assign(keras.ops.convert_to_numpy(self.u) * np.float32(old / rho))
        self.rho.assign(np.float32(rho))

    def residual(self, w4) -> tuple[float, float]:
        """``(||W - Z||^2, ||W||^2)`` for a canonical kernel."""
        w4 = np.asarray(w4, np.float32)
        diff = w4 - self._canonical(self.z)
        return float(np.sum(diff * diff)), float(np.sum(w4 * w4))

    def deactivate(self):
        self.rho.assign(np.float32(0.0))

    def get_config(self):
        return {"rho": self.initial_rho}
