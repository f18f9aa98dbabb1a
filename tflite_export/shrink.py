"""Remove zero filters from a channel-pruned Keras model.

Channel pruning leaves filters whose kernel column is all zero. Such a filter
still produces a channel: its bias, pushed through BatchNormalization
(`beta - gamma * mean / sqrt(var + eps)` for a zero input) and the following
per-channel layers, which is a constant, not zero in general. `shrink`
removes such a channel when every Conv/Dense that reads it sees that
constant, and folds the constant's contribution into the reader's bias, so
the smaller model computes the same function. Which channels qualify, through
residual sums, concatenations, squeeze-and-excite products and padding, is
decided in `tflite_export.shrink_graph`.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

import tf_reweight as tfr
from tf_reweight.core import dependency, walker
from tflite_export.shrink_graph import (
    Analysis,
    Node,
    bias,
    graph,
    main_kernel,
    reader_inputs,
)

L = keras.layers


def _check_built(model) -> None:
    if not isinstance(model, keras.Model) or not model.built or not model.outputs:
        raise ValueError(
            "Expected a built Sequential or Functional Keras model. "
            f"Received: model={model!r}"
        )


def _macs(node: Node) -> int:
    """Multiply-accumulates of one sample through one layer call."""
    layer = node.op
    if isinstance(layer, keras.Model):
        return count_macs(layer)
    out_elements = int(np.prod(node.outputs[0].shape[1:]))
    if isinstance(layer, L.DepthwiseConv2D):
        return out_elements * int(np.prod(layer.kernel_size))
    if isinstance(layer, L.SeparableConv2D):
        channels = node.inputs[0].shape[-1]
        spatial = out_elements // layer.filters
        depthwise = spatial * channels * int(np.prod(layer.kernel_size))
        return depthwise + out_elements * channels
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Dense)):
        return out_elements * int(np.prod(layer.kernel.shape[:-1]))
    return 0


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one sample through the convolutions and Dense.

    Args:
        model: A built Sequential or Functional model (nested models count).

    Returns:
        The MAC count per sample of Conv1D, Conv2D, DepthwiseConv2D,
        SeparableConv2D and Dense layers; other layers count as 0.

    Example:

    ```python
    print(count_macs(model) / 1e6, "MMACs")
    ```
    """
    _check_built(model)
    return sum(_macs(node) for node in graph(model))


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


def _reader_weights(analysis: Analysis, node: Node, keep_in, keep_out):
    """Sliced kernels and bias of a reader, removed inputs folded into the bias."""
    layer, source = node.op, node.inputs[0]
    kernel = main_kernel(layer)
    channels, units = len(analysis.ids[id(source)]), kernel.shape[-1]
    view = kernel.reshape(-1, channels, units)
    removed = np.setdiff1d(np.arange(channels), keep_in)
    seen = reader_inputs(layer, analysis.const[id(source)])[removed]
    fold = np.einsum("sco,c->o", view[:, removed], seen) if len(removed) else 0
    new_bias = (bias(layer, units) + fold)[keep_out]
    sliced = view[:, keep_in][:, :, keep_out]
    sliced = sliced.reshape(*kernel.shape[:-2], -1, len(keep_out))
    use_bias = layer.use_bias or bool(np.any(new_bias != 0))
    weights = [sliced, new_bias] if use_bias else [sliced]
    if isinstance(layer, L.SeparableConv2D):
        weights.insert(0, layer.depthwise_kernel.numpy()[:, :, keep_in])
    size = "units" if isinstance(layer, L.Dense) else "filters"
    return {size: len(keep_out), "use_bias": use_bias}, weights


def _sliced_parameter(value, kept) -> object:
    """A scalar or per-channel Rescaling/Normalization parameter, sliced."""
    array = np.asarray(keras.ops.convert_to_numpy(value)).reshape(-1)
    return value if array.size == 1 else array[kept].tolist()


def _rewrite(analysis: Analysis, node: Node) -> tuple[dict, list | None]:
    """Config changes and new weights (None: keep them) of one layer call."""
    layer, kind = node.op, analysis.kind[id(node)]
    if kind == "reader":
        keep_in = analysis.kept(node.inputs[0])
        return _reader_weights(analysis, node, keep_in, analysis.kept(node.outputs[0]))
    if kind not in ("depthwise", "spatial", "pointwise"):
        return {}, None
    kept = analysis.kept(node.outputs[0])
    if isinstance(layer, L.DepthwiseConv2D):
        kernel, *rest = layer.get_weights()
        return {}, [kernel[:, :, kept], *(b[kept] for b in rest)]
    if isinstance(layer, L.BatchNormalization):
        return {}, [w[kept] for w in layer.get_weights()]
    if dependency.is_layer_scale(layer):  # ConvNeXt: one gamma per channel
        return {"projection_dim": len(kept)}, [layer.get_weights()[0][kept]]
    if isinstance(layer, L.Rescaling):
        return {
            "scale": _sliced_parameter(layer.scale, kept),
            "offset": _sliced_parameter(layer.offset, kept),
        }, None
    if isinstance(layer, L.Normalization):
        # Adapted statistics become constructor arguments of the new layer.
        return {
            "mean": _sliced_parameter(layer.mean, kept),
            "variance": _sliced_parameter(layer.variance, kept),
        }, []
    if isinstance(layer, L.Reshape) and layer.target_shape[-1] != -1:
        repeat = analysis.repeat[id(node.outputs[0])]
        target = (*layer.target_shape[:-1], repeat * len(kept))
        return {"target_shape": target}, None
    return {}, None


