"""Channel dependencies: which kernel rows read the filters of another kernel.

Removing filter ``c`` of a Conv or Dense layer removes channel ``c`` of its
output. A later Conv or Dense layer that reads that channel, through layers
that keep channels apart (BatchNormalization, activations, pooling, padding,
Dropout, a depthwise convolution, Flatten), then has input rows that read
only a constant: they hold weights that do nothing a bias could not. This
module finds those couplings in a model's graph, so that a filter's cost in
a global budget counts the weights it frees downstream
(`tf_reweight.core.budget.allocate`) and the hard prune masks them too.

ConvNeXt's ``LayerScale`` (`is_layer_scale`) counts as channel-wise too, and
InceptionResNetV2's ``CustomScaleLayer`` (`is_scaled_add`) as a merge.

A coupling is claimed only where it is certain. An elementwise merge (Add,
Multiply, ...) of producers' channels reads a constant in channel ``c`` when
every input does, so its readers couple to *all* its producers: their rows
are freed only when every producer loses filter ``c``. Such producers form a
*group* (the convolutions that write one residual stream, a squeeze-and-excite
gate and its input): a global budget ranks their filters ``c`` as one unit, so
that they are removed together. A merge with an input that reads no producer
(the model's input, a Concatenate, a layer that mixes channels, a nested
model, any other layer) is not followed, and a reader called more than once
(a shared layer) is left out. The rules follow the channel graph
`tflite_export.shrink` removes channels with.
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
    """Rows of ``consumer``'s kernel that read the filters of ``producers``.

    Input row ``c + r * filters`` of the consumer (``r < repeat``; ``repeat``
    is above 1 after a Flatten) reads filter ``c`` of every producer (merged
    elementwise when there are several): it reads a constant once all of
    them lose filter ``c``.

    Attributes:
        producers: The layers (as called in the graph: a wrapper, if wrapped)
            whose kernels' filters are read, in graph order.
        consumer: The layer whose kernel reads them.
        repeat: How many input rows each filter feeds.
    """

    producers: tuple[keras.layers.Layer, ...]
    consumer: keras.layers.Layer
    repeat: int


@dataclasses.dataclass(frozen=True)
class Dependencies:
    """The channel dependencies of a model's graph (see `dependencies`).

    Attributes:
        couplings: One `Coupling` per consumer, in graph order.
        groups: Disjoint tuples of two or more producers whose filters ``c``
            are merged elementwise (a residual stream), in the order the
            merges meet them.
    """

    couplings: list[Coupling]
    groups: list[tuple[keras.layers.Layer, ...]]


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


def is_layer_scale(layer) -> bool:
    """Whether ``layer`` is the ``LayerScale`` of `keras.applications.ConvNeXt*`.

    That layer (not exported by Keras) multiplies its input by one trainable
    weight ``gamma`` per channel: it is channel-wise, like BatchNormalization.
    """
    weights = getattr(layer, "weights", ())
    return (
        type(layer).__name__ == "LayerScale"
        and type(layer).__module__.startswith("keras")
        and len(weights) == 1
        and len(weights[0].shape) == 1
    )


def is_scaled_add(layer) -> bool:
    """Whether ``layer`` is the ``CustomScaleLayer`` of `InceptionResNetV2`.

    That layer (not exported by Keras) returns ``inputs[0] + inputs[1] *
    scale`` for a constant ``scale``: an elementwise merge, like Add.
    """
    return (
        type(layer).__name__ == "CustomScaleLayer"
        and type(layer).__module__.startswith("keras")
        and isinstance(getattr(layer, "scale", None), (int, float))
        and not getattr(layer, "weights", ())
    )


def _channelwise(call: walker.Call) -> bool:
    """Whether a call's output channel ``c`` depends on input channel ``c`` only."""
    op = _inner(call.op)
    if len(call.inputs) != 1 or len(call.outputs) != 1:
        return False
    if is_layer_scale(op):
        return True
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
    """The producers an elementwise merge's output channels read.

    Every input must read producers (with the same ``repeat`` and channel
    count): channel ``c`` of the merge is then constant once channel ``c`` of
    every input is, and it reads the union of their producers. ``x + f(x)``
    with ``f`` channel-wise keeps the one producer of ``x``.
    """
    op = _inner(call.op)
    merges = (
        isinstance(op, MERGES)
        or is_scaled_add(op)
        or (not isinstance(op, L.Layer) and type(op).__name__ in BINARY_OPS)
    )
    if not merges or len(call.inputs) < 2 or len(call.outputs) != 1:
        return None
    if any(id(t) not in source for t in call.inputs):
        return None
    found = [source[id(t)] for t in call.inputs]
    shapes = {t.shape[-1] if t.shape else None for t in call.inputs}
    if len({repeat for _, repeat in found}) != 1 or len(shapes) != 1:
        return None
    producers = {}
    for members, _ in found:
        producers.update((id(p), p) for p in members)
    return tuple(producers.values()), found[0][1]


