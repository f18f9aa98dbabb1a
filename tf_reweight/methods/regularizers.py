"""Sparsity penalties: `keras.regularizers.Regularizer` subclasses with state.

A penalty is configured by the user (its `get_config` holds only
hyperparameters) and *bound* to one kernel by `tf_reweight.PruningWrapper`,
which creates its state (the reweighting factors ``alpha``) as non-trainable
weights of the wrapper. State therefore travels with `.keras` files and
resumed training, while configs stay small.
"""

from __future__ import annotations

import keras
import numpy as np

from tf_reweight.core.checks import check_bool, check_number
from tf_reweight.core.layouts import KernelLayout
from tf_reweight.core.structures import Structure


class KernelPenalty(keras.regularizers.Regularizer):
    """Base class of penalties bound to one kernel and its structure.

    Subclasses implement `penalty(w4)` on the canonical kernel and, if they
    keep state, `build`, `refresh` and `deactivate`. `build` gives every
    penalty a ``refreshed_at`` counter, the training step of its last
    refresh (-1 before the first), which the refreshing callbacks keep so
    that a resumed `fit` refreshes exactly when the uninterrupted one would.
    """

    layout: KernelLayout | None = None
    structure: Structure | None = None
    refreshed_at: keras.Variable | None = None

    def build(
        self, layer: keras.layers.Layer, layout: KernelLayout, structure: Structure
    ) -> None:
        """Binds the penalty to a kernel; creates state on ``layer``.

        Args:
            layer: The layer that owns (and saves) the penalty's state.
            layout: The kernel's layout.
            structure: The sparsity structure whose groups are penalized.
        """
        self.layout, self.structure = layout, structure
        self.refreshed_at = layer.add_weight(
            name=f"{layout.weight_name}_refreshed_at",
            shape=(),
            dtype="int32",
            initializer=keras.initializers.Constant(-1),
            trainable=False,
        )

    def __call__(self, x):
        if self.layout is None:
            raise ValueError(
                f"{type(self).__name__} is bound to a kernel by "
                "`tf_reweight.apply`, which knows the kernel's layout and "
                "structure. Expected a penalty attached through `apply`. "
                f"Received: an unbound penalty called on shape {tuple(x.shape)}"
            )
        return self.penalty(self.layout.to_canonical(x))

    def penalty(self, w4):
        """The penalty value for a canonical kernel."""
        raise NotImplementedError

    def refresh(self, w4: np.ndarray, kept: np.ndarray) -> None:
        """Updates state from the current kernel.

        Args:
            w4: The canonical kernel as a NumPy array.
            kept: Boolean per penalty group: the groups the current target
                keeps (the top groups by norm).
        """
        del w4, kept

    def deactivate(self) -> None:
        """Turns the penalty off (after the final hard prune)."""


def group_norms(structure: Structure, w4, squared: bool = False):
    """The L2 norm (or squared norm) of every penalty group of a kernel.

    Args:
        structure: The structure whose `groups` define the groups.
        w4: The canonical kernel (tensor or array).
        squared: Return squared norms.

    Returns:
        A ``(G,)`` tensor. Plain norms are smoothed by ``1e-12`` under the
        square root so that their gradient stays finite at zero.

    Example:
    >>> from tf_reweight import structures
    >>> group_norms(structures.get("filter"), np.ones((3, 3, 2, 4))).shape
    (4,)
    """
    sq = keras.ops.sum(keras.ops.square(structure.groups(w4)), axis=1)
    return sq if squared else keras.ops.sqrt(sq + 1e-12)


@keras.saving.register_keras_serializable(package="tf_reweight")
class ReweightedGroupPenalty(KernelPenalty):
    """Reweighted group regularization.

    ``lambda * sum_g alpha_g * ||W_g||_2`` where ``alpha_g = 1 / (||W_g|| + eps)``
    is refreshed during training (by `tf_reweight.callbacks.Reweight`), so
    groups that are small get pushed to zero ever harder while large groups
    are left alone. In *bounded* mode the groups the sparsity target keeps
    (the top ``1 - sparsity`` by norm) get ``alpha = 0``: only the groups due
    to be pruned are pressed. Bounded mode is off by default: on LeNet-5 it
    lost to plain reweighting (99.05% vs 99.13% at 50x, 93.2% vs 96.9% at
    630x; see BENCHMARKS.md), because it freezes the set of survivors at the
    first refresh. Adversarial pruning (`tf_reweight.robust.mrpf.adversarial_prune`)
    turns it on by default, because there it kept more robust accuracy. With
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


def get(identifier) -> KernelPenalty | None:
    """Returns a penalty from an instance, a config dict or None."""
    if identifier is None or isinstance(identifier, KernelPenalty):
        return identifier
    penalty = keras.saving.deserialize_keras_object(identifier)
    if not isinstance(penalty, KernelPenalty):
        raise ValueError(
            "Expected a tf_reweight penalty (a KernelPenalty). Received: "
            f"method={identifier!r}"
        )
    return penalty
