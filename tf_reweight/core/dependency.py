"""Channel dependencies: which kernel rows read the filters of another kernel.

Removing filter ``c`` of a Conv or Dense layer removes channel ``c`` of its
output. A later Conv or Dense layer that reads that channel, through layers
that keep channels apart (BatchNormalization, activations, pooling, padding,
Dropout, a depthwise convolution, Flatten), then has input rows that read
only a constant: they hold weights that do nothing a bias could not. This
module finds those couplings in a model's graph, so that a filter's cost in
a global budget counts the weights it frees downstream
(`tf_reweight.core.budget.allocate`) and the hard prune masks them too.

A coupling is claimed only where it is certain. An elementwise merge (Add,
Multiply, ...) is followed only when all its inputs read the same producer
(``x + depthwise(x)``); a residual sum of two producers' branches, a
Concatenate, a layer that mixes channels, a nested model or any other layer
is not followed, and a reader called more than once (a shared layer) is left
out. The rules follow
the channel graph `tflite_export.shrink` removes channels with.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from tf_reweight.core import walker

L = keras.layers
READERS = (L.Conv1D, L.Conv2D, L.SeparableConv2D, L.Dense)
# Layers that keep every channel apart and move values only in space.
SPATIAL = (
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.GaussianDropout,
    L.GaussianNoise,
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
    L.Cropping1D,
    L.Cropping2D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.Identity,
)
PADS = (L.ZeroPadding1D, L.ZeroPadding2D)
# Layers with a weight or a function per channel.
WEIGHTED = (L.BatchNormalization, L.Rescaling, L.Normalization)
POINTWISE = (*WEIGHTED, L.Activation, L.ReLU, L.LeakyReLU, L.ELU)
# Layers whose output channel c depends on input channel c only.
CHANNELWISE = (*POINTWISE, L.DepthwiseConv2D, *SPATIAL, *PADS)
MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
BINARY_OPS = ("Add", "Subtract", "Multiply", "Maximum", "Minimum")
# keras.ops operations of one tensor that act elementwise.
UNARY_OPS = ("Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "HardSilu")
UNARY_OPS += ("Tanh", "Gelu", "Elu", "Selu", "Softplus", "LeakyRelu", "Negative")
MIXING_ACTIVATIONS = ("softmax", "log_softmax")


@dataclasses.dataclass(frozen=True, eq=False)
class Coupling:
    """Rows of ``consumer``'s kernel that read the filters of ``producer``.

    Input row ``c + r * filters`` of the consumer (``r < repeat``; ``repeat``
    is above 1 after a Flatten) reads filter ``c`` of the producer.

    Attributes:
        producer: The layer (as called in the graph: a wrapper, if wrapped)
            whose kernel's filters are read.
        consumer: The layer whose kernel reads them.
        repeat: How many input rows each filter feeds.
    """

    producer: keras.layers.Layer
    consumer: keras.layers.Layer
    repeat: int


def _inner(op):
    """The layer a wrapper wraps (several levels deep), else ``op``."""
    while isinstance(op, L.Wrapper):
        op = op.layer
    return op


def _is_reader(layer) -> bool:
    return (
        type(layer) in READERS
        and getattr(layer, "groups", 1) == 1
        and getattr(layer, "depth_multiplier", 1) == 1
        and getattr(layer, "data_format", "channels_last") == "channels_last"
    )


def _channelwise(call: walker.Call) -> bool:
    """Whether a call's output channel ``c`` depends on input channel ``c`` only."""
    op = _inner(call.op)
    if len(call.inputs) != 1 or len(call.outputs) != 1:
        return False
    if not isinstance(op, L.Layer):
        name = type(op).__name__
        scalar = all(np.ndim(c) == 0 for c in call.constants)
        return type(op).__module__.startswith("keras") and (
            name in UNARY_OPS
            or (name in BINARY_OPS + ("Divide", "TrueDivide") and scalar)
        )
    if type(op) not in CHANNELWISE:
        return False
    if getattr(op, "data_format", "channels_last") != "channels_last":
        return False
    if getattr(op, "depth_multiplier", 1) != 1:
        return False
    axis = getattr(op, "axis", -1)
    if isinstance(op, (L.BatchNormalization, L.Normalization)) and axis not in (
        -1,
        len(call.inputs[0].shape) - 1,
    ):
        return False
    activation = getattr(op, "activation", None)
    return getattr(activation, "__name__", "") not in MIXING_ACTIVATIONS