def _flattens(call: walker.Call) -> bool:
    op = _inner(call.op)
    return type(op) is L.Flatten and op.data_format == "channels_last"


def dependencies(model: keras.Model, layers) -> Dependencies:
    """The filter-to-row couplings and the producer groups of a model's graph.

    Args:
        model: A built Sequential or Functional model (wrapped layers are
            looked through: a `keras.layers.Wrapper` counts as its layer).
        layers: The layers (as called in the graph) that may be producers
            or consumers: Conv1D, Conv2D, SeparableConv2D (its pointwise
            kernel's filters and rows) or Dense layers, or wrappers of one,
            with ``groups=1``, ``depth_multiplier=1`` and channels last.
            Others are ignored.

    Returns:
        A `Dependencies`: one `Coupling` per consumer that reads, through
        channel-wise layers and merges only, the output of producers, and the
        groups of producers that merges tie together.

    Example:
    >>> x = keras.Input((8, 8, 3))
    >>> a = keras.layers.Conv2D(4, 3, name="a")(x)
    >>> b = keras.layers.Conv2D(4, 3, padding="same", name="b")(a)
    >>> c = keras.layers.Dense(2, name="c")(keras.layers.Flatten()(a + b))
    >>> model = keras.Model(x, c)
    >>> found = dependencies(model, model.layers)
    >>> [([p.name for p in c.producers], c.consumer.name, c.repeat)
    ...  for c in found.couplings]
    [(['a'], 'b', 1), (['a', 'b'], 'c', 36)]
    >>> [[p.name for p in group] for group in found.groups]
    [['a', 'b']]
    """
    chosen = {id(layer) for layer in layers if _is_reader(_inner(layer))}
    model_graph = walker.graph(model)
    calls = {}
    for call in model_graph.calls:
        calls[id(call.op)] = calls.get(id(call.op), 0) + 1
    source: dict[int, tuple[tuple[keras.layers.Layer, ...], int]] = {}
    found = []
    tied: list[tuple[keras.layers.Layer, ...]] = []
    for call in model_graph.calls:
        upstream = source.get(id(call.inputs[0])) if len(call.inputs) == 1 else None
        if id(call.op) in chosen:
            if upstream is not None and calls[id(call.op)] == 1:
                found.append(Coupling(upstream[0], call.op, upstream[1]))
            if calls[id(call.op)] == 1:
                source[id(call.outputs[0])] = ((call.op,), 1)
        elif upstream is not None and _channelwise(call):
            source[id(call.outputs[0])] = upstream
        elif (merged := _merge_source(call, source)) is not None:
            source[id(call.outputs[0])] = merged
            if len(merged[0]) > 1:
                tied.append(merged[0])
        elif upstream is not None and _flattens(call):
            before, after = call.inputs[0].shape, call.outputs[0].shape
            if before[-1] and after[-1] and after[-1] % before[-1] == 0:
                source[id(call.outputs[0])] = (
                    upstream[0],
                    upstream[1] * (after[-1] // before[-1]),
                )
    return Dependencies(found, _components(tied))


def _components(tied) -> list[tuple[keras.layers.Layer, ...]]:
    """Merges overlapping tuples of layers into disjoint groups, in order."""
    groups: list[dict[int, keras.layers.Layer]] = []
    for members in tied:
        merged = {id(p): p for p in members}
        rest = []
        for group in groups:
            if merged.keys() & group.keys():
                group.update(merged)
                merged = group
            else:
                rest.append(group)
        groups = [*rest, merged]
    order = {}
    for members in tied:
        for p in members:
            order.setdefault(id(p), len(order))
    return sorted(
        (tuple(sorted(g.values(), key=lambda p: order[id(p)])) for g in groups),
        key=lambda g: order[id(g[0])],
    )
