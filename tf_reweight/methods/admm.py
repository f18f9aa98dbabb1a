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

The Z and U steps run every few epochs or steps (`ADMMUpdate`), and ``rho``
may grow at each of them so that ``W`` is pulled ever closer to ``S``. Then
`tf_reweight.callbacks.HardPrune` projects ``W`` itself, switches the penalty
off, and masked retraining follows, exactly as with reweighting.

``Z``, ``U`` and ``rho`` are non-trainable weights of the
`tf_reweight.PruningWrapper`, so a `.keras` round trip restores them.

Example:
>>> pruned = tf_reweight.apply(model, "unstructured", "100x",
...                            method=ADMMPenalty(rho=1e-3))
>>> pruned.compile("adam", loss, metrics=["accuracy"])
>>> update = ADMMUpdate(every=100, unit="step", rho_factor=1.2, rho_max=1.0)
>>> pruned.fit(x, y, epochs=8, callbacks=[update, tf_reweight.HardPrune(4)])

References:
    Zhang, Ye, Zhang et al., "A Systematic DNN Weight Pruning Framework using
    Alternating Direction Method of Multipliers", ECCV 2018 (arXiv
    1804.03294); Boyd et al., "Distributed Optimization and Statistical
    Learning via the Alternating Direction Method of Multipliers",
    Foundations and Trends in Machine Learning 3 (2011).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from tf_reweight.callbacks.pruning_callbacks import Reweight
from tf_reweight.core.checks import check_number
from tf_reweight.core.structures import Structure
from tf_reweight.methods.regularizers import KernelPenalty
from tf_reweight.pruning import operations as pruning


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
            small: for LeNet-5 on MNIST with Adam 1e-3 and a Z/U step every
            100 steps, 1e-4 to 3e-3 worked and 1e-3 was best.

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

    def update(self, w4, keep: int, dual: bool = True) -> None:
        """The Z-step ``Z = project(W + U)`` and, if ``dual``, ``U += W - Z``.

        Args:
            w4: The canonical kernel as a NumPy array.
            keep: Units the constraint keeps (see `tf_reweight.pruning.allocate`).
            dual: Also take the U-step.
        """
        v = np.asarray(w4, np.float32) + self._canonical(self.u)
        z = v * self.structure.project(v, keep)
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


def _active(model: keras.Model):
    """``(wrapper, kernel)`` pairs whose ADMM penalty is still on."""
    return [
        (w, pk)
        for w in pruning.require_wrappers(model)
        if not w.is_pruned
        for pk in w.pruned_kernels
        if isinstance(pk.penalty, ADMMPenalty) and pk.penalty.active
    ]


def update(
    model: keras.Model,
    dual: bool = True,
    rho_factor: float = 1.0,
    rho_max: float | None = None,
) -> None:
    """One Z/U step for every active ADMM kernel of a model, then grows ``rho``.

    Keep counts come from `tf_reweight.pruning.allocate` at the current
    targets, so in the ``"global"`` scope the per-layer budgets are those the
    hard prune would use now (ranked on ``W``), and each kernel's Z-step
    keeps its budget's largest units of ``W + U``.

    Args:
        model: A model from `tf_reweight.apply` with `ADMMPenalty`.
        dual: Also take the U-step (False: Z-step only, the initialization).
        rho_factor: Multiply ``rho`` by this after the step (>= 1).
        rho_max: Upper bound of ``rho`` (None: unbounded).

    Example:
    >>> update(pruned, dual=False)  # Z = project(W): the usual start
    >>> update(pruned, rho_factor=1.2, rho_max=1.0)  # one ADMM iteration
    """
    active = {id(pk) for _, pk in _active(model)}
    if not active:
        return
    for _, pk, keep in pruning.allocate(model):
        if id(pk) in active:
            pk.penalty.update(pk.canonical(), keep, dual=dual)
            rho = float(keras.ops.convert_to_numpy(pk.penalty.rho)) * rho_factor
            pk.penalty.set_rho(rho if rho_max is None else min(rho, rho_max))


def residual(model: keras.Model) -> float | None:
    """The relative primal residual ``||W - Z|| / ||W||`` over ADMM kernels.

    Args:
        model: A model from `tf_reweight.apply` with `ADMMPenalty`.

    Returns:
        The residual over all kernels whose ADMM penalty is on, or None
        when there is none (for example after the hard prune).

    Example:
    >>> residual(pruned)  # 0 when W already satisfies the constraint
    """
    parts = [pk.penalty.residual(pk.canonical()) for _, pk in _active(model)]
    if not parts:
        return None
    diff, norm = (sum(values) for values in zip(*parts, strict=True))
    return math.sqrt(diff / norm) if norm > 0.0 else 0.0


@keras.saving.register_keras_serializable(package="tf_reweight")
class ADMMUpdate(Reweight):
    """Runs the ADMM Z/U steps during `fit`, with an increasing ``rho``.

    A `Reweight` (same period arguments) whose refresh is ADMM's.

    When training of a model begins for the first time it takes a Z-step
    (``Z = project(W)``, the projection of the trained weights), so a new
    model starts well. Then every ``every`` epochs or steps it takes a Z/U
    step and multiplies ``rho`` by ``rho_factor`` (capped at ``rho_max``).
    As with `Reweight`, the step of the last update is saved in the model,
    so a resumed run updates exactly as the uninterrupted one. The relative residual
    ``||W - Z|| / ||W||`` is written to the epoch logs as ``admm_residual``
    while ADMM is on. Hard-pruned layers are left alone.

    Args:
        every: Update period.
        unit: ``"epoch"`` or ``"step"``.
        rho_factor: Growth of ``rho`` per update (>= 1; 1 keeps it fixed).
        rho_max: Upper bound of ``rho`` (> 0), or None.

    Example:
    >>> update = ADMMUpdate(every=100, unit="step", rho_factor=1.2, rho_max=1.0)
    >>> model.fit(x, y, epochs=8, callbacks=[update, tf_reweight.HardPrune(4)])
    """

    def __init__(
        self,
        every: int = 1,
        unit: str = "epoch",
        rho_factor: float = 1.0,
        rho_max: float | None = None,
    ):
        super().__init__(every, unit)
        # rho never decreases.
        self.rho_factor = check_number("rho_factor", rho_factor, 1.0)
        if rho_max is not None:
            rho_max = check_number("rho_max", rho_max, 0.0, strict=True)
        self.rho_max = rho_max

    def _penalties(self) -> list:
        return [pk.penalty for _, pk in _active(self.model)]

    def _refresh(self, first: bool) -> None:
        if first:
            update(self.model, dual=False)
        else:
            update(self.model, rho_factor=self.rho_factor, rho_max=self.rho_max)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        value = residual(self.model)
        if logs is not None and value is not None:
            logs["admm_residual"] = value

    def get_config(self):
        return {
            **super().get_config(),
            "rho_factor": self.rho_factor,
            "rho_max": self.rho_max,
        }
