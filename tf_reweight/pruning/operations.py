"""Operations on a wrapped model: allocate, refresh penalties, hard prune.

Callbacks call these at set times; users may call them directly too. All of
them run eagerly, outside the training step, and read or write the state of
`PruningWrapper` layers.
"""

from __future__ import annotations

import keras
import numpy as np

from tf_reweight.core import backend_support, budget, dependency, joint, walker
from tf_reweight.core.checks import check_number
from tf_reweight.core.layouts import kernel_layouts
from tf_reweight.pruning import importance
from tf_reweight.pruning.wrapper import PrunedKernel, PruningWrapper


def wrappers(model: keras.Model) -> list[PruningWrapper]:
    """All `PruningWrapper` layers of a model, nested models included."""
    return [
        layer
        for layer in walker.iter_layers(model)
        if isinstance(layer, PruningWrapper)
    ]


def require_wrappers(model: keras.Model) -> list[PruningWrapper]:
    """Like `wrappers`, but raises when the model has none."""
    found = wrappers(model)
    if not found:
        raise ValueError(
            "The model has no pruned layers. Expected a model returned by "
            f"`tf_reweight.apply`. Received: model={getattr(model, 'name', model)!r}"
        )
    return found


def _entries(layers: list[PruningWrapper]) -> list[tuple[PruningWrapper, PrunedKernel]]:
    return [(w, pk) for w in layers for pk in w.pruned_kernels]


def allocate(model: keras.Model) -> list[tuple[PruningWrapper, PrunedKernel, int]]:
    """Keep counts for every pruned kernel at the current sparsity targets.

    Wrappers in the ``"global"`` scope are ranked together at their shared
    current target, on the views of `tf_reweight.pruning.importance`
    (BatchNorm folded in); the others meet their own.

    Returns:
        ``(wrapper, kernel, keep)`` triples.
    """
    return [(w, pk, keep) for w, pk, keep, _ in _allocation(model)[0]]


def _allocation(
    model: keras.Model, kernels: dict[int, np.ndarray] | None = None
) -> tuple[list[tuple], list[tuple]]:
    """`allocate`, with the view each kernel's units are selected on.

    Args:
        model: A model with `PruningWrapper` layers.
        kernels: None, or canonical arrays ranked in place of the weights of
            some kernels, keyed by ``id`` of their `PrunedKernel`.

    Returns:
        ``(wrapper, kernel, keep, view)`` per kernel (``structure.project(view,
        keep)`` is its mask), and the `couplings` of the global scope that the
        budget counted.
    """
    backend_support.sync_state(model)  # backend hook: JAX state mid-epoch
    entries = _entries(require_wrappers(model))
    scales = importance.output_scales(model)
    kernels = kernels or {}
    views = [
        importance.ranking_kernel(w, pk, scales, kernels.get(id(pk)))
        for w, pk in entries
    ]
    keep = [0] * len(entries)
    coupled = []
    global_ids = [i for i, (w, _) in enumerate(entries) if w.scope == "global"]
    local_ids = [i for i, (w, _) in enumerate(entries) if w.scope != "global"]
    if global_ids:
        target = float(keras.ops.convert_to_numpy(entries[global_ids[0]][0].sparsity))
        position = {id(entries[i][1]): n for n, i in enumerate(global_ids)}
        coupled, tied = _dependencies(model, [entries[i] for i in global_ids])
        counts, chosen = budget.select(
            [entries[i][0].structure for i in global_ids],
            [views[i] for i in global_ids],
            target,
            max_prune=[entries[i][0].max_prune for i in global_ids],
            couplings=[
                (tuple(position[id(p)] for p in ps), position[id(c)], repeat)
                for ps, c, repeat in coupled
            ],
            groups=[tuple(position[id(pk)] for pk in group) for group in tied],
        )
        for i, k, view in zip(global_ids, counts, chosen, strict=True):
            keep[i], views[i] = k, view
    for i in local_ids:
        w, pk = entries[i]
        keep[i] = w.structure.keep_for(
            pk.layout.canonical, float(keras.ops.convert_to_numpy(w.sparsity))
        )
    rows = [
        (w, pk, k, view) for (w, pk), k, view in zip(entries, keep, views, strict=True)
    ]
    return rows, coupled


