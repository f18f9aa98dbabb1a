"""Reweighted group regularization, the library's main pruning method."""

from __future__ import annotations

import keras
import numpy as np

from tf_reweight.core.checks import check_bool, check_number
from tf_reweight.methods.penalty import KernelPenalty, group_norms


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

    Args:
        penalty: The single knob, ``lambda`` (>= 0).
        eps: Keeps ``alpha`` finite for zero groups (> 0).
        squared: Use squared group norms.
        bounded: Zero ``alpha`` on the groups the target keeps (off by
            default).

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
        penalty: float = 1e-4,
        eps: float = 1e-3,
        squared: bool = False,
        bounded: bool = False,
    ):
        self.lam = check_number("penalty", penalty, 0.0)
        self.eps = check_number("eps", eps, 0.0, strict=True)
        self.squared = check_bool("squared", squared)
        self.bounded = check_bool("bounded", bounded)
        self.alpha = None

    def build(self, layer, layout, structure):
        super().build(layer, layout, structure)
        self.alpha = layer.add_weight(
            name=f"{layout.weight_name}_alpha",
            shape=(structure.num_groups(layout.canonical),),
            initializer="ones",
            trainable=False,
        )

    def _norms(self, w4):
        return group_norms(self.structure, w4, self.squared)

    def penalty(self, w4):
        return self.lam * keras.ops.sum(
            keras.ops.cast(self.alpha, w4.dtype) * self._norms(w4)
        )

    def refresh(self, w4, kept):
        norms = keras.ops.convert_to_numpy(self._norms(np.asarray(w4, np.float32)))
        alpha = 1.0 / (norms + self.eps)
        if self.bounded:
            alpha = np.where(kept, 0.0, alpha)
        self.alpha.assign(alpha.astype(np.float32))

    def deactivate(self):
        self.alpha.assign(np.zeros(self.alpha.shape, np.float32))

    def get_config(self):
        return {
            "penalty": self.lam,
            "eps": self.eps,
            "squared": self.squared,
            "bounded": self.bounded,
        }
