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
from tf_reweight.methods.penalty import KernelPenalty


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

    def shifted(self, w4) -> np.ndarray:
        """``W + U`` for a canonical kernel: what the Z-step projects."""
        return np.asarray(w4, np.float32) + self._canonical(self.u)

    def update(self, w4, support, dual: bool = True) -> None:
        """The Z-step ``Z = (W + U) * support`` and, if ``dual``, ``U += W - Z``.

        Args:
            w4: The canonical kernel as a NumPy array.
            support: The canonical 0/1 mask of the projection: the units the
                budget keeps when it ranks ``W + U``
                (`tf_reweight.pruning.selected_masks`), so that ``Z`` keeps
                the units the hard prune will keep (BatchNorm folded in,
                residual streams selected together).
            dual: Also take the U-step.
        """
        v = self.shifted(w4)
        z = v * np.asarray(support, np.float32)
        self.z.assign(self.layout.from_canonical(z))
        if dual:
            self.u.assign(self.layout.from_canonical(v - z))

    def refresh(self, w4, kept):
        """A full Z/U step onto the penalty groups in ``kept``.

        This lets `tf_reweight.refresh_penalties` (and the `Reweight`
        callback) drive ADMM too: ``kept`` are the groups the budget keeps on
        the weights now. `ADMMUpdate` calls `update` with the budget's
        selection on ``W + U``.
        """
        kept = np.asarray(kept, np.float32)[:, None]
        support = keras.ops.convert_to_numpy(self.structure.ungroup(kept, np.shape(w4)))
        self.update(w4, support)

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
