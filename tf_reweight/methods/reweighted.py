"""Reweighted group regularization, the library's main pruning method."""

from __future__ import annotations

import keras
import numpy as np

from tf_reweight.core.checks import check_bool, check_number, check_number_or_auto
from tf_reweight.methods.penalty import KernelPenalty, group_norms

AUTO = "auto"
# penalty="auto": lambda = AUTO_PENALTY_RATIO * data loss / groups kept.
AUTO_PENALTY_RATIO = 2.5
# eps="auto": eps = AUTO_EPS_SCALE * median group norm * sqrt(groups / kept).
AUTO_EPS_SCALE = 0.01


def auto_eps(norms: np.ndarray, kept: np.ndarray) -> float:
    """The ``eps`` of ``eps="auto"`` for one kernel's group norms.

    ``eps = AUTO_EPS_SCALE * median(norms) * sqrt(G / K)`` for ``G`` groups of
    which the current target keeps ``K``: it follows the kernel's scale (so a
    kernel before BatchNorm, whose scale is free, is treated like any other)
    and grows with the compression rate, so that high rates press the groups
    between zero and the threshold more evenly.

    Args:
        norms: The group norms of the kernel.
        kept: Boolean per group, the groups the target keeps.

    Returns:
        A positive float.

    Example:
    >>> auto_eps(np.full(100, 0.05), np.arange(100) < 25)  # 0.01 * 0.05 * 2
    0.001
    """
    norms = np.asarray(norms, np.float64)
    rate = norms.size / max(int(np.count_nonzero(kept)), 1)
    scale = float(np.median(norms)) or float(np.max(norms)) or 1.0
    return AUTO_EPS_SCALE * scale * float(np.sqrt(rate))


def auto_penalty(data_loss: float, kept_groups: int) -> float:
    """The ``lambda`` of ``penalty="auto"``.

    ``lambda = AUTO_PENALTY_RATIO * data_loss / kept_groups``: at the first
    refresh every group's term ``alpha_g * ||W_g||`` is about 1, so the
    penalty starts at about ``AUTO_PENALTY_RATIO`` times the data loss per
    kept group for every group, that is ``AUTO_PENALTY_RATIO * rate`` times
    the data loss in all: higher compression rates press harder.

    Args:
        data_loss: The training loss before any penalty (> 0 and finite); a
            loss below 1e-4 counts as 1e-4.
        kept_groups: The number of groups the target keeps, over every kernel
            with an auto penalty (>= 1).

    Returns:
        The penalty value.

    Raises:
        ValueError: If the loss is not a finite positive number.

    Example:
    >>> auto_penalty(0.05, 1000)  # 2.5 * 0.05 / 1000
    0.000125
    """
    loss = check_number("data_loss", data_loss, 0.0)
    return AUTO_PENALTY_RATIO * max(loss, 1e-4) / max(int(kept_groups), 1)


