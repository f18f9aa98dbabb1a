import warnings

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.core import structures
from tf_reweight.core.layouts import (
    SUPPORTED_LAYERS,
    KernelLayout,
    kernel_layouts,
    unsupported_reason,
)

RNG = np.random.default_rng(0)


def _mha_sublayers():
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, name="mha")
    q = np.zeros((1, 5, 7), "float32")
    mha(q, q)
    return {
        name: getattr(mha, f"_{name}_dense")
        for name in ("query", "key", "value", "output")
    }


@pytest.mark.parametrize(
    "layer, input_shape, expected",
    [
        (keras.layers.Dense(5), (None, 7), [("kernel", (7, 5), (1, 1, 7, 5))]),
        (
            keras.layers.Conv1D(5, 3),
            (None, 9, 4),
            [("kernel", (3, 4, 5), (1, 3, 4, 5))],
        ),
        (
            keras.layers.Conv2D(5, 3),
            (None, 9, 9, 4),
            [("kernel", (3, 3, 4, 5), (3, 3, 4, 5))],
        ),
        (
            keras.layers.Conv3D(5, (2, 3, 4)),
            (None, 6, 6, 6, 4),
            [("kernel", (2, 3, 4, 4, 5), (6, 4, 4, 5))],
        ),
        (
            keras.layers.Conv1DTranspose(5, 3),
            (None, 9, 4),
            [("kernel", (3, 5, 4), (1, 3, 4, 5))],
        ),
        (
            keras.layers.Conv2DTranspose(5, 3),
            (None, 9, 9, 4),
            [("kernel", (3, 3, 5, 4), (3, 3, 4, 5))],
        ),
        (
            keras.layers.Conv3DTranspose(5, (2, 3, 4)),
            (None, 6, 6, 6, 4),
            [("kernel", (2, 3, 4, 5, 4), (6, 4, 4, 5))],
        ),
        (
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2),
            (None, 9, 9, 4),
            [("kernel", (3, 3, 4, 2), (3, 3, 1, 8))],
        ),
        (
            keras.layers.SeparableConv2D(6, 3, depth_multiplier=2),
            (None, 9, 9, 4),
            [
                ("depthwise_kernel", (3, 3, 4, 2), (3, 3, 1, 8)),
                ("pointwise_kernel", (1, 1, 8, 6), (1, 1, 8, 6)),
            ],
        ),
        (
            keras.layers.EinsumDense("ab,bc->ac", output_shape=5),
            (None, 7),
            [("kernel", (7, 5), (1, 1, 7, 5))],
        ),
        (
            keras.layers.EinsumDense("...b,bc->...c", output_shape=5),
            (None, 3, 7),
            [("kernel", (7, 5), (1, 1, 7, 5))],
        ),
        (
            keras.layers.EinsumDense("ab,cb->ac", output_shape=5),
            (None, 7),
            [("kernel", (5, 7), (1, 1, 7, 5))],
        ),
        (
            keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3)),
            (None, 4, 7),
            [("kernel", (7, 2, 3), (1, 1, 7, 6))],
        ),
        (
            keras.layers.EinsumDense("abcd,cde->abe", output_shape=(None, 7)),
            (None, 4, 2, 3),
            [("kernel", (2, 3, 7), (1, 1, 6, 7))],
        ),
        (keras.layers.BatchNormalization(), (None, 4), []),
    ],
)
def test_canonical_views(layer, input_shape, expected):
    layer.build(input_shape)
    got = [(lo.attr, lo.shape, lo.canonical) for lo in kernel_layouts(layer)]
    assert got == expected
    assert unsupported_reason(layer) is None


def test_supported_layers_name_the_new_types():
    for name in ("EinsumDense", "Conv3D", "Conv2DTranspose", "Conv3DTranspose"):
        assert name in SUPPORTED_LAYERS


def test_multi_head_attention_kernels():
    layouts = {name: kernel_layouts(layer) for name, layer in _mha_sublayers().items()}
    for name in ("query", "key", "value"):
        (layout,) = layouts[name]
        assert (layout.shape, layout.canonical, layout.perm) == (
            (7, 2, 3),
            (1, 1, 7, 6),
            None,
        )
    (layout,) = layouts["output"]
    assert (layout.shape, layout.canonical) == ((2, 3, 7), (1, 1, 6, 7))


def test_einsum_with_a_batched_kernel_axis_is_left_dense_with_a_reason():
    # One (c, d) matrix per position b: no single GEMM to prune.
    layer = keras.layers.EinsumDense("abc,bcd->abd", output_shape=(4, 8))
    layer.build((None, 4, 6))
    assert kernel_layouts(layer) == []
    reason = unsupported_reason(layer)
    assert "'b'" in reason and "abc,bcd->abd" in reason and "left dense" in reason


def test_other_layers_have_no_unsupported_reason():
    assert unsupported_reason(keras.layers.ReLU()) is None


