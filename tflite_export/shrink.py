"""Remove zero filters from a channel-pruned Keras model.

Channel pruning leaves filters whose kernel column is all zero. Such a filter
still produces a channel: its bias, pushed through BatchNormalization
(`beta - gamma * mean / sqrt(var + eps)` for a zero input) and the following
per-channel layers, which is a constant, not zero in general. `shrink`
removes a channel when every Conv2D/Dense that reads it sees that constant,
and folds the constant's contribution into the reader's bias, so the smaller
model computes the same function.

The model is viewed as channel groups: a Conv2D/Dense output starts a group,
per-channel layers (BatchNormalization, DepthwiseConv2D, activations,
pooling, Dropout, Flatten) keep it, and `Add` merges the groups of its
inputs, so a channel is removed from all branches of a residual sum or from
none. A channel `c` of a group is removed when:

- no tensor of the group is a model input or output, or the input of a layer
  that mixes channels (Softmax);
- every Conv2D/Dense reading a tensor of the group sees a known constant at
  `c`, i.e. every path to it starts at an all-zero kernel column (of a
  Conv2D/Dense/DepthwiseConv2D) and crosses only per-channel layers and
  `Add`s of constant channels;
- a Conv2D reader whose borders see zero padding (`padding="same"` with a
  kernel larger than 1x1) needs the constant to be exactly 0: a non-zero
  constant channel padded with zeros is not constant at the border, so such
  a channel is kept.

A group always keeps at least one channel.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

L = keras.layers
_READERS = (L.Conv2D, L.Dense)
_IDENTITY = (
    L.Dropout,
    L.MaxPooling2D,
    L.AveragePooling2D,
    L.GlobalAveragePooling2D,
    L.GlobalMaxPooling2D,
    L.Flatten,
)
_ELEMENTWISE = (L.Activation, L.ReLU, L.LeakyReLU, L.ELU)
_SUPPORTED = (
    L.InputLayer,
    *_READERS,
    L.DepthwiseConv2D,
    L.BatchNormalization,
    L.Add,
    L.Softmax,
    *_IDENTITY,
    *_ELEMENTWISE,
)
_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


@dataclasses.dataclass
class _Node:
    layer: keras.layers.Layer
    inputs: list
    outputs: list


def _graph(model: keras.Model) -> list[_Node]:
    """The layer calls of a built Sequential/Functional model, inputs first."""
    order, done = [], set()
    stack = [(tensor, False) for tensor in model.outputs]
    while stack:
        tensor, expanded = stack.pop()
        layer, node_index, _ = tensor._keras_history
        node = layer._inbound_nodes[node_index]
        if id(node) in done:
            continue
        if expanded:
            done.add(id(node))
            order.append(
                _Node(layer, list(node.input_tensors), list(node.output_tensors))
            )
        else:
            stack.append((tensor, True))
            stack.extend((t, False) for t in node.input_tensors)
    return order


def _check_built(model) -> None:
    if not isinstance(model, keras.Model) or not model.built or not model.outputs:
        raise ValueError(
            "Expected a built Sequential or Functional Keras model. "
            f"Received: model={model!r}"
        )


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one sample through Conv2D, Depthwise and Dense.

    Args:
        model: A built Sequential or Functional model (nested models count).

    Returns:
        The MAC count per sample; other layers count as 0.

    Example:

    ```python
    print(count_macs(model) / 1e6, "MMACs")
    ```
    """
    _check_built(model)
    total = 0
    for node in _graph(model):
        layer = node.layer
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
            continue
        out_elements = int(np.prod(node.outputs[0].shape[1:]))
        if isinstance(layer, L.DepthwiseConv2D):
            total += out_elements * int(np.prod(layer.kernel_size))
        elif isinstance(layer, L.Conv2D):
            fan_in = np.prod(layer.kernel.shape[:-1])
            total += out_elements * int(fan_in)
        elif isinstance(layer, L.Dense):
            total += out_elements * int(layer.kernel.shape[0])
    return total


@dataclasses.dataclass
class ShrinkReport:
    """Size of a model before and after `shrink`.

    Attributes:
        params_before: Parameter count of the original model.
        params_after: Parameter count of the shrunk model.
        macs_before: MACs per sample of the original model (see `count_macs`).
        macs_after: MACs per sample of the shrunk model.
    """

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    @property
    def macs_speedup(self) -> float:
        """`macs_before / macs_after`: the ideal speed-up from fewer MACs."""
        return self.macs_before / max(self.macs_after, 1)

    def to_dict(self) -> dict:
        """Returns the counts and the MAC speed-up as a dict."""
        return {**dataclasses.asdict(self), "macs_speedup": self.macs_speedup}

    def __str__(self) -> str:
        return (
            f"params {self.params_before} -> {self.params_after}, "
            f"MACs {self.macs_before} -> {self.macs_after} "
            f"({self.macs_speedup:.2f}x fewer)"
        )


