"""ADMM's Z/U steps on a whole model, and the `ADMMUpdate` callback that runs them.

The per-kernel part of ADMM (the penalty ``rho / 2 * ||W - Z + U||^2``, its
state and its Z/U step) is `tf_reweight.methods.admm.ADMMPenalty`; here the
steps are taken for every kernel of a model at once, with the keep counts of
`tf_reweight.pruning.allocate`.
"""

from __future__ import annotations

import math

import keras

from tf_reweight.callbacks.reweight import Reweight
from tf_reweight.core.checks import check_bool, check_number
from tf_reweight.methods.admm import ADMMPenalty
from tf_reweight.pruning import operations as pruning


def _active(model: keras.Model):
    """``(wrapper, kernel)`` pairs whose ADMM penalty is still on."""
    return [
        (w, pk)
        for w in pruning.require_wrappers(model)
        if not w.is_pruned
        for pk in w.pruned_kernels
        if isinstance(pk.penalty, ADMMPenalty) and pk.penalty.active
    ]


def _check_rho_growth(rho_factor, rho_max) -> tuple[float, float | None]:
    """Validates the growth of ``rho``: a factor >= 1 (rho never decreases)."""
    rho_factor = check_number("rho_factor", rho_factor, 1.0)
    if rho_max is not None:
        rho_max = check_number("rho_max", rho_max, 0.0, strict=True)
    return rho_factor, rho_max


def update(
    model: keras.Model,
    dual: bool = True,
    rho_factor: float = 1.0,
    rho_max: float | None = None,
) -> None:
    """One Z/U step for every active ADMM kernel of a model, then grows ``rho``.

    The Z-step projects ``W + U`` onto the constraint the hard prune meets:
    the budget (`tf_reweight.pruning.selected_masks`) ranks ``W + U`` at the
    current targets, with BatchNorm folded in, across layers in the
    ``"global"`` scope and with the kernels of a residual stream selected
    together, and ``Z`` keeps the units it selects.

    Args:
        model: A model from `tf_reweight.apply` with `ADMMPenalty`.
        dual: Also take the U-step (False: Z-step only, the initialization).
        rho_factor: Multiply ``rho`` by this after the step (>= 1).
        rho_max: Upper bound of ``rho`` (None: unbounded).

    Example:
    >>> update(pruned, dual=False)  # Z = project(W): the usual start
    >>> update(pruned, rho_factor=1.2, rho_max=1.0)  # one ADMM iteration
    """
    dual = check_bool("dual", dual)
    rho_factor, rho_max = _check_rho_growth(rho_factor, rho_max)
    active = {id(pk): pk for _, pk in _active(model)}
    if not active:
        return
    shifted = {key: pk.penalty.shifted(pk.canonical()) for key, pk in active.items()}
    for _, pk, support in pruning.selected_masks(model, shifted):
        if id(pk) in active:
            pk.penalty.update(pk.canonical(), support, dual=dual)
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
        milestones: Epochs at whose start to update instead of ``every``
            (see `Reweight`).

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
        milestones: list[int] | None = None,
    ):
        super().__init__(every, unit, milestones)
        self.rho_factor, self.rho_max = _check_rho_growth(rho_factor, rho_max)

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