def test_depthwise_filters_follow_output_channel_order():
    layer = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)
    layer.build((None, 9, 9, 4))
    (layout,) = kernel_layouts(layer)
    w = np.arange(3 * 3 * 4 * 2, dtype="float32").reshape(3, 3, 4, 2)
    w4 = keras.ops.convert_to_numpy(layout.to_canonical(w))
    # Output channel c * mult + m reads input channel c with multiplier m.
    np.testing.assert_array_equal(w4[:, :, 0, 2 * 3 + 1], w[:, :, 3, 1])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layout.from_canonical(w4)), w
    )


def _single_kernel_layers():
    """(id, built layer, input shape) of every single-kernel layout kind."""
    cases = [
        ("dense", keras.layers.Dense(5), (2, 7)),
        ("conv1d", keras.layers.Conv1D(5, 3), (2, 8, 4)),
        ("conv2d", keras.layers.Conv2D(5, 3), (2, 6, 6, 4)),
        ("conv3d", keras.layers.Conv3D(5, (2, 3, 2)), (2, 4, 5, 4, 3)),
        ("conv1d_t", keras.layers.Conv1DTranspose(5, 3, strides=2), (2, 6, 4)),
        ("conv2d_t", keras.layers.Conv2DTranspose(5, 3, strides=2), (2, 5, 5, 4)),
        ("conv3d_t", keras.layers.Conv3DTranspose(5, (2, 3, 2)), (2, 3, 4, 3, 3)),
        (
            "depthwise",
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2),
            (2, 6, 6, 3),
        ),
        ("einsum_t", keras.layers.EinsumDense("ab,cb->ac", output_shape=5), (2, 7)),
        (
            "einsum_3d",
            keras.layers.EinsumDense("abc,dcb->ad", output_shape=5),
            (2, 3, 4),
        ),
        (
            "einsum_out_t",
            keras.layers.EinsumDense("ab,cbd->adc", output_shape=(3, 2)),
            (2, 7),
        ),
    ]
    for name, layer in _mha_sublayers().items():
        cases.append(
            (f"mha_{name}", layer, (2, 5, 2, 3) if name == "output" else (2, 5, 7))
        )
    for _, layer, shape in cases:
        if not layer.built:
            layer.build(shape)
    return cases


CASES = _single_kernel_layers()
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize("name, layer, input_shape", CASES, ids=IDS)
def test_round_trips_on_numpy_and_tensors(name, layer, input_shape):
    (layout,) = kernel_layouts(layer)
    w = RNG.normal(size=layout.shape).astype("float32")
    w4 = layout.to_canonical(w)
    assert isinstance(w4, np.ndarray) and w4.shape == layout.canonical
    back = layout.from_canonical(w4)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, w)

    t4 = layout.to_canonical(keras.ops.convert_to_tensor(w))
    assert not isinstance(t4, np.ndarray)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(t4), w4)
    tback = layout.from_canonical(t4)
    assert not isinstance(tback, np.ndarray)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(tback), w)
    # The kernel variable itself goes through the tensor path.
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layout.to_canonical(layer.kernel)),
        layout.to_canonical(keras.ops.convert_to_numpy(layer.kernel)),
    )


def _outputs(layer, x, cout):
    """The layer's outputs with the output channels flattened last."""
    y = keras.ops.convert_to_numpy(layer(x))
    return y.reshape(-1, cout)


@pytest.mark.parametrize("name, layer, input_shape", CASES, ids=IDS)
def test_zeroed_canonical_filter_silences_exactly_that_output(name, layer, input_shape):
    (layout,) = kernel_layouts(layer)
    cout = layout.canonical[3]
    c = cout - 2
    original = keras.ops.convert_to_numpy(layer.kernel)
    mask4 = np.ones(layout.canonical, "float32")
    mask4[..., c] = 0.0
    layer.kernel.assign(original * layout.from_canonical(mask4))
    try:
        y1 = _outputs(layer, RNG.normal(size=input_shape).astype("float32"), cout)
        y2 = _outputs(layer, RNG.normal(size=input_shape).astype("float32"), cout)
    finally:
        layer.kernel.assign(original)
    spread = np.abs(y1 - y2).max(axis=0)
    assert spread[c] < 1e-6
    assert np.all(np.delete(spread, c) > 1e-3)


@pytest.mark.parametrize("name, layer, input_shape", CASES, ids=IDS)
def test_zeroed_canonical_channel_ignores_exactly_that_input(name, layer, input_shape):
    (layout,) = kernel_layouts(layer)
    cin, cout = layout.canonical[2:]
    if cin == 1:
        pytest.skip("a depthwise kernel reads one input channel per filter")
    j = cin - 2
    original = keras.ops.convert_to_numpy(layer.kernel)
    mask4 = np.ones(layout.canonical, "float32")
    mask4[:, :, j, :] = 0.0
    x = RNG.normal(size=input_shape).astype("float32")
    flat = x.reshape(-1, cin)
    layer.kernel.assign(original * layout.from_canonical(mask4))
    try:
        base = _outputs(layer, x, cout)
        for k, delta in ((j, 5.0), (j + 1, 1.0)):
            bumped = flat.copy()
            bumped[:, k] += delta
            change = np.abs(_outputs(layer, bumped.reshape(x.shape), cout) - base)
            if k == j:
                assert change.max() < 1e-5
            else:
                assert change.max() > 1e-3
    finally:
        layer.kernel.assign(original)


