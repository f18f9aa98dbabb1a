"""The base class of sparsity penalties, their group norms, and `get`.

A penalty is a `keras.regularizers.Regularizer` subclass with state. It is
configured by the user (its `get_config` holds only hyperparameters) and
*bound* to one kernel by `tf_reweight.PruningWrapper`, which creates its state
(for example the reweighting factors ``alpha``) as non-trainable weights of
the wrapper. State therefore travels with `.keras` files and resumed
training, while configs stay small.
"""

from __future__ import annotations

import keras
import numpy as np

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
    # Whether `tf_reweight.pruning.refresh_penalties` switches the penalty off
    # on kernels whose filters BatchNorm makes scale-free.
    spare_scale_free: bool = False

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

    @property
    def calibrated(self) -> float | None:
        """The value `calibrate` set, or None (not set, or not ``"auto"``)."""
        return None

    @property
    def needs_calibration(self) -> bool:
        """Whether the penalty waits for `calibrate` (an ``"auto"`` value)."""
        return False

    def calibrate(self, data_loss: float, kept_groups: int) -> float:
        """Sets a penalty value chosen during training (``"auto"``).

        `tf_reweight.pruning.operations.calibrate_penalties` calls it once,
        with what the whole model knows.

        Args:
            data_loss: The training loss of the first batch, before any
                penalty.
            kept_groups: The groups the target keeps over every kernel that
                waits for calibration.

        Returns:
            The value set.
        """
        raise ValueError(
            f"{type(self).__name__} has no value to calibrate. Received: "
            f"data_loss={data_loss!r}, kept_groups={kept_groups!r}"
        )


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