def shrink_report(original: keras.Model, shrunk: keras.Model) -> ShrinkReport:
    """Parameter and MAC counts of a model before and after `shrink`.

    Args:
        original: The model given to `shrink`.
        shrunk: The model `shrink` returned.

    Returns:
        A `ShrinkReport`.

    Example:

    ```python
    small = shrink(model)
    print(shrink_report(model, small))
    ```
    """
    return ShrinkReport(
        params_before=original.count_params(),
        params_after=shrunk.count_params(),
        macs_before=count_macs(original),
        macs_after=count_macs(shrunk),
    )


def _check_layer(layer, rank: int) -> None:
    if type(layer) not in _SUPPORTED:
        names = sorted({cls.__name__ for cls in _SUPPORTED})
        raise ValueError(
            f"`shrink` does not support layer '{layer.name}' of type "
            f"{type(layer).__name__}. Supported layer types: {', '.join(names)}. "
            f"Received: {layer!r}"
        )
    problems = []
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        problems.append("data_format='channels_last'")
    if getattr(layer, "groups", 1) != 1:
        problems.append("groups=1")
    if getattr(layer, "depth_multiplier", 1) != 1:
        problems.append("depth_multiplier=1")
    if isinstance(layer, L.BatchNormalization) and layer.axis not in (-1, rank - 1):
        problems.append("axis=-1")
    if problems:
        raise ValueError(
            f"`shrink` supports layer '{layer.name}' only with "
            f"{', '.join(problems)}. Received: {layer.get_config()}"
        )


def _activation(fn, values: np.ndarray) -> np.ndarray:
    """Applies an elementwise function to the known (finite) constants."""
    out = np.full(values.shape, np.nan, np.float32)
    if getattr(fn, "__name__", "") in _MIXING_ACTIVATIONS:
        return out
    known = np.isfinite(values)
    if known.any():
        result = fn(keras.ops.convert_to_tensor(values[known][None], "float32"))
        out[known] = keras.ops.convert_to_numpy(result)[0]
    return out


def _pads(layer) -> bool:
    """Whether a convolution's borders read zero padding."""
    return layer.padding == "same" and tuple(layer.kernel_size) != (1, 1)


def _bias(layer, size: int) -> np.ndarray:
    return layer.bias.numpy() if layer.use_bias else np.zeros(size, np.float32)


def _mixes(layer) -> bool:
    """Whether a layer's output channels depend on several input channels."""
    if isinstance(layer, L.Softmax):
        return True
    name = getattr(getattr(layer, "activation", None), "__name__", "")
    return isinstance(layer, L.Activation) and name in _MIXING_ACTIVATIONS


def _reader_constants(layer) -> np.ndarray:
    """Output constants of a Conv2D/Dense: its all-zero kernel columns."""
    units = layer.kernel.shape[-1]
    zero = ~layer.kernel.numpy().reshape(-1, units).any(0)
    return _activation(layer.activation, np.where(zero, _bias(layer, units), np.nan))


def _batch_norm(layer, values: np.ndarray) -> np.ndarray:
    std = np.sqrt(layer.moving_variance.numpy() + layer.epsilon)
    gamma = layer.gamma.numpy() if layer.scale else 1.0
    beta = layer.beta.numpy() if layer.center else 0.0
    return gamma * (values - layer.moving_mean.numpy()) / std + beta


def _depthwise_constants(layer, values: np.ndarray) -> np.ndarray:
    """A zero depthwise kernel gives its bias; a constant input stays constant
    when no zero padding is read."""
    kernel = layer.kernel.numpy()
    bias = _bias(layer, len(values))
    through = np.nan if _pads(layer) else values * kernel.sum((0, 1, 3))
    zero = ~kernel.reshape(-1, len(values)).any(0)
    return _activation(layer.activation, np.where(zero, bias, through + bias))