def selected_masks(
    model: keras.Model, kernels: dict[int, np.ndarray] | None = None
) -> list[tuple[PruningWrapper, PrunedKernel, np.ndarray]]:
    """The canonical 0/1 masks the budget selects at the current targets.

    These are the masks `hard_prune` assigns (before it frees coupled rows):
    each kernel's structure projected on its ranking view, with BatchNorm
    folded in and the kernels of a residual stream selected together
    (`channel_groups`).

    Args:
        model: A model with `PruningWrapper` layers.
        kernels: None, or canonical arrays ranked in place of the weights of
            some kernels, keyed by ``id`` of their `PrunedKernel` (ADMM ranks
            ``W + U``).

    Returns:
        ``(wrapper, kernel, mask4)`` per pruned kernel.
    """
    return [
        (w, pk, w.structure.project(view, keep))
        for w, pk, keep, view in _allocation(model, kernels)[0]
    ]


def _dependencies(
    model: keras.Model, entries: list[tuple[PruningWrapper, PrunedKernel]] | None
) -> tuple[list[tuple], list[tuple]]:
    """`couplings` and `groups` of ``entries``, from one walk of the graph."""
    if entries is None:
        entries = [e for e in _entries(wrappers(model)) if e[0].scope == "global"]
    output = {}
    for w, pk in entries:
        layouts = kernel_layouts(w.layer)
        if layouts and pk.layout.attr == layouts[-1].attr:
            output[id(w)] = pk

    def pruning_wrapper(layer):
        while isinstance(layer, keras.layers.Wrapper):
            if id(layer) in output:
                return layer
            layer = layer.layer
        return None

    coupled, tied = [], []
    for graph_model in walker.graph_models(model):
        found = {id(layer): pruning_wrapper(layer) for layer in graph_model.layers}
        layers = [x for x in graph_model.layers if found[id(x)] is not None]

        def kernel(layer, found=found):
            return output[id(found[id(layer)])]

        graph = dependency.dependencies(graph_model, layers)
        coupled += [
            (tuple(kernel(p) for p in c.producers), kernel(c.consumer), c.repeat)
            for c in graph.couplings
        ]
        tied += [tuple(kernel(p) for p in group) for group in graph.groups]
    return coupled, tied


def couplings(
    model: keras.Model,
    entries: list[tuple[PruningWrapper, PrunedKernel]] | None = None,
) -> list[tuple[tuple[PrunedKernel, ...], PrunedKernel, int]]:
    """The filter-to-row couplings between pruned kernels of a model's graph.

    A wrapper's filters are those of its output kernel (the pointwise kernel
    of a SeparableConv2D), and its input rows those of the same kernel.

    Args:
        model: A model with `PruningWrapper` layers.
        entries: ``(wrapper, kernel)`` pairs that may couple. None: those of
            every wrapper in the global scope.

    Returns:
        ``(producers, consumer, repeat)``: input row ``c + r * filters`` of
        the consumer kernel reads filter ``c`` of every producer kernel (one,
        or several merged elementwise; see `tf_reweight.core.dependency`).
    """
    return _dependencies(model, entries)[0]


def channel_groups(
    model: keras.Model,
    entries: list[tuple[PruningWrapper, PrunedKernel]] | None = None,
) -> list[tuple[PrunedKernel, ...]]:
    """The pruned kernels whose filters are merged elementwise (residual streams).

    A global filter budget keeps and removes filter ``c`` of a group's
    kernels together. Arguments as `couplings`.

    Returns:
        Disjoint tuples of two or more output kernels.
    """
    return _dependencies(model, entries)[1]


