"""What the budget ranks: each kernel as the model uses it at inference.

A kernel that feeds a BatchNormalization layer has no scale of its own: BN
divides it out, so its raw magnitudes say nothing about how much its weights
matter, and a global magnitude ranking across layers can empty a stem or a
depthwise kernel while a Dense layer keeps its noise. The budget therefore
ranks the kernels *folded* with what follows them, per output channel:

- a kernel read by a BatchNormalization layer is scaled by
  ``|gamma| / sqrt(moving_variance + epsilon)``, the factor BN multiplies
  that channel by at inference (folding BN into the kernel);
- the two kernels of a SeparableConv2D act only through each other, and the
  split of scale between them is free: a depthwise weight is scaled by the
  norm of the (folded) pointwise row it feeds, a pointwise weight by the
  norm of the depthwise channel it reads (and by the BN factor).

Other kernels rank as they are. The masks are chosen on these views (so the
budget and the hard prune agree); the penalties and the weights themselves
are never rescaled.
"""

from __future__ import annotations

import keras
import numpy as np

from tf_reweight.core import walker
from tf_reweight.core.layouts import kernel_layouts
from tf_reweight.pruning.wrapper import PrunedKernel, PruningWrapper


def _batchnorm_scale(layer: keras.layers.BatchNormalization) -> np.ndarray:
    variance = keras.ops.convert_to_numpy(layer.moving_variance).astype(np.float64)
    scale = 1.0 / np.sqrt(variance + layer.epsilon)
    if layer.scale:
        scale = scale * np.abs(keras.ops.convert_to_numpy(layer.gamma))
    return scale


def output_scales(model: keras.Model) -> dict[int, np.ndarray]:
    """Per output channel, the BatchNorm factor of each wrapper BN reads.

    Returns:
        A dict from ``id(wrapper)`` to a positive vector, for the wrappers
        whose output a channels-last BatchNormalization layer reads directly.
    """
    scales = {}
    for layer, source in walker.feeders(model):
        if isinstance(source, PruningWrapper) and normalizes_channels(layer):
            scales[id(source)] = _batchnorm_scale(layer)
    return scales


def normalizes_channels(layer) -> bool:
    """Whether ``layer`` is a built, channels-last BatchNormalization layer."""
    return (
        isinstance(layer, keras.layers.BatchNormalization)
        and layer.built
        and layer.axis in (-1, len(layer.input.shape) - 1)
    )


def scale_free(model: keras.Model) -> set[int]:
    """The pruned kernels whose filters have no scale of their own.

    A filter-pruned kernel (its structure removes output channels) of a
    layer whose output only channels-last BatchNormalization layers read:
    BN divides each filter's scale out, so shrinking a filter changes
    nothing the network computes until the filter falls to BN's epsilon,
    where the channel dies whatever its importance. The depthwise half of
    a SeparableConv2D is included: its channel scales move freely into the
    pointwise rows. A sparsity penalty on such kernels prunes by the order
    in which it shrinks them, not by importance, so the reweighted penalty
    leaves them alone (`tf_reweight.pruning.refresh_penalties`) and the
    budget selects their filters on the folded ranking.

    Returns:
        The ``id`` of each such `PrunedKernel`.
    """
    readers: dict[int, list] = {}
    graphs = {}
    for model_graph, call in walker.calls(model):
        graphs[id(model_graph)] = model_graph
        for tensor in call.inputs:
            readers.setdefault(id(model_graph.producer(tensor).op), []).append(call.op)
    for model_graph in graphs.values():
        for tensor in model_graph.outputs:  # read outside the graph
            readers.setdefault(id(model_graph.producer(tensor).op), []).append(None)
    found = set()
    for wrapper in walker.iter_layers(model):
        if (
            isinstance(wrapper, PruningWrapper)
            and wrapper.structure.removes_outputs
            and readers.get(id(wrapper))
            and all(normalizes_channels(r) for r in readers[id(wrapper)])
        ):
            found.update(id(pk) for pk in wrapper.pruned_kernels)
    return found


def _canonical(wrapper: PruningWrapper, layout) -> np.ndarray:
    """A kernel's canonical view, masked where it is pruned."""
    for pk in wrapper.pruned_kernels:
        if pk.layout.attr == layout.attr:
            return pk.canonical()
    raw = keras.ops.convert_to_numpy(getattr(wrapper.layer, layout.attr))
    return layout.to_canonical(raw)


def ranking_scale(
    wrapper: PruningWrapper, pk: PrunedKernel, scales: dict[int, np.ndarray]
) -> np.ndarray:
    """The factor that turns ``pk``'s canonical view into its ranking view.

    Args:
        wrapper: The wrapper that owns ``pk``.
        pk: One of its pruned kernels.
        scales: `output_scales` of the model.

    Returns:
        A positive float array that broadcasts against the canonical
        ``(kh, kw, cin, cout)`` view (ones where nothing is folded in).
    """
    shape = pk.layout.canonical
    layouts = kernel_layouts(wrapper.layer)
    if not layouts:
        return np.ones((1, 1, 1, shape[3]), np.float32)
    scale = scales.get(id(wrapper))
    if scale is None or scale.size != layouts[-1].canonical[3]:
        scale = np.ones(layouts[-1].canonical[3])
    if not isinstance(wrapper.layer, keras.layers.SeparableConv2D):
        if pk.layout.attr != layouts[-1].attr:
            scale = np.ones(shape[3])
        return scale.reshape(1, 1, 1, -1).astype(np.float32)
    # Effective kernel: depthwise[k, c] * pointwise[c, o] * scale[o].
    depthwise = _canonical(wrapper, layouts[0])
    pointwise = _canonical(wrapper, layouts[1])[0, 0] * scale
    if pk.layout.attr == layouts[0].attr:
        rows = np.linalg.norm(pointwise, axis=1)
        return rows.reshape(1, 1, 1, -1).astype(np.float32)
    taps = np.linalg.norm(depthwise.reshape(-1, depthwise.shape[3]), axis=0)
    return (taps[:, None] * scale)[None, None].astype(np.float32)


def ranking_kernel(
    wrapper: PruningWrapper,
    pk: PrunedKernel,
    scales: dict[int, np.ndarray],
    kernel: np.ndarray | None = None,
) -> np.ndarray:
    """The canonical view of ``pk`` that the budget ranks (see the module):
    ``pk.canonical()`` (or ``kernel``, a canonical array ranked in its place)
    times `ranking_scale` (same arguments)."""
    kernel = pk.canonical() if kernel is None else kernel
    return kernel * ranking_scale(wrapper, pk, scales).astype(kernel.dtype)
