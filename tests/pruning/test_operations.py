import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.pruning import operations

L = keras.layers


def _convnet():
    keras.utils.set_random_seed(0)
    x = keras.Input((12, 12, 3))
    h = L.Conv2D(16, 3, name="c1")(x)
    h = L.ReLU()(L.BatchNormalization()(h))
    h = L.Conv2D(32, 3, name="c2")(h)
    h = L.Flatten()(L.MaxPooling2D()(h))
    h = L.Dense(24, name="d1")(h)
    return keras.Model(x, L.Dense(10, name="out")(h))


def _canonical(pk):
    return pk.layout.to_canonical(keras.ops.convert_to_numpy(pk.mask))


def test_hard_prune_masks_the_rows_that_read_removed_filters():
    pruned = tfr.apply(_convnet(), "filter", 0.75, layers=["c1", "c2", "d1"])
    entries = [(w, pk) for w in operations.wrappers(pruned) for pk in w.pruned_kernels]
    found = operations.couplings(pruned, entries)
    kernel = {w.name: w.pruned_kernels[0] for w, _ in entries}
    assert found == [
        ((kernel["c1"],), kernel["c2"], 1),
        ((kernel["c2"],), kernel["d1"], 16),
    ]
    operations.hard_prune(pruned)
    masks = {
        w.name: _canonical(w.pruned_kernels[0]) for w in operations.wrappers(pruned)
    }
    for producer, consumer, repeat in (("c1", "c2", 1), ("c2", "d1", 16)):
        removed = ~masks[producer].any(axis=(0, 1, 2))
        rows = masks[consumer].any(axis=(0, 1, 3)).reshape(repeat, -1)
        # A row is kept only if the filter it reads is.
        assert not rows[:, removed].any()
    assert removed.any()  # c2 lost filters, so d1 lost their rows
    # The target is met on the weights really kept, to within one unit.
    total = sum(m.size for m in masks.values())
    kept = sum(int(np.count_nonzero(m)) for m in masks.values())
    assert abs(kept - 0.25 * total) <= 512  # one filter of d1 (512 rows)
    assert tfr.report(pruned).sparsity > 0.74


def test_layer_scope_does_not_couple():
    pruned = tfr.apply(
        _convnet(), "filter", 0.75, scope="layer", layers=["c1", "c2", "d1"]
    )
    operations.hard_prune(pruned)
    mask = _canonical(pruned.get_layer("d1").pruned_kernels[0])
    assert mask.any(axis=(0, 1, 3)).all()  # every row of d1 kept


def test_separable_convolutions_couple_through_their_pointwise_kernels():
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, name="stem")(x)))
    h = L.SeparableConv2D(32, 3, name="sep")(
        L.Add()([h, L.DepthwiseConv2D(3, padding="same")(h)])
    )
    h = L.Conv2D(8, 1, name="head")(L.ReLU()(h))
    model = keras.Model(x, L.Dense(3, name="out")(L.GlobalAveragePooling2D()(h)))
    pruned = tfr.apply(model, "filter", 0.6, layers=["stem", "sep", "head"])
    sep = pruned.get_layer("sep")
    pointwise = [
        pk for pk in sep.pruned_kernels if pk.layout.attr == "pointwise_kernel"
    ][0]
    stem, head = (pruned.get_layer(n).pruned_kernels[0] for n in ("stem", "head"))
    # stem + depthwise(stem) reads stem's filters only: the Add is followed.
    assert operations.couplings(pruned) == [
        ((stem,), pointwise, 1),
        ((pointwise,), head, 1),
    ]
    operations.hard_prune(pruned)
    removed = ~_canonical(stem).any(axis=(0, 1, 2))
    assert removed.any()
    assert not _canonical(pointwise).any(axis=(0, 1, 3))[removed].any()


def _residual_net():
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    stem = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, name="stem")(x)))
    branch = L.ReLU()(
        L.BatchNormalization()(L.Conv2D(16, 3, padding="same", name="a")(stem))
    )
    stream = L.Add()([stem, L.BatchNormalization()(L.Conv2D(16, 1, name="b")(branch))])
    h = L.Conv2D(24, 1, name="head")(L.ReLU()(stream))
    return keras.Model(x, L.Dense(3, name="out")(L.GlobalAveragePooling2D()(h)))


def test_filters_of_a_residual_stream_are_pruned_together():
    pruned = tfr.apply(_residual_net(), "filter", 0.7)
    kernel = {w.name: w.pruned_kernels[0] for w in operations.wrappers(pruned)}
    assert operations.channel_groups(pruned) == [(kernel["stem"], kernel["b"])]
    assert ((kernel["stem"], kernel["b"]), kernel["head"], 1) in (
        operations.couplings(pruned)
    )
    operations.hard_prune(pruned)
    removed = [~_canonical(kernel[n]).any(axis=(0, 1, 2)) for n in ("stem", "b")]
    np.testing.assert_array_equal(removed[0], removed[1])
    assert removed[0].any()
    # The stream's removed channels free the rows of every reader.
    for reader in ("a", "head"):
        rows = _canonical(kernel[reader]).any(axis=(0, 1, 3))
        assert not rows[removed[0]].any()
    total = sum(int(np.prod(pk.layout.canonical)) for pk in kernel.values())
    kept = sum(int(np.count_nonzero(_canonical(pk))) for pk in kernel.values())
    unit = 3 * 3 * 3 + 16 + 3 * 3 * 16 + 24  # one joint filter and its rows
    assert abs(kept - 0.3 * total) <= unit


@pytest.mark.parametrize("path", ["update", "refresh"])
def test_admm_z_step_selects_a_residual_stream_jointly(path):
    # ADMM's Z keeps the units the hard prune keeps: with U = 0 the budget's
    # selection on W + U is its selection on W, residual stream included.
    pruned = tfr.apply(_residual_net(), "filter", 0.7, method=tfr.ADMMPenalty(1e-3))
    kernel = {w.name: w.pruned_kernels[0] for w in operations.wrappers(pruned)}
    if path == "update":
        tfr.callbacks.admm_update.update(pruned, dual=False)
    else:
        operations.refresh_penalties(pruned)
    z = {
        n: pk.layout.to_canonical(keras.ops.convert_to_numpy(pk.penalty.z))
        for n, pk in kernel.items()
    }
    for _, pk, mask in operations.selected_masks(pruned):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(pk.penalty.z) != 0,
            pk.layout.from_canonical((mask != 0) & (pk.canonical() != 0)),
        )
    operations.hard_prune(pruned, final=False)
    kept = {n: _canonical(pk).any(axis=(0, 1, 2)) for n, pk in kernel.items()}
    np.testing.assert_array_equal(z["stem"].any(axis=(0, 1, 2)), kept["stem"])
    np.testing.assert_array_equal(z["b"].any(axis=(0, 1, 2)), kept["b"])
    np.testing.assert_array_equal(kept["stem"], kept["b"])
    assert not kept["stem"].all()