@keras.saving.register_keras_serializable(package="tf_reweight")
class ReweightedGroupPenalty(KernelPenalty):
    """Reweighted group regularization.

    ``lambda * sum_g alpha_g * ||W_g||_2`` where ``alpha_g = 1 / (||W_g|| + eps)``
    is refreshed during training (by `tf_reweight.callbacks.Reweight`), so
    groups that are small get pushed to zero ever harder while large groups
    are left alone. In *bounded* mode the groups the sparsity target keeps
    (the top ``1 - sparsity`` by norm) get ``alpha = 0``: only the groups due
    to be pruned are pressed. Bounded mode is off by default: it freezes the
    set of survivors at the first refresh, and in clean pruning it lost to
    plain reweighting (BENCHMARKS.md has the figures). Adversarial pruning
    (`tf_reweight.robust.mrpf.adversarial_prune`) turns it on by default,
    because there it kept more robust accuracy (also in BENCHMARKS.md). With
    ``squared=True`` the penalty is
    ``lambda * sum_g alpha_g * ||W_g||^2`` with ``alpha_g = 1/(||W_g||^2 + eps)``.

    ``penalty="auto"`` sets ``lambda`` from the data loss of the first
    training batch (`auto_penalty`, by `tf_reweight.callbacks.Reweight`): it
    is 0 until then, and it is saved with the model, so resumed training
    keeps it. ``eps="auto"`` computes ``eps`` at the first refresh from the
    kernel's group norms and the share of groups its target keeps
    (`auto_eps`), and keeps it (also saved): were it to follow the shrinking
    norms, ``alpha`` of the groups near zero would grow without bound.

    Args:
        penalty: The single knob, ``lambda`` (>= 0), or ``"auto"`` (the
            default).
        eps: Keeps ``alpha`` finite for zero groups (> 0), or ``"auto"``
            (the default).
        squared: Use squared group norms.
        bounded: Zero ``alpha`` on the groups the target keeps (off by
            default).
        spare_scale_free: Leave unpenalized the filter-pruned kernels whose
            every filter BatchNorm normalizes (the default;
            `tf_reweight.pruning.importance.scale_free`): BN divides a
            filter's scale out, so the penalty would shrink such filters
            without changing the network's function until they die at BN's
            epsilon, in an order unrelated to their importance. Their
            filters are then selected on the folded ranking at the hard
            prune. BENCHMARKS.md has the measurement.

    Example:
    >>> model = tf_reweight.apply(model, structure="filter", target=0.9,
    ...                           method=ReweightedGroupPenalty(1e-4))

    References:
        Fan, Zhang, Ma et al., "A Unified DNN Weight Compression Framework
        Using Reweighted Optimization Methods", Intelligent Systems with
        Applications 27 (2025); Zhang et al., DAC 2021 (arXiv 2004.05531).
    """

    def __init__(
        self,
        penalty: float | str = "auto",
        eps: float | str = "auto",
        squared: bool = False,
        bounded: bool = False,
        spare_scale_free: bool = True,
    ):
        self.lam = check_number_or_auto("penalty", penalty, 0.0)
        self.eps = check_number_or_auto("eps", eps, 0.0, strict=True)
        self.squared = check_bool("squared", squared)
        self.bounded = check_bool("bounded", bounded)
        self.spare_scale_free = check_bool("spare_scale_free", spare_scale_free)
        self.alpha = None
        self.auto_lambda = None
        self.auto_eps = None

    def build(self, layer, layout, structure):
        super().build(layer, layout, structure)
        self.alpha = layer.add_weight(
            name=f"{layout.weight_name}_alpha",
            shape=(structure.num_groups(layout.canonical),),
            initializer="ones",
            trainable=False,
        )
        if self.lam == AUTO:
            # -1: not set yet (the penalty is 0 until `calibrate`).
            self.auto_lambda = layer.add_weight(
                name=f"{layout.weight_name}_lambda",
                shape=(),
                initializer=keras.initializers.Constant(-1.0),
                trainable=False,
            )
        if self.eps == AUTO:
            # -1: not set yet (set at the first refresh).
            self.auto_eps = layer.add_weight(
                name=f"{layout.weight_name}_eps",
                shape=(),
                initializer=keras.initializers.Constant(-1.0),
                trainable=False,
            )

    @property
    def calibrated(self) -> float | None:
        """The ``lambda`` that ``penalty="auto"`` set, or None."""
        if self.auto_lambda is None:
            return None
        value = float(keras.ops.convert_to_numpy(self.auto_lambda))
        return value if value >= 0 else None

    @property
    def needs_calibration(self) -> bool:
        """Whether ``lambda`` is ``"auto"`` and not set yet."""
        return (
            self.auto_lambda is not None
            and float(keras.ops.convert_to_numpy(self.auto_lambda)) < 0
        )

    def calibrate(self, data_loss: float, kept_groups: int) -> float:
        """Sets the ``lambda`` of ``penalty="auto"`` (see `auto_penalty`)."""
        if self.auto_lambda is None:
            return super().calibrate(data_loss, kept_groups)
        value = auto_penalty(data_loss, kept_groups)
        self.auto_lambda.assign(np.float32(value))
        return value

    def _lambda(self, dtype):
        if self.auto_lambda is None:
            return self.lam
        return keras.ops.maximum(keras.ops.cast(self.auto_lambda, dtype), 0.0)

    def _norms(self, w4):
        return group_norms(self.structure, w4, self.squared)

    def penalty(self, w4):
        return self._lambda(w4.dtype) * keras.ops.sum(
            keras.ops.cast(self.alpha, w4.dtype) * self._norms(w4)
        )

    def refresh(self, w4, kept):
        norms = keras.ops.convert_to_numpy(self._norms(np.asarray(w4, np.float32)))
        eps = self.eps
        if self.auto_eps is not None:
            eps = float(keras.ops.convert_to_numpy(self.auto_eps))
            if eps <= 0:
                eps = auto_eps(norms, kept)
                self.auto_eps.assign(np.float32(eps))
        alpha = 1.0 / (norms + eps)
        if self.bounded:
            alpha = np.where(kept, 0.0, alpha)
        self.alpha.assign(alpha.astype(np.float32))

    def deactivate(self):
        self.alpha.assign(np.zeros(self.alpha.shape, np.float32))

    @classmethod
    def from_config(cls, config):
        # Configs saved before `spare_scale_free` existed penalized every kernel.
        return cls(**{"spare_scale_free": False, **config})

    def get_config(self):
        return {
            "penalty": self.lam,
            "eps": self.eps,
            "squared": self.squared,
            "bounded": self.bounded,
            "spare_scale_free": self.spare_scale_free,
        }