def _mask_coupled_rows(model: keras.Model, coupled: list[tuple]) -> None:
    """Masks the kernel rows that read filters pruned away (see `couplings`).

    The couplings that free rows are those the budget counted
    (`tf_reweight.core.joint.valid_couplings`).
    """
    structure = {id(pk): w.structure for w, pk in _entries(wrappers(model))}
    kernels = list({id(pk): pk for ps, c, _ in coupled for pk in (*ps, c)}.values())
    index = {id(pk): n for n, pk in enumerate(kernels)}
    masks = [
        pk.layout.to_canonical(keras.ops.convert_to_numpy(pk.mask)).copy()
        for pk in kernels
    ]
    valid = joint.valid_couplings(
        [structure[id(pk)] for pk in kernels],
        masks,
        [(tuple(index[id(p)] for p in ps), index[id(c)], r) for ps, c, r in coupled],
        set(range(len(kernels))),
    )
    for found, consumer, repeat in valid:
        removed = np.logical_and.reduce([~masks[p].any(axis=(0, 1, 2)) for p in found])
        rows = joint.coupled_rows(masks[found[0]].shape[3], repeat, removed)
        if rows.size:
            masks[consumer][:, :, rows, :] = 0.0
            kernels[consumer].assign_mask(masks[consumer])


def set_sparsity(model: keras.Model, fraction: float) -> None:
    """Sets every wrapper's current target to ``fraction`` of its final one.

    Schedules use this: ``fraction = schedule(step) / schedule.final``.
    """
    backend_support.sync_state(model)  # backend hook: JAX state mid-epoch
    for w in require_wrappers(model):
        w.sparsity.assign(np.float32(w.target * fraction))


def refresh_penalties(model: keras.Model) -> None:
    """Refreshes the penalties' state (reweighting factors) from the weights.

    The groups the current target keeps are passed to the penalty, which in
    bounded mode exempts them. Wrappers that are already hard-pruned are
    left alone, and so are the kernels BatchNorm makes scale-free
    (`tf_reweight.pruning.importance.scale_free`) for penalties that spare
    them (`KernelPenalty.spare_scale_free`): their penalty is switched off.
    """
    rows = [
        (w, pk, keep, view)
        for w, pk, keep, view in _allocation(model)[0]
        if pk.penalty is not None and not w.is_pruned
    ]
    spared = any(pk.penalty.spare_scale_free for _, pk, _, _ in rows)
    free = importance.scale_free(model) if spared else set()
    for w, pk, keep, view in rows:
        if id(pk) in free and pk.penalty.spare_scale_free:
            pk.penalty.deactivate()
        else:
            pk.penalty.refresh(pk.canonical(), w.kept_groups(view, keep))


def calibrate_penalties(model: keras.Model, data_loss: float) -> float | None:
    """Sets the value of every penalty that waits for one (``"auto"``).

    The groups the *final* targets keep are counted over every such kernel
    (a progressive schedule's first stage would count far more and set a
    value too small for the rate it ends at), and each penalty computes its
    value from that count and ``data_loss``
    (`tf_reweight.methods.reweighted.auto_penalty` for reweighting).

    Args:
        model: A model with `PruningWrapper` layers.
        data_loss: The training loss before any penalty (finite, >= 0).

    Returns:
        The value set (the last one, if penalties differ), or None when no
        penalty waited.

    Raises:
        ValueError: If ``data_loss`` is not a finite number >= 0.
    """
    loss = check_number("data_loss", data_loss, 0.0)
    layers = require_wrappers(model)
    current = [keras.ops.convert_to_numpy(w.sparsity) for w in layers]
    set_sparsity(model, 1.0)
    try:
        waiting = [
            (w, pk, keep, view)
            for w, pk, keep, view in _allocation(model)[0]
            if pk.penalty is not None and pk.penalty.needs_calibration
        ]
        kept = sum(int(np.count_nonzero(w.kept_groups(v, k))) for w, _, k, v in waiting)
    finally:
        for w, value in zip(layers, current, strict=True):
            w.sparsity.assign(value)
    value = None
    for _, pk, _, _ in waiting:
        value = pk.penalty.calibrate(loss, kept)
    return value


