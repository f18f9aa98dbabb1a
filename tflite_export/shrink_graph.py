"""Channel graph of a Keras model: which channels `shrink` may remove.

Every channel of every tensor gets an id. A Conv1D/Conv2D/SeparableConv2D/
Dense output starts fresh ids; per-channel layers (BatchNormalization,
Rescaling, Normalization, activations, DepthwiseConv2D, pooling, padding,
cropping, Dropout) and Flatten/Reshape keep them; Add/Multiply/Subtract (as
layers or as `keras.ops` nodes such as `x * y`, and InceptionResNetV2's
``x + scale * y``) join the ids of their inputs position by position, so a
channel leaves all branches of a residual sum or squeeze-and-excite product
or none; Concatenate concatenates them. Each
channel also carries its value when that is a known constant (NaN if not):
an all-zero kernel column gives its bias, pushed through the per-channel
layers (computed by calling them, so any activation is followed exactly).

A channel id is removed when every Conv/Dense reading it sees a known
constant, which is then folded into the reader's bias, and no model input or
output, nor a layer that mixes channels (Softmax, LayerNormalization), reads
it. Zero padding (ZeroPadding2D, or `padding="same"` of a kernel larger than
one) turns a non-zero constant into a non-constant border, so only an exactly
zero constant crosses it. A product with an exactly zero constant is zero
(the other factor is assumed finite). Each filter-producing layer keeps at
least one channel.

A layer this model does not cover (a grouped convolution, a custom layer;
`shrink` opens nested models before the analysis) is copied as it is; when it
has zero filters, or channels of zero filters feed it, they cannot be removed
and `Analysis` raises a `ValueError` naming the layer.
"""

from __future__ import annotations

import keras
import numpy as np

from tf_reweight.core import dependency, walker
from tf_reweight.core.dependency import MIXING_ACTIVATIONS, UNARY_OPS

L = keras.layers
READERS = dependency.READERS
_SPATIAL = (*dependency.SPATIAL, L.Flatten, L.Reshape)
_PADS = dependency.PADS
_WEIGHTED = dependency.WEIGHTED
_POINTWISE = dependency.POINTWISE
_MERGES = dependency.MERGES
_MIXING = (L.Softmax, L.LayerNormalization, L.GroupNormalization)
_BINARY_OPS = ("Add", "Subtract", "Multiply", "Divide", "TrueDivide")
_BINARY_OPS += ("Maximum", "Minimum")
_HINT = (
    "Leave the filters that feed it dense (do not prune them), or build the "
    "model from layers `shrink` follows"
)


Node = walker.Call


def graph(model: keras.Model) -> list[Node]:
    """The operation calls of a built Sequential/Functional model, inputs first.

    See `tf_reweight.core.walker.graph`, which reads who feeds whom (shared
    layers included) from the model's public config.
    """
    return walker.graph(model).calls


def pads(layer) -> bool:
    """Whether a convolution's borders read zero padding."""
    return layer.padding != "valid" and any(k != 1 for k in layer.kernel_size)


def bias(layer, size: int) -> np.ndarray:
    """The layer's bias, zeros if it has none."""
    return layer.bias.numpy() if layer.use_bias else np.zeros(size, np.float32)


def _activation(fn, values: np.ndarray) -> np.ndarray:
    """Applies an elementwise activation to the known (finite) constants."""
    out = np.full(values.shape, np.nan, np.float32)
    known = np.isfinite(values)
    if known.any():
        result = fn(keras.ops.convert_to_tensor(values[known][None], "float32"))
        out[known] = keras.ops.convert_to_numpy(result)[0]
    return out


def _depthwise(values: np.ndarray, kernel: np.ndarray, padded: bool) -> np.ndarray:
    """Per-channel constants after a depthwise kernel, before its bias."""
    zero = ~kernel.reshape(-1, len(values)).any(0)
    if padded:
        through = np.where(values == 0, 0.0, np.nan)
    else:
        through = values * kernel.sum((0, 1, 3))
    return np.where(zero, 0.0, through)