def _merge_source(call: walker.Call, source: dict):
    """The source of an elementwise merge whose inputs all read one producer.

    ``x + f(x)`` with ``f`` channel-wise (a depthwise block on its own
    input): every input channel ``c`` reads filter ``c`` of the same
    producer, so the sum's does too. Inputs from different producers (a
    residual sum of two branches) have no single source.
    """
    op = _inner(call.op)
    merges = isinstance(op, MERGES) or (
        not isinstance(op, L.Layer) and type(op).__name__ in BINARY_OPS
    )
    if not merges or len(call.inputs) < 2 or len(call.outputs) != 1:
        return None
    found = {
        (id(source[id(t)][0]), source[id(t)][1]) if id(t) in source else None
        for t in call.inputs
    }
    shapes = {t.shape[-1] if t.shape else None for t in call.inputs}
    if len(found) != 1 or None in found or len(shapes) != 1:
        return None
    return source[id(call.inputs[0])]


def _flattens(call: walker.Call) -> bool:
    op = _inner(call.op)
    return type(op) is L.Flatten and op.data_format == "channels_last"


def couplings(model: keras.Model, layers) -> list[Coupling]:
    """The filter-to-row couplings between ``layers`` in a model's graph.

    Args:
        model: A built Sequential or Functional model (wrapped layers are
            looked through: a `keras.layers.Wrapper` counts as its layer).
        layers: The layers (as called in the graph) that may be producers
            or consumers: Conv1D, Conv2D, SeparableConv2D (its pointwise
            kernel's filters and rows) or Dense layers, or wrappers of one,
            with ``groups=1``, ``depth_multiplier=1`` and channels last.
            Others are ignored.

    Returns:
        One `Coupling` per consumer that reads, through channel-wise layers
        only, the output of one producer; in graph order.

    Example:
    >>> x = keras.Input((8, 8, 3))
    >>> a = keras.layers.Conv2D(4, 3, name="a")(x)
    >>> b = keras.layers.Dense(2, name="b")(keras.layers.Flatten()(a))
    >>> model = keras.Model(x, b)
    >>> [(c.producer.name, c.consumer.name, c.repeat)
    ...  for c in couplings(model, model.layers)]
    [('a', 'b', 36)]
    """
    chosen = {id(layer) for layer in layers if _is_reader(_inner(layer))}
    model_graph = walker.graph(model)
    calls = {}
    for call in model_graph.calls:
        calls[id(call.op)] = calls.get(id(call.op), 0) + 1
    source: dict[int, tuple[keras.layers.Layer, int]] = {}
    found = []
    for call in model_graph.calls:
        upstream = source.get(id(call.inputs[0])) if len(call.inputs) == 1 else None
        if id(call.op) in chosen:
            if upstream is not None and calls[id(call.op)] == 1:
                found.append(Coupling(upstream[0], call.op, upstream[1]))
            if calls[id(call.op)] == 1:
                source[id(call.outputs[0])] = (call.op, 1)
        elif upstream is not None and _channelwise(call):
            source[id(call.outputs[0])] = upstream
        elif (merged := _merge_source(call, source)) is not None:
            source[id(call.outputs[0])] = merged
        elif upstream is not None and _flattens(call):
            before, after = call.inputs[0].shape, call.outputs[0].shape
            if before[-1] and after[-1] and after[-1] % before[-1] == 0:
                source[id(call.outputs[0])] = (
                    upstream[0],
                    upstream[1] * (after[-1] // before[-1]),
                )
    return found
