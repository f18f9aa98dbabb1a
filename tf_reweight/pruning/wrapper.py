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

from tf_reweight.core import backend_support, structures, walker
from tf_reweight.core.constraints import MaskConstraint
from tf_reweight.core.layouts import KernelLayout
from tf_reweight.methods import regularizers
from tf_reweight.methods.regularizers import KernelPenalty


@dataclass
class PrunedKernel:
    """One pruned kernel of a wrapped layer.

    Attributes:
        layout: How the kernel maps to the canonical 4-D view; its ``attr``
            is the kernel's key in the wrapped layer (see
            `tf_reweight.core.walker`).
        name: A readable name of the kernel, such as ``"kernel"`` or
            ``"value/kernel"`` for a sublayer's kernel.
        variable: The kernel variable of the wrapped layer.
        mask: The 0/1 mask variable (same shape as the kernel).
        penalty: The bound penalty, or None.
    """

    layout: KernelLayout
    name: str
    variable: keras.Variable
    mask: keras.Variable
    penalty: KernelPenalty | None

    def canonical(self) -> np.ndarray:
        """The current kernel in the canonical view, as NumPy."""
        return self.layout.to_canonical(backend_support.masked_value(self))

    def assign_mask(self, mask4: np.ndarray) -> None:
        """Installs a canonical mask and zeroes the pruned weights."""
        mask = self.layout.from_canonical(np.asarray(mask4, np.float32))
        self.mask.assign(mask)
        self.variable.assign(
            backend_support.masked(keras.ops.convert_to_numpy(self.variable), mask)
        )


class _Sum(keras.regularizers.Regularizer):
    """The pruning penalty plus the regularizer the user gave the kernel."""

    def __init__(self, *regularizers):
        self.regularizers = regularizers

    def __call__(self, x):
        return sum(r(x) for r in self.regularizers)


def _sum(penalty, user):
    if penalty is None or user is None:
        return penalty or user
    return _Sum(penalty, user)


@keras.saving.register_keras_serializable(package="tf_reweight")
class PruningWrapper(keras.layers.Wrapper):
    """Wraps a layer whose kernels (or whose sublayers' kernels) are pruned.

    Users normally get wrappers from `tf_reweight.apply` rather than building
    them by hand. A layer that holds other layers (`MultiHeadAttention`, a
    custom block, a subclassed model) is wrapped as a whole, and the kernels
    of its prunable sublayers are pruned inside it.

    Args:
        layer: The layer to prune: a Dense or convolution layer (see
            `tf_reweight.core.layouts.SUPPORTED_LAYERS`) or a layer holding some.
        structure: A structure name or `tf_reweight.core.structures.Structure`.
        target: The final sparsity of this layer's kernels, in (0, 1).
        scope: ``"global"`` (ranked together with the other global layers)
            or ``"layer"`` (this layer alone meets ``target``).
        method: A `KernelPenalty` (for example `ReweightedGroupPenalty`) or
            None for no penalty.
        kernels: Keys of the kernels to prune (`tf_reweight.core.walker`; the
            attribute name, such as ``"kernel"``, for the layer's own
            kernels); defaults to all the layer's prunable kernels.
        max_prune: The largest share of this layer's units a global budget
            may prune (see `tf_reweight.core.budget.allocate`); None for the
            default.
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
        max_prune: float | None = None,
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
        self.max_prune = None if max_prune is None else float(max_prune)
        self.pruned_kernels: list[PrunedKernel] = []

    def build(self, input_shape=None):
        # A subclassed model built from its build config has its weights but
        # keeps `built=False`.
        if not (self.layer.built or self.layer.weights):
            if input_shape is None:
                raise ValueError(
                    f"PruningWrapper needs layer '{self.layer.name}' built "
                    "(its kernels decide the masks). Expected a built layer, "
                    "as `tf_reweight.apply` gives. Received: an unbuilt "
                    f"{type(self.layer).__name__}"
                )
            self.layer.build(input_shape)
        layouts = walker.find_kernels(self.layer)
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
            variable = walker.kernel_variable(self.layer, layout.attr)
            mask = self.add_weight(
                name=f"{layout.weight_name}_mask",
                shape=layout.shape,
                initializer="ones",
                trainable=False,
            )
            penalty = None
            if self.method is not None:
                penalty = type(self.method).from_config(self.method.get_config())
                penalty.build(self, layout, self.structure)
            variable.regularizer = _sum(penalty, variable.regularizer)
            # On JAX the mask applies in `call`, not as a constraint.
            bound = None if backend_support.masks_in_forward_pass() else mask
            variable.constraint = MaskConstraint(bound, then=variable.constraint)
            name = walker.kernel_name(self.layer, layout.attr)
            self.pruned_kernels.append(
                PrunedKernel(layout, name, variable, mask, penalty)
            )
        self.built = True

    def call(self, *args, **kwargs):
        # On JAX the masks apply in the forward pass.
        if backend_support.masks_in_forward_pass():
            return backend_support.masked_call(self, *args, **kwargs)
        return self.layer(*args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    def compute_output_shape(self, *args, **kwargs):
        return self.layer.compute_output_shape(*args, **kwargs)

    def save_own_variables(self, store):
        # backend hook: saved kernels hold exact zeros (Keras saves this layer
        # before the wrapped one).
        backend_support.zero_pruned(self)
        super().save_own_variables(store)

    @property
    def is_pruned(self) -> bool:
        """Whether the final hard prune has happened."""
        return bool(keras.ops.convert_to_numpy(self.pruned) > 0.5)

    def stripped_layer(self) -> keras.layers.Layer:
        """The plain layer `tf_reweight.strip` puts in this wrapper's place."""
        return self.layer

    def stripped_kernels(self) -> dict[str, np.ndarray]:
        """``{kernel key: final value}`` that `tf_reweight.strip` stores.

        Each pruned kernel is masked one last time (exact zeros), and a
        constraint chained after the mask (such as the projection of
        `tf_reweight.QuantizeConstraint`) is applied once more to the masked
        kernel.
        """
        values = {}
        for pk in self.pruned_kernels:
            value = backend_support.masked_value(pk)
            then = getattr(pk.variable.constraint, "then", None)
            if then is not None:
                value = backend_support.masked(
                    keras.ops.convert_to_numpy(then(value)),
                    keras.ops.convert_to_numpy(pk.mask),
                )
            values[pk.layout.attr] = value
        return values

    def kept_groups(self, kernel4: np.ndarray, keep: int) -> np.ndarray:
        """Penalty groups kept when the canonical ``kernel4`` keeps ``keep`` units.

        ``kernel4`` is the view units are ranked on (see
        `tf_reweight.pruning.importance`), shaped like the kernel's canonical
        view.
        """
        return self.structure.group_mask(self.structure.project(kernel4, keep))

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
                "max_prune": self.max_prune,
            }
        )
        return config
