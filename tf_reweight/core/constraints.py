"""Projections applied after every optimizer step (`keras.constraints`)."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="tf_reweight")
class MaskConstraint(keras.constraints.Constraint):
    """Keeps pruned weights at exactly zero: ``w -> where(mask, w, 0)``.

    Keras applies a variable's constraint after each optimizer update, so a
    hard-pruned kernel stays pruned through masked retraining. The mask is a
    non-trainable weight of `tf_reweight.PruningWrapper` (saved with the
    model); the wrapper binds it here. An optional ``then`` constraint (for
    example `tf_reweight.QuantizeConstraint`) is applied to the masked kernel.
    A pruned weight becomes 0 even when it is NaN or inf (``w * 0`` would
    keep it NaN).

    On the JAX backend the optimizer step cannot read the mask, so the
    wrapper binds no mask (``mask=None``: only ``then`` applies) and masks
    the kernel in its forward pass instead (see `tf_reweight.core.backend_support`).

    Args:
        mask: The 0/1 mask variable (bound by the wrapper), or None.
        then: An optional constraint applied after masking.

    Example:
    >>> mask = keras.Variable(np.array([1.0, 0.0]))
    >>> MaskConstraint(mask)(keras.ops.ones((2,)))  # [1., 0.]
    """

    def __init__(self, mask=None, then: keras.constraints.Constraint | None = None):
        self.mask = mask
        self.then = keras.constraints.get(then)

    def __call__(self, w):
        if self.mask is not None:
            w = keras.ops.convert_to_tensor(w)
            keep = keras.ops.not_equal(self.mask, 0)
            w = keras.ops.where(keep, w, keras.ops.zeros_like(w))
        return w if self.then is None else self.then(w)

    def get_config(self):
        return {"then": keras.constraints.serialize(self.then) if self.then else None}