def reader_inputs(layer, values: np.ndarray) -> np.ndarray:
    """The constants a reader's main kernel sees for its input constants.

    The pointwise kernel of a SeparableConv2D sees them through the depthwise
    part; a padded convolution sees only exact zeros as constants.
    """
    if isinstance(layer, L.SeparableConv2D):
        return _depthwise(values, layer.depthwise_kernel.numpy(), pads(layer))
    if isinstance(layer, L.Dense) or not pads(layer):
        return values
    return np.where(values == 0, 0.0, np.nan)


def main_kernel(layer) -> np.ndarray:
    """The kernel that mixes a reader's input channels."""
    if isinstance(layer, L.SeparableConv2D):
        return layer.pointwise_kernel.numpy()
    return layer.kernel.numpy()


def _reader_constants(layer) -> np.ndarray:
    """Output constants of a reader: its all-zero kernel columns."""
    kernel = main_kernel(layer)
    units = kernel.shape[-1]
    zero = ~kernel.reshape(-1, units).any(0)
    return _activation(layer.activation, np.where(zero, bias(layer, units), np.nan))


def _per_channel(value, channels: int) -> bool:
    """Whether a Rescaling/Normalization parameter is a scalar or per channel."""
    shape = np.shape(value)
    last = shape[-1:] in ((), (1,), (channels,))
    return last and int(np.prod(shape)) in (1, channels)


def _config_problem(layer, rank: int, channels: int) -> str | None:
    """Why a layer of a followed type is not followed, or None."""
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "it needs data_format='channels_last'"
    if getattr(layer, "groups", 1) != 1:
        return "it needs groups=1"
    if getattr(layer, "depth_multiplier", 1) != 1:
        return "it needs depth_multiplier=1"
    axis = getattr(layer, "axis", -1)
    axes = tuple(np.ravel(axis)) if axis is not None else ()
    if isinstance(layer, (L.BatchNormalization, L.Concatenate, L.Normalization)):
        if axes not in ((-1,), (rank - 1,)) and not (
            isinstance(layer, L.Normalization) and axes == ()
        ):
            return "it needs the channel axis last (axis=-1)"
    if isinstance(layer, L.Rescaling) and not (
        _per_channel(layer.scale, channels) and _per_channel(layer.offset, channels)
    ):
        return "its scale and offset must be scalars or per channel"
    return None


def _has_zero_filters(layer) -> bool:
    """Whether a layer (or a model nested in it) has an all-zero kernel column."""
    if isinstance(layer, keras.Model):
        return any(_has_zero_filters(inner) for inner in layer.layers)
    kernel = getattr(layer, "kernel", None)
    if kernel is None or len(kernel.shape) < 2:
        return False
    kernel = keras.ops.convert_to_numpy(kernel)
    return bool((~kernel.reshape(-1, kernel.shape[-1]).any(0)).any())


