"""`PruningWrapper`: the layer that owns a pruned layer's state.

Keras 3 saves the variables that layers track, and configs. So the wrapper
holds, as non-trainable weights, everything a pruning method changes during
training: one 0/1 mask per kernel, the penalty's state (reweighting factors,
ADMM's Z and U), the current sparsity target and whether the final hard prune
happened. A `.keras` round trip restores all of it, and a resumed `fit`
continues where it stopped.

The wrapped layer's kernel variables carry the bound penalty as their
``regularizer`` and a `MaskConstraint` as their ``constraint``; the wrapped
layer's own config stays untouched, so `tf_reweight.strip` gives back plain
layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from tf_reweight import backend_support, regularizers, structures
from tf_reweight.constraints import MaskConstraint
from tf_reweight.layouts import KernelLayout, kernel_layouts
from tf_reweight.regularizers import KernelPenalty


@dataclass
class PrunedKernel:
    """One pruned kernel of a wrapped layer.

    Attributes:
        layout: How the kernel maps to the canonical 4-D view.
        variable: The kernel variable of the wrapped layer.
        mask: The 0/1 mask variable (same shape as the kernel).
        penalty: The bound penalty, or None.
    """

    layout: KernelLayout
    variable: keras.Variable
    mask: keras.Variable
    penalty: KernelPenalty | None

    def canonical(self) -> np.ndarray:
        """The current kernel in the canonical view, as NumPy."""
        # backend hook: read the masked kernel (stored pruned weights may move on JAX).
        return np.reshape(backend_support.masked_value(self), self.layout.canonical)

    def assign_mask(self, mask4: np.ndarray) -> None:
        """Installs a canonical mask and zeroes the pruned weights."""
        mask = np.reshape(mask4, self.layout.shape).astype(np.float32)
        self.mask.assign(mask)
        self.variable.assign(keras.ops.convert_to_numpy(self.variable) * mask)


@keras.saving.register_keras_serializable(package="tf_reweight")
class PruningWrapper(keras.layers.Wrapper):
    """Wraps a Dense or convolution layer whose kernels are pruned.

    Users normally get wrappers from `tf_reweight.apply` rather than building
    them by hand.

    Args:
        layer: The layer to prune (Dense, Conv1D, Conv2D, DepthwiseConv2D or
            SeparableConv2D).
        structure: A structure name or `tf_reweight.structures.Structure`.
        target: The final sparsity of this layer's kernels, in (0, 1).
        scope: ``"global"`` (ranked together with the other global layers)
            or ``"layer"`` (this layer alone meets ``target``).
        method: A `KernelPenalty` (for example `ReweightedGroupPenalty`) or
            None for no penalty.
        kernels: Attribute names of the kernels to prune; defaults to all the
            layer's prunable kernels.
        **kwargs: Base `keras.layers.Layer` arguments.

    Example:
    >>> layer = PruningWrapper(keras.layers.Dense(10), structure="unstructured",
    ...                        target=0.9, method=ReweightedGroupPenalty(1e-4))
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        structure="unstructured",
        target: float = 0.9,
        scope: str = "global",
        method=None,
        kernels: list[str] | None = None,
        **kwargs,
    ):
        kwargs.setdefault("name", layer.name)
        super().__init__(layer, **kwargs)
        if scope not in ("global", "layer"):
            raise ValueError(
                f"`scope` must be 'global' or 'layer'. Received: scope={scope!r}"
            )
        self.structure = structures.get(structure)
        self.target = float(target)
        self.scope = scope
        self.method = regularizers.get(method)
        self.kernel_names = None if kernels is None else list(kernels)
        self.pruned_kernels: list[PrunedKernel] = []

    def build(self, input_shape=None):
        super().build(input_shape)
        layouts = kernel_layouts(self.layer)
        if self.kernel_names is not None:
            layouts = [lo for lo in layouts if lo.attr in self.kernel_names]
        self.kernel_names = [lo.attr for lo in layouts]
        self.sparsity = self.add_weight(
            name="sparsity",
            shape=(),
            initializer=keras.initializers.Constant(self.target),
            trainable=False,
        )
        self.pruned = self.add_weight(
            name="pruned", shape=(), initializer="zeros", trainable=False
        )
        self.pruned_kernels = []
        for layout in layouts:
            variable = getattr(self.layer, layout.attr)
            mask = self.add_weight(
                name=f"{layout.attr}_mask",
                shape=layout.shape,
                initializer="ones",
                trainable=False,
            )
            penalty = None
            if self.method is not None:
                penalty = type(self.method).from_config(self.method.get_config())
                penalty.build(self, layout, self.structure)
            variable.regularizer = penalty
            # backend hook: on JAX the mask applies in `call`, not as a constraint.
            bound = None if backend_support.masks_in_forward_pass() else mask
            variable.constraint = MaskConstraint(bound, then=variable.constraint)
            self.pruned_kernels.append(PrunedKernel(layout, variable, mask, penalty))
        self.built = True

    def call(self, inputs):
        # backend hook: on JAX the masks apply in the forward pass.
        if backend_support.masks_in_forward_pass():
            return backend_support.masked_call(self, inputs)
        return self.layer(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def save_own_variables(self, store):
        # backend hook: saved kernels hold exact zeros (Keras saves this layer
        # before the wrapped one).
        backend_support.zero_pruned(self)
        super().save_own_variables(store)

    @property
    def is_pruned(self) -> bool:
        """Whether the final hard prune has happened."""
        return bool(keras.ops.convert_to_numpy(self.pruned) > 0.5)

    def kept_groups(self, pk: PrunedKernel, keep: int) -> np.ndarray:
        """Penalty groups kept when ``pk`` keeps ``keep`` units."""
        return self.structure.group_mask(self.structure.project(pk.canonical(), keep))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "structure": structures.serialize(self.structure),
                "target": self.target,
                "scope": self.scope,
                "method": None
                if self.method is None
                else keras.saving.serialize_keras_object(self.method),
                "kernels": self.kernel_names,
            }
        )
        return config