class _Analysis:
    """Channel groups and per-channel constants of every tensor of a model."""

    def __init__(self, model: keras.Model):
        self.nodes = _graph(model)
        self.parent, self.spatial, self.const = {}, {}, {}
        self.pinned = [id(t) for t in model.outputs]
        counts = {}
        for node in self.nodes:
            counts[id(node.layer)] = counts.get(id(node.layer), 0) + 1
            if counts[id(node.layer)] > 1:
                raise ValueError(
                    f"`shrink` does not support layer '{node.layer.name}' being "
                    "called more than once (shared layers)."
                )
            _check_layer(node.layer, len(node.outputs[0].shape))
        for node in self.nodes:
            self._visit(node)

    def find(self, key: int) -> int:
        while self.parent[key] != key:
            key = self.parent[key]
        return key

    def _join(self, tensor, source) -> None:
        self.parent[id(tensor)] = self.find(id(source))

    def channels(self, tensor) -> int:
        return len(self.const[id(tensor)])

    def _visit(self, node: _Node) -> None:
        layer, out = node.layer, node.outputs[0]
        key = id(out)
        self.parent[key], self.spatial[key] = key, 1
        unknown = np.full(out.shape[-1], np.nan, np.float32)
        if not node.inputs:
            self.const[key] = unknown
            self.pinned.append(key)
            return
        first = node.inputs[0]
        if isinstance(layer, _READERS):
            self.const[key] = _reader_constants(layer)
            return
        if _mixes(layer):
            self.pinned.append(id(first))
            self.const[key] = unknown
            return
        self._join(out, first)
        self.spatial[key] = self.spatial[id(first)]
        values = self.const[id(first)]
        if isinstance(layer, L.Add):
            for other in node.inputs[1:]:
                self.parent[self.find(id(other))] = self.find(key)
                if self.spatial[id(other)] != self.spatial[key]:
                    self.pinned.append(key)
            values = np.sum([self.const[id(t)] for t in node.inputs], axis=0)
        elif isinstance(layer, L.Flatten):
            self.spatial[key] *= int(np.prod(first.shape[1:-1]))
        elif isinstance(layer, L.BatchNormalization):
            values = _batch_norm(layer, values)
        elif isinstance(layer, L.DepthwiseConv2D):
            values = _depthwise_constants(layer, values)
        elif isinstance(layer, _ELEMENTWISE):
            values = _activation(layer, values)
        self.const[key] = values.astype(np.float32)

    def keep(self) -> dict[int, np.ndarray]:
        """Kept channel indices for each group root."""
        removable = {}
        for node in self.nodes:
            if not isinstance(node.layer, _READERS):
                continue
            source = node.inputs[0]
            constant = self.const[id(source)]
            ok = np.isfinite(constant)
            if isinstance(node.layer, L.Conv2D) and _pads(node.layer):
                ok &= constant == 0
            root = self.find(id(source))
            removable[root] = removable.get(root, ok) & ok
        for key in self.pinned:
            removable.pop(self.find(key), None)
        keep = {}
        for root in {self.find(key) for key in self.parent}:
            channels = len(self.const[root])
            mask = removable.get(root, np.zeros(channels, bool))
            kept = np.flatnonzero(~mask)
            keep[root] = kept if len(kept) else np.arange(1)
        return keep


def _reader_weights(analysis, node, keep_in, keep_out):
    """Sliced kernel and bias of a Conv2D/Dense, removed inputs folded in."""
    layer, source = node.layer, node.inputs[0]
    channels, units = analysis.channels(source), layer.kernel.shape[-1]
    kernel = layer.kernel.numpy()
    view = kernel.reshape(-1, channels, units)
    removed = np.setdiff1d(np.arange(channels), keep_in)
    constant = analysis.const[id(source)][removed]
    fold = np.einsum("sco,c->o", view[:, removed], constant) if len(removed) else 0
    bias = (_bias(layer, units) + fold)[keep_out]
    sliced = view[:, keep_in][:, :, keep_out]
    if isinstance(layer, L.Conv2D):
        sliced = sliced.reshape(*kernel.shape[:2], len(keep_in), len(keep_out))
    else:
        sliced = sliced.reshape(-1, len(keep_out))
    use_bias = layer.use_bias or bool(np.any(bias != 0))
    return use_bias, [sliced, bias] if use_bias else [sliced]


def shrink(model: keras.Model) -> keras.Model:
    """Rebuilds a channel-pruned model without its removable zero filters.

    See the module docstring for which channels are removed. Biases of the
    readers of removed channels absorb the channels' constant values (a reader
    without bias gets one when needed), so the outputs match the original up
    to float rounding. Layers keep their names.

    Args:
        model: A built Sequential or Functional model made of the supported
            layers (Conv2D, Dense, DepthwiseConv2D, BatchNormalization, Add,
            activations, pooling, Dropout, Flatten, Softmax), channels last.

    Returns:
        A new, smaller Keras model with the same inputs and outputs.

    Example:

    ```python
    small = shrink(pruned_model)
    np.testing.assert_allclose(small.predict(x), pruned_model.predict(x), atol=1e-5)
    ```
    """
    _check_built(model)
    analysis = _Analysis(model)
    keep = analysis.keep()
    configs, weights = {}, {}
    for node in analysis.nodes:
        layer = node.layer
        kept = keep[analysis.find(id(node.outputs[0]))]
        if isinstance(layer, _READERS):
            kept_in = keep[analysis.find(id(node.inputs[0]))]
            use_bias, weights[layer.name] = _reader_weights(
                analysis, node, kept_in, kept
            )
            size = "filters" if isinstance(layer, L.Conv2D) else "units"
            configs[layer.name] = {size: len(kept), "use_bias": use_bias}
        elif isinstance(layer, L.DepthwiseConv2D):
            kernel, *bias = layer.get_weights()
            weights[layer.name] = [kernel[:, :, kept], *(b[kept] for b in bias)]
        elif isinstance(layer, L.BatchNormalization):
            weights[layer.name] = [w[kept] for w in layer.get_weights()]

    def clone(layer):
        config = {**layer.get_config(), **configs.get(layer.name, {})}
        return layer.__class__.from_config(config)

    shrunk = keras.models.clone_model(model, clone_function=clone)
    for name, values in weights.items():
        shrunk.get_layer(name).set_weights(values)
    return shrunk