class Analysis:
    """Channel ids, constants and removable channels of a model's tensors.

    Args:
        model: A built Sequential or Functional model.

    Raises:
        ValueError: When a layer is shared, or a layer that is not followed
            reads channels of zero filters.
    """

    def __init__(self, model: keras.Model):
        model_graph = walker.graph(model)
        self.nodes = model_graph.calls
        self.parent: list[int] = []
        self.ids, self.const, self.repeat, self.kind = {}, {}, {}, {}
        self._pinned, self._blocked, self.readers = [], [], []
        self._check_shared()
        for node in self.nodes:
            self._visit(node)
        self._pinned.extend(self.ids[id(t)] for t in model_graph.outputs)
        self.removable = self._decide()

    def _check_shared(self) -> None:
        seen = set()
        for node in self.nodes:
            if isinstance(node.op, L.Layer):
                if id(node.op) in seen:
                    raise ValueError(
                        f"`shrink` does not support layer '{node.op.name}' being "
                        "called more than once (shared layers). Give each call "
                        f"its own layer. Received: layer={node.op!r}"
                    )
                seen.add(id(node.op))

    def roots(self, ids: np.ndarray) -> np.ndarray:
        """Union-find roots of channel ids."""
        out = np.empty(len(ids), int)
        for i, key in enumerate(ids):
            while self.parent[key] != key:
                self.parent[key] = self.parent[self.parent[key]]
                key = self.parent[key]
            out[i] = key
        return out

    def kept(self, tensor) -> np.ndarray:
        """Indices of the channels of `tensor` that stay."""
        return np.flatnonzero(~self.removable[self.roots(self.ids[id(tensor)])])

    def _fresh(self, tensor) -> np.ndarray:
        shape = tensor.shape
        size = shape[-1] if shape and shape[-1] is not None else 1
        ids = np.arange(len(self.parent), len(self.parent) + size)
        self.parent.extend(ids.tolist())
        self.ids[id(tensor)], self.repeat[id(tensor)] = ids, 1
        self.const[id(tensor)] = np.full(size, np.nan, np.float32)
        return ids

    def _classify(self, node: Node) -> tuple[str, str | None]:
        """The node's kind, and for kind 'other' why it is not followed."""
        op, inputs = node.op, node.inputs
        if not inputs:
            return "input", None
        if isinstance(op, keras.Model):
            return "other", "it is a nested model"
        if len(node.outputs) != 1:
            return "other", "it has several outputs"
        first = inputs[0]
        rank, channels = len(first.shape), len(self.ids[id(first)])
        repeat = self.repeat[id(first)]
        if not isinstance(op, L.Layer):
            name = type(op).__name__
            if not type(op).__module__.startswith("keras"):
                return "other", "it is not a Keras operation"
            if any(np.ndim(c) != 0 for c in node.constants):
                return "other", "it has non-scalar constant arguments"
            if name in UNARY_OPS or (name in _BINARY_OPS and len(inputs) == 1):
                return "pointwise", None
            if name in _BINARY_OPS:
                return self._merge_kind(node)
            return "other", "this operation is not followed"
        if isinstance(op, _MIXING) or (
            isinstance(op, L.Activation)
            and getattr(op.activation, "__name__", "") in MIXING_ACTIVATIONS
        ):
            return "mixing", None
        if dependency.is_layer_scale(op):
            return "pointwise", None
        if dependency.is_scaled_add(op):
            return self._merge_kind(node)
        followed = (*READERS, L.DepthwiseConv2D, *_SPATIAL, *_PADS, *_POINTWISE)
        followed += (*_MERGES, L.Concatenate)
        if type(op) not in followed:
            return "other", "its type is not followed"
        problem = _config_problem(op, rank, channels)
        if problem:
            return "other", problem
        if repeat != 1 and isinstance(
            op, (L.DepthwiseConv2D, L.SeparableConv2D, L.Concatenate, *_WEIGHTED)
        ):
            return "other", "it reads a flattened tensor"
        if isinstance(op, READERS):
            return "reader", None
        if isinstance(op, (L.Flatten, L.Reshape)):
            width = node.outputs[0].shape[-1]
            if width is None or width % channels:
                return "other", "it splits the channel axis"
        if isinstance(op, _MERGES):
            return self._merge_kind(node)
        if isinstance(op, L.Concatenate):
            return "concat", None
        if isinstance(op, L.DepthwiseConv2D):
            return "depthwise", None
        if isinstance(op, _POINTWISE):
            return "pointwise", None
        return ("pad" if isinstance(op, _PADS) else "spatial"), None

    def _merge_kind(self, node: Node) -> tuple[str, str | None]:
        shapes = {(len(self.ids[id(t)]), self.repeat[id(t)]) for t in node.inputs}
        if len(shapes) != 1:
            return "other", "it broadcasts over the channel axis"
        return "merge", None

    def _visit(self, node: Node) -> None:
        kind, reason = self._classify(node)
        self.kind[id(node)] = kind
        out = node.outputs[0]
        if kind in ("input", "mixing", "other", "reader"):
            for tensor in node.outputs:
                ids = self._fresh(tensor)
                if kind != "reader":
                    self._pinned.append(ids)
            if kind == "reader":
                self.const[id(out)] = _reader_constants(node.op)
                self.readers.append(node)
            elif kind == "mixing":
                self._pinned.extend(self.ids[id(t)] for t in node.inputs)
            elif kind == "other":
                self._blocked.append((node, reason))
            return
        first = node.inputs[0]
        key, values = id(out), self.const[id(first)]
        self.ids[key] = self.ids[id(first)]
        self.repeat[key] = self.repeat[id(first)]
        if kind == "concat":
            self.ids[key] = np.concatenate([self.ids[id(t)] for t in node.inputs])
            values = np.concatenate([self.const[id(t)] for t in node.inputs])
        elif kind == "spatial":
            self.repeat[key] = out.shape[-1] // len(values)
        elif kind == "pad":
            values = np.where(values == 0, 0.0, np.nan)
        elif kind == "depthwise":
            layer = node.op
            through = _depthwise(values, layer.kernel.numpy(), pads(layer))
            values = _activation(layer.activation, through + bias(layer, len(values)))
        else:
            if kind == "merge":
                roots = [self.roots(self.ids[id(t)]) for t in node.inputs]
                for other in roots[1:]:
                    for a, b in zip(roots[0], other, strict=True):
                        self.parent[self.roots([b])[0]] = self.roots([a])[0]
            values = self._probe(node)
        self.const[key] = np.asarray(values, np.float32)

    def _probe(self, node: Node) -> np.ndarray:
        """Calls a per-channel node on its inputs' constants (NaN: unknown)."""
        consts = [self.const[id(t)] for t in node.inputs]
        known = np.logical_and.reduce([np.isfinite(c) for c in consts])
        if type(node.op).__name__ == "Multiply":
            known |= np.logical_or.reduce([c == 0 for c in consts])
        if not known.any():
            return np.full(len(consts[0]), np.nan, np.float32)
        repeat, rank = self.repeat[id(node.inputs[0])], len(node.inputs[0].shape)
        shape = (1,) * (rank - 1) + (-1,)
        values = [
            keras.ops.convert_to_tensor(
                np.tile(np.where(np.isfinite(c), c, 0.0), repeat).reshape(shape),
                "float32",
            )
            for c in consts
        ]
        out = keras.ops.convert_to_numpy(node(values)).reshape(-1)
        return np.where(known, out[: len(known)], np.nan)

    def _decide(self) -> np.ndarray:
        """Which channel roots are removed (True), per the module docstring."""
        removable = np.ones(len(self.parent), bool)
        for node in self.readers:
            source = node.inputs[0]
            seen = reader_inputs(node.op, self.const[id(source)])
            ok = np.isfinite(seen)
            np.logical_and.at(removable, self.roots(self.ids[id(source)]), ok)
        for ids in self._pinned:
            removable[self.roots(ids)] = False
        for node, reason in self._blocked:
            if _has_zero_filters(node.op):
                raise ValueError(
                    f"`shrink` cannot follow layer '{node.op.name}' of type "
                    f"{type(node.op).__name__} ({reason}), and it has zero "
                    "filters, so they cannot be removed. Leave its filters dense "
                    "(do not prune them), or build the model from layers "
                    f"`shrink` follows. Received: layer={node.op!r}"
                )
            for tensor in node.inputs:
                roots = self.roots(self.ids[id(tensor)])
                if np.any(removable[roots] & np.isfinite(self.const[id(tensor)])):
                    layer = node.op
                    raise ValueError(
                        f"`shrink` cannot follow layer '{layer.name}' of type "
                        f"{type(layer).__name__} ({reason}), and channels of zero "
                        f"filters feed it, so they cannot be removed. {_HINT}. "
                        f"Received: layer={layer!r}"
                    )
                removable[roots] = False
        for node in self.readers:
            roots = self.roots(self.ids[id(node.outputs[0])])
            if removable[roots].all():
                removable[roots[0]] = False
        return removable