def _inline(model: keras.Model) -> keras.Model:
    """A flat Functional copy of ``model``: nested graph models are opened.

    Every layer call is replayed on a fresh copy of its layer (same config,
    name and weights), so the user's layers gain no call. The copy computes
    the same function. A layer name that would appear twice in the flat graph
    (two nested models share it, or a nested model is called twice) is
    refused by name.
    """
    names: set[str] = set()

    def replay(graph_model, values):
        model_graph = walker.graph(graph_model)
        position = {id(t): i for i, t in enumerate(graph_model.inputs)}
        env = {}
        for call in model_graph.calls:
            if not call.inputs:  # an input: its value comes from outside
                env[id(call.outputs[0])] = values[position[id(call.op.output)]]
                continue
            args = [env[id(t)] for t in call.inputs]
            if walker.is_graph_model(call.op):
                outputs = replay(call.op, args)
            elif isinstance(call.op, L.Layer):
                if call.op.name in names:
                    raise ValueError(
                        "`shrink` opens nested models into one graph, where each "
                        "layer must appear once under its own name. Rename the "
                        "layers two nested models share, and give each call of a "
                        f"nested model its own model. Received: layer "
                        f"{call.op.name!r} twice in model={model.name!r}"
                    )
                names.add(call.op.name)
                copy = call.op.__class__.from_config(call.op.get_config())
                outputs = keras.tree.flatten(dataclasses.replace(call, op=copy)(args))
                copy.set_weights(call.op.get_weights())
            else:
                outputs = keras.tree.flatten(call(args))
            for tensor, value in zip(call.outputs, outputs, strict=False):
                env[id(tensor)] = value
        return [env[id(t)] for t in model_graph.outputs]

    outputs = replay(model, list(model.inputs))
    inputs, outputs = (t if len(t) > 1 else t[0] for t in (model.inputs, outputs))
    return keras.Model(inputs, outputs, name=model.name)


def shrink(model: keras.Model) -> keras.Model:
    """Rebuilds a channel-pruned model without its removable zero filters.

    See `tflite_export.shrink_graph` for which channels are removed. Biases
    of the readers of removed channels absorb the channels' constant values
    (a reader without bias gets one when needed), so the outputs match the
    original up to float rounding. Layers keep their names; layers `shrink`
    does not follow are copied unchanged when no zero filter feeds them.

    Args:
        model: A built Sequential or Functional model, channels last, whose
            layers are called once each.

    Returns:
        A new, smaller Keras model with the same inputs and outputs.

    Raises:
        ValueError: If the model is not built, shares a layer, or a layer
            `shrink` does not follow reads channels of zero filters (the
            message names the layer); raised before anything is built.

    Example:

    ```python
    small = shrink(pruned_model)
    np.testing.assert_allclose(small.predict(x), pruned_model.predict(x), atol=1e-5)
    ```
    """
    _check_built(model)
    if tfr.pruning.wrappers(model):
        raise ValueError(
            "The model still has pruning wrappers. Expected a plain model: call "
            "`tf_reweight.strip` first (`tflite_export.export` does). Received: "
            f"model={model.name!r} with layers of type PruningWrapper"
        )
    if any(walker.is_graph_model(node.op) for node in graph(model)):
        model = _inline(model)
    analysis = Analysis(model)
    configs, weights = {}, {}
    for node in analysis.nodes:
        if isinstance(node.op, L.Layer):
            configs[node.op.name], new = _rewrite(analysis, node)
            weights[node.op.name] = node.op.get_weights() if new is None else new

    def clone(op):
        if not isinstance(op, L.Layer):
            return op
        config = {**op.get_config(), **configs.get(op.name, {})}
        return op.__class__.from_config(config)

    shrunk = keras.models.clone_model(model, clone_function=clone)
    for name, values in weights.items():
        if values:
            shrunk.get_layer(name).set_weights(values)
    return shrunk
