"""Quantized layers: the straight-through QAT wrapper, and finding them.

`QuantizeWrapper` runs a Dense or convolution layer (pruned by a
`PruningWrapper` or not) with fake-quantized kernels, so the optimizer trains
the float weights through a straight-through estimator; `tf_reweight.strip`
replaces it by the plain layer with the quantized kernels. `quantized_layers`
finds these wrappers and the layers whose kernels carry a
`QuantizeConstraint` (the projection method of `tf_reweight.quantize.qat`).
"""

from __future__ import annotations

import keras
import numpy as np

from tf_reweight.core import backend_support, walker
from tf_reweight.core.checks import check_choice
from tf_reweight.core.constraints import MaskConstraint
from tf_reweight.core.layouts import KernelLayout, kernel_layouts
from tf_reweight.pruning.wrapper import PruningWrapper
from tf_reweight.quantize.quantization import QuantizeConstraint, fake_quantize

METHODS = ("projection", "ste")


def check_arguments(bits, method: str, axis) -> None:
    """Raises `ValueError` unless ``bits``, ``method`` and ``axis`` are valid.

    Args:
        bits: Bits per weight, an integer from 2 to 8.
        method: One of `METHODS`.
        axis: An int or None.
    """
    QuantizeConstraint(bits, axis)  # raises for bits outside 2..8
    check_choice("method", method, METHODS)
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
        raise ValueError(f"`axis` must be an int or None. Received: axis={axis!r}")


def kernel_axis(layout: KernelLayout, axis: int | None) -> int | None:
    """The scale axis of a kernel: depthwise kernels get one per input channel.

    Depthwise kernels ``(kh, kw, in, mult)`` quantize along axis 2; other
    kernels along ``axis``.
    """
    return 2 if layout.depthwise and axis is not None else axis


def inner_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The Dense/Conv layer behind pruning and quantization wrappers."""
    while isinstance(layer, (QuantizeWrapper, PruningWrapper)):
        layer = layer.layer
    return layer


@keras.saving.register_keras_serializable(package="tf_reweight")
class QuantizeWrapper(keras.layers.Wrapper):
    """Runs a layer with fake-quantized kernels (straight-through QAT).

    In the forward pass each Dense/convolution kernel ``w`` of the wrapped
    layer is replaced by ``fake_quantize(w * mask, bits)`` (``mask`` from a
    wrapped `PruningWrapper`, else none): the layer computes with the quantized
    weights, and the gradient reaches the float weights unchanged (through
    ``mask``), so the optimizer keeps training ``w``. The substitution uses a
    `keras.StatelessScope`, so any layer type works without re-implementing
    its ``call``; weight regularizers (the pruning penalty) still see the float
    weights. `tf_reweight.strip` (or `qat.finalize`) at the end of training
    stores the quantized weights in plain layers; export the stripped model
    (exporting the wrapper itself would keep float weights and quantize them
    at run time).

    Users normally get wrappers from `quantize_model(..., method="ste")`.

    Args:
        layer: A `PruningWrapper` or a Dense/Conv1D/Conv2D/DepthwiseConv2D/
            SeparableConv2D layer.
        bits: Bits per weight, from 2 to 8.
        axis: Output-channel axis of the kernels (one scale per channel), or
            None for one scale per kernel. Depthwise kernels use one scale per
            input channel.
        **kwargs: Base `keras.layers.Layer` arguments.

    Example:
    >>> layer = QuantizeWrapper(keras.layers.Dense(10), bits=4)

    References:
        Bengio et al., "Estimating or Propagating Gradients Through Stochastic
        Neurons for Conditional Computation", arXiv:1308.3432, 2013.
    """

    def __init__(
        self, layer: keras.layers.Layer, bits: int, axis: int | None = -1, **kwargs
    ):
        check_arguments(bits, "ste", axis)
        if not kernel_layouts(inner_layer(layer)):
            raise ValueError(
                "QuantizeWrapper needs a Dense or convolution layer, or a "
                "PruningWrapper of one. Received: "
                f"layer={layer.name!r} ({type(layer).__name__})"
            )
        kwargs.setdefault("name", layer.name)
        super().__init__(layer, **kwargs)
        self.bits = bits
        self.axis = axis

    def build(self, input_shape=None):
        super().build(input_shape)
        self.built = True

    @property
    def layers(self) -> list[keras.layers.Layer]:
        """The wrapped layer, in a list.

        `tf_reweight.report`, `tf_reweight.pruning.wrappers` and hence the
        pruning callbacks look into layers that have ``layers`` (nested
        models), so they also find a `PruningWrapper` inside this wrapper.
        """
        return [self.layer]

    def quantized_kernels(self) -> list[tuple[keras.Variable, object]]:
        """``(kernel variable, fake-quantized value)`` for every kernel."""
        inner = inner_layer(self.layer)
        masks = {}
        if isinstance(self.layer, PruningWrapper):
            masks = {pk.layout.attr: pk.mask for pk in self.layer.pruned_kernels}
        pairs = []
        for layout in kernel_layouts(inner):
            variable = getattr(inner, layout.attr)
            value = keras.ops.convert_to_tensor(variable)
            if layout.attr in masks:
                value = value * keras.ops.cast(masks[layout.attr], value.dtype)
            axis = kernel_axis(layout, self.axis)
            pairs.append((variable, fake_quantize(value, self.bits, axis)))
        return pairs

    def stripped_layer(self) -> keras.layers.Layer:
        """The plain Dense/Conv layer `tf_reweight.strip` puts in its place."""
        return inner_layer(self)

    def stripped_kernels(self) -> dict[str, np.ndarray]:
        """``{kernel attribute: quantize(w * mask, bits)}``, the forward pass's.

        `tf_reweight.strip` stores these, so the plain model computes what
        this wrapper computed.
        """
        return {
            layout.attr: keras.ops.convert_to_numpy(value)
            for layout, (_, value) in zip(
                kernel_layouts(inner_layer(self)),
                self.quantized_kernels(),
                strict=True,
            )
        }

    def call(self, inputs, *args, **kwargs):
        # backend hook: maps all the layer's variables (a nested scope does not
        # see the JAX trainer's).
        return backend_support.call_with_values(
            self, self.quantized_kernels(), inputs, *args, **kwargs
        )

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"bits": self.bits, "axis": self.axis})
        return config


def _constraints(constraint) -> list:
    """A constraint and the ones chained after it by `MaskConstraint`."""
    chain = []
    while constraint is not None:
        chain.append(constraint)
        constraint = constraint.then if isinstance(constraint, MaskConstraint) else None
    return chain


def _projected(layer: keras.layers.Layer) -> bool:
    inner = inner_layer(layer)
    return any(
        isinstance(c, QuantizeConstraint)
        for lo in kernel_layouts(inner)
        for c in _constraints(getattr(inner, lo.attr).constraint)
    )


def quantized_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The graph layers of ``model`` whose kernels are being quantized.

    Args:
        model: Any Keras model; the layers of nested models are searched too
            (`tf_reweight.core.walker.graph_layers`).

    Returns:
        The `QuantizeWrapper` layers and the layers (pruning-wrapped or not)
        whose kernels carry a `QuantizeConstraint`.
    """
    if not walker.is_graph_model(model):
        return []
    return [
        layer
        for layer in walker.graph_layers(model)
        if isinstance(layer, QuantizeWrapper)
        or (kernel_layouts(inner_layer(layer)) and _projected(layer))
    ]
