"""Static group lasso, the baseline that reweighting is compared with."""

from __future__ import annotations

import keras
import numpy as np

from tf_reweight.core.checks import check_number
from tf_reweight.methods.penalty import KernelPenalty, group_norms


@keras.saving.register_keras_serializable(package="tf_reweight")
class GroupLassoPenalty(KernelPenalty):
    """Static group lasso: ``lambda * sum_g ||W_g||_2``.

    Every group has the fixed weight ``alpha = 1`` (no reweighting), so large
    groups are shrunk as hard as small ones. With the ``"unstructured"``
    structure this is the L1 penalty. It is the static baseline that
    reweighting is compared with (``benchmarks/frontier.py``). Its only state
    is an on/off scale (a scalar non-trainable weight of the wrapper) so that
    `deactivate`, called by the final hard prune, switches it off in the
    compiled training step and in saved models.

    Args:
        penalty: ``lambda`` (>= 0).

    Example:
    >>> model = tf_reweight.apply(model, structure="filter", target=0.9,
    ...                           method=GroupLassoPenalty(1e-5))

    References:
        Yuan and Lin, "Model selection and estimation in regression with
        grouped variables", JRSS B 68 (2006); Wen et al., "Learning
        Structured Sparsity in Deep Neural Networks", NeurIPS 2016.
    """

    def __init__(self, penalty: float = 1e-4):
        self.lam = check_number("penalty", penalty, 0.0)
        self.scale = None

    def build(self, layer, layout, structure):
        super().build(layer, layout, structure)
        self.scale = layer.add_weight(
            name=f"{layout.weight_name}_lasso_scale",
            shape=(),
            initializer="ones",
            trainable=False,
        )

    def penalty(self, w4):
        scale = keras.ops.cast(self.scale, w4.dtype)
        return self.lam * scale * keras.ops.sum(group_norms(self.structure, w4))

    def deactivate(self):
        self.scale.assign(np.float32(0.0))

    def get_config(self):
        return {"penalty": self.lam}