def test_layout_validates_its_fields():
    with pytest.raises(ValueError, match="as many weights"):
        KernelLayout("kernel", (3, 4), (1, 1, 4, 4))
    with pytest.raises(ValueError, match="permutation"):
        KernelLayout("kernel", (3, 4), (1, 1, 4, 3), perm=(0, 0))


@pytest.mark.parametrize(
    "structure, applies",
    [
        ("unstructured", (True, True, True)),
        ("filter", (True, True, True)),
        ("channel", (True, True, True)),
        ("column", (True, True, True)),
        ("kernel", (True, True, False)),
        ("pattern", (True, True, False)),
        ("2:4", (True, True, True)),
        ("block:2x2", (True, True, True)),
    ],
)
def test_structures_apply_to_the_new_layouts(structure, applies):
    layers = [
        (keras.layers.Conv3D(4, (1, 3, 3)), (None, 4, 6, 6, 4)),
        (keras.layers.Conv2DTranspose(4, 3), (None, 6, 6, 4)),
        (keras.layers.EinsumDense("abc,cde->abde", (None, 2, 4)), (None, 5, 8)),
    ]
    struct = structures.get(structure)
    for (layer, shape), expected in zip(layers, applies, strict=True):
        layer.build(shape)
        (layout,) = kernel_layouts(layer)
        assert struct.applies_to(layout) is expected
        if expected:
            struct.check(layout)


def _model():
    inputs = keras.Input((4, 6, 6, 2))
    x = keras.layers.Conv3D(4, (2, 3, 3), activation="relu", name="conv3d")(inputs)
    x = keras.layers.Reshape((12, 4, 4))(x)
    x = keras.layers.Conv2DTranspose(6, 3, name="deconv")(x)
    x = keras.layers.Reshape((14, 36))(x)
    x = keras.layers.EinsumDense("abc,dc->abd", (None, 8), name="einsum")(x)
    x = keras.layers.EinsumDense("abc,cde->abde", (None, 2, 4), name="heads")(x)
    x = keras.layers.Reshape((14, 8))(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(4, name="out")(x)
    return keras.Model(inputs, outputs)


# The stored axis of each kernel that a `filter` unit spans (its output axis).
_OUT_AXES = {"conv3d": (4,), "deconv": (2,), "einsum": (0,), "heads": (1, 2)}


@pytest.mark.parametrize("structure", ["filter", "channel", "unstructured", "kernel"])
def test_apply_hard_prune_report_end_to_end(structure):
    keras.utils.set_random_seed(1)
    model = _model()
    x = RNG.normal(size=(2, 4, 6, 6, 2)).astype("float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Naming every layer lets filter pruning prune the output layer too.
        names = [layer.name for layer in model.layers if layer.weights]
        pruned = tfr.apply(
            model, structure=structure, target=0.5, scope="layer", layers=names
        )
    skipped = {
        kernel.split("/")[0]
        for w in caught
        if "does not apply" in str(w.message)
        for kernel in str(w.message).split("left dense: ")[1].rstrip(".").split(", ")
    }
    assert skipped == ({"einsum", "heads", "out"} if structure == "kernel" else set())
    tfr.hard_prune(pruned)
    rows = {row.layer: row for row in tfr.report(pruned).rows}
    for name in ("conv3d", "deconv", "einsum", "heads", "out"):
        row = rows[name]
        if name in skipped:
            assert row.structure == "dense"
            continue
        assert row.structure == structure
        assert abs(1.0 - row.nonzeros / row.weights - 0.5) < 0.1
    if structure == "filter":
        layers = {layer.name: layer for layer in pruned.layers}
        for name, axes in _OUT_AXES.items():
            w = keras.ops.convert_to_numpy(layers[name].layer.kernel)
            rest = tuple(i for i in range(w.ndim) if i not in axes)
            alive = np.any(w != 0, axis=rest)
            # Whole output channels are gone, and only whole ones.
            assert np.array_equal(np.all(w != 0, axis=rest), alive)
            assert 0 < alive.sum() < alive.size
    assert keras.ops.convert_to_numpy(pruned(x)).shape == (2, 4)


def test_admm_state_is_stored_through_the_layout():
    keras.utils.set_random_seed(2)
    pruned = tfr.apply(
        _model(), "filter", 0.5, method=tfr.ADMMPenalty(rho=1e-3), scope="layer"
    )
    tfr.admm.update(pruned, dual=False)
    layers = {layer.name: layer for layer in pruned.layers}
    for name, axes in _OUT_AXES.items():
        (pk,) = layers[name].pruned_kernels
        w = keras.ops.convert_to_numpy(pk.variable)
        z = keras.ops.convert_to_numpy(pk.penalty.z)
        rest = tuple(i for i in range(w.ndim) if i not in axes)
        # Z = project(W): whole stored output channels of W, the others zero.
        kept = np.all(z == w, axis=rest)
        assert np.array_equal(kept, ~np.all(z == 0, axis=rest))
        assert 0 < kept.sum() < kept.size