def calibrated_penalty(model: keras.Model) -> float | None:
    """The value `calibrate_penalties` set, or None if no penalty has one."""
    for w in wrappers(model):
        for pk in w.pruned_kernels:
            if pk.penalty is not None and pk.penalty.calibrated is not None:
                return pk.penalty.calibrated
    return None


def hard_prune(model: keras.Model, final: bool = True) -> None:
    """Projects every pruned kernel onto its current target and masks it.

    The kernel rows that read filters pruned away (through channel-wise
    layers; see `couplings`) are masked too: the global budget counted them
    as freed.

    Where a BatchNormalization layer reads a layer whose filters were pruned,
    its moving mean of those channels is set to their constant value (see
    `align_batchnorm`), so inference matches training from the prune on.

    Args:
        model: A model with `PruningWrapper` layers.
        final: Mark the wrappers as pruned and switch their penalties off, so
            that training continues as masked retraining. Intermediate
            pruning steps of a schedule pass ``False``.
    """
    allocation, coupled = _allocation(model)
    for w, pk, keep, view in allocation:
        pk.assign_mask(w.structure.project(view, keep))
    _mask_coupled_rows(model, coupled)
    align_batchnorm(model)
    if final:
        for w in require_wrappers(model):
            w.pruned.assign(np.float32(1.0))
            for pk in w.pruned_kernels:
                if pk.penalty is not None:
                    pk.penalty.deactivate()


def _dead_filters(wrapper: PruningWrapper) -> tuple[np.ndarray, np.ndarray] | None:
    """The output channels of a wrapped layer whose filters are pruned away.

    Returns ``(dead, value)``: a boolean per output channel and the constant
    every dead channel then outputs (its bias), or None when the wrapped layer
    is not a Dense/convolution layer whose output kernel is pruned.
    """
    layouts = kernel_layouts(wrapper.layer)
    if not layouts or not wrapper.structure.removes_outputs:
        return None
    last = {pk.layout.attr: pk for pk in wrapper.pruned_kernels}.get(layouts[-1].attr)
    if last is None:
        return None
    mask4 = last.layout.to_canonical(keras.ops.convert_to_numpy(last.mask))
    dead = ~np.any(mask4 != 0, axis=(0, 1, 2))
    bias = getattr(wrapper.layer, "bias", None)
    value = np.zeros(dead.shape, np.float32)
    if bias is not None:
        value = keras.ops.convert_to_numpy(bias).astype(np.float32)
    return dead, value


def align_batchnorm(model: keras.Model) -> None:
    """Sets BatchNorm statistics of pruned channels to match training mode.

    A filter whose weights are all pruned outputs a constant, its bias. A
    BatchNormalization layer right after it normalizes that channel to its
    ``beta`` in training mode (the batch mean is the constant), but with its
    stale moving mean at inference. Setting the moving mean of those channels
    to the constant makes both give ``beta``, whatever the moving variance;
    training keeps it there. Other channels and layers are left alone.

    Args:
        model: A model with `PruningWrapper` layers.
    """
    dead_by_layer = {}
    for wrapper in wrappers(model):
        found = _dead_filters(wrapper)
        if found is not None and found[0].any():
            dead_by_layer[id(wrapper)] = found
    if not dead_by_layer:
        return
    for layer, source in walker.feeders(model):
        if not importance.normalizes_channels(layer):
            continue
        found = dead_by_layer.get(id(source))
        if found is None or found[0].shape != tuple(layer.moving_mean.shape):
            continue
        dead, value = found
        mean = keras.ops.convert_to_numpy(layer.moving_mean).copy()
        mean[dead] = value[dead]
        layer.moving_mean.assign(mean)
