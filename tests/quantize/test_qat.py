"""Tests for `tf_reweight.quantize.qat`: projected or straight-through QAT."""

from pathlib import Path

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.core.constraints import MaskConstraint
from tf_reweight.pruning.operations import hard_prune
from tf_reweight.quantize import qat
from tf_reweight.quantize.quantization import QuantizeConstraint, compression_report
from tf_reweight.training import recipes

L = keras.layers
METHODS = ["projection", "ste"]


def numpy_quantize(w, bits):
    """Per-output-channel (last axis) symmetric quantization, in NumPy."""
    levels = 2 ** (bits - 1) - 1
    scale = np.abs(w).reshape(-1, w.shape[-1]).max(0) / levels
    scale[scale == 0] = 1.0
    return np.clip(np.round(w / scale), -levels, levels) * scale


def distinct_per_channel(kernel) -> int:
    return max(len(np.unique(c)) for c in kernel.reshape(-1, kernel.shape[-1]).T)


def kernels(model) -> dict:
    return {
        v.path.split("/")[-2]: keras.ops.convert_to_numpy(v)
        for v in model.weights
        if v.name == "kernel"
    }


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 8, 8, 2)).astype("float32"), rng.integers(0, 3, 64)


@pytest.fixture
def pruned():
    """A hard-pruned (75%) conv net with unpruned last layer."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            L.Conv2D(6, 3, activation="relu", name="conv"),
            L.Flatten(name="flat"),
            L.Dense(16, activation="relu", name="fc"),
            L.Dense(3, name="out"),
        ]
    )
    wrapped = tfr.apply(model, target=0.75, skip_last=True)
    hard_prune(wrapped)
    return wrapped


def masks(model) -> dict:
    return {
        layer.name: keras.ops.convert_to_numpy(pk.mask)
        for layer in tfr.pruning.wrappers(model)
        for pk in layer.pruned_kernels
    }


def fit(model, data, epochs=2):
    recipes.compile_classifier(model, 1e-2)
    model.fit(*data, batch_size=16, epochs=epochs, verbose=0)
    return model


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bits": 1},
        {"bits": 9},
        {"bits": 4.0},
        {"bits": True},
        {"bits": 4, "method": "admm"},
        {"bits": 4, "axis": "last"},
        {"bits": 4, "axis": 4},
    ],
)
def test_invalid_arguments_raise_before_changes(pruned, kwargs):
    before = [w.copy() for w in pruned.get_weights()]
    with pytest.raises(ValueError):
        qat.quantize_model(pruned, **kwargs)
    for old, new in zip(before, pruned.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert pruned.get_layer("conv").layer.kernel.constraint.then is None


def test_invalid_models_raise(pruned):
    with pytest.raises(ValueError, match="keras.Model"):
        qat.quantize_model("model", 4)
    no_kernels = keras.Sequential([keras.Input((4,)), L.ReLU()])
    with pytest.raises(ValueError, match="no Dense or convolution"):
        qat.quantize_model(no_kernels, 4)
    constrained = keras.Sequential(
        [keras.Input((4,)), L.Dense(2, kernel_constraint="max_norm")]
    )
    with pytest.raises(ValueError, match="already have one"):
        qat.quantize_model(constrained, 4, "projection")
    quantized = qat.quantize_model(pruned, 4, "ste")
    with pytest.raises(ValueError, match="already quantized"):
        qat.quantize_model(quantized, 4)
    with pytest.raises(ValueError, match="no quantized layers"):
        qat.finalize(pruned)
    with pytest.raises(ValueError, match="Dense or convolution"):
        qat.QuantizeWrapper(L.ReLU(), 4)


def test_projection_chains_mask_then_quantize(pruned, data):
    before = kernels(pruned)
    mask = masks(pruned)
    model = qat.quantize_model(pruned, 3, "projection")

    constraint = model.get_layer("fc").layer.kernel.constraint
    assert isinstance(constraint, MaskConstraint)
    assert isinstance(constraint.then, QuantizeConstraint)
    assert constraint.then.bits == 3
    assert isinstance(model.get_layer("out").kernel.constraint, QuantizeConstraint)
    # Projected once, right away; the input model is left alone.
    for name, kernel in kernels(model).items():
        expected = numpy_quantize(before[name] * mask.get(name, 1.0), 3)
        np.testing.assert_allclose(kernel, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(kernels(pruned)["fc"], before["fc"])

    projected = kernels(model)
    fit(model, data)
    for name, kernel in kernels(model).items():
        assert not np.array_equal(kernel, projected[name])
        np.testing.assert_allclose(numpy_quantize(kernel, 3), kernel, atol=1e-6)
        assert distinct_per_channel(kernel) <= 2**3 - 1
        if name in mask:
            assert np.all(kernel[mask[name] == 0] == 0)


def test_ste_forward_is_quantized_and_float_weights_train(pruned, data):
    mask = masks(pruned)
    model = qat.quantize_model(pruned, 2, "ste")
    wrapped = [layer.name for layer in qat.quantized_layers(model)]
    assert wrapped == ["conv", "fc", "out"]
    assert all(
        isinstance(model.get_layer(name), qat.QuantizeWrapper) for name in wrapped
    )

    # Forward pass of the Dense layer: x @ quantize(w * mask) + b, in NumPy.
    fc = model.get_layer("fc")
    x = np.random.default_rng(1).normal(size=(5, 216)).astype("float32")
    dense = fc.layer.layer
    w, b = (keras.ops.convert_to_numpy(v) for v in (dense.kernel, dense.bias))
    expected = np.maximum(x @ numpy_quantize(w * mask["fc"], 2) + b, 0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fc(x)), expected, atol=1e-5)

    fit(model, data)
    trained = kernels(model)
    # Float weights: off the 2-bit grid, pruned ones still exactly zero.
    assert distinct_per_channel(trained["fc"]) > 3
    assert np.all(trained["fc"][mask["fc"] == 0] == 0)
    assert np.all(trained["conv"][mask["conv"] == 0] == 0)

    plain = qat.finalize(model)
    assert not qat.quantized_layers(plain)
    assert all(not isinstance(layer, tfr.PruningWrapper) for layer in plain.layers)
    final = kernels(plain)
    for name, kernel in final.items():
        expected = numpy_quantize(trained[name] * mask.get(name, 1.0), 2)
        np.testing.assert_allclose(kernel, expected, rtol=1e-6, atol=1e-7)
        assert distinct_per_channel(kernel) <= 2**2 - 1
    # The finalized model computes what the fake-quantized model computed.
    np.testing.assert_allclose(
        plain.predict(data[0], verbose=0), model.predict(data[0], verbose=0), atol=1e-5
    )


def test_ste_model_works_with_pruning_tools(pruned):
    model = qat.quantize_model(pruned, 4, "ste")
    assert [w.name for w in tfr.pruning.wrappers(model)] == ["conv", "fc"]
    assert tfr.report(model).sparsity == pytest.approx(tfr.report(pruned).sparsity)


def test_plain_model(data):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 2)), L.Conv2D(4, 3), L.Flatten(), L.Dense(3)]
    )
    for method in METHODS:
        quantized = fit(qat.quantize_model(model, 3, method), data, epochs=1)
        for kernel in kernels(qat.finalize(quantized)).values():
            np.testing.assert_allclose(numpy_quantize(kernel, 3), kernel, atol=1e-6)
            assert distinct_per_channel(kernel) <= 7


@pytest.mark.parametrize("method", METHODS)
def test_save_load_round_trip(tmp_path, pruned, data, method):
    model = fit(qat.quantize_model(pruned, 4, method), data, epochs=1)
    path = tmp_path / "quantized.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)

    np.testing.assert_allclose(
        loaded.predict(data[0], verbose=0), model.predict(data[0], verbose=0), atol=1e-6
    )
    assert masks(loaded).keys() == masks(model).keys()
    for name, mask in masks(model).items():
        np.testing.assert_array_equal(masks(loaded)[name], mask)
    if method == "ste":
        layer = loaded.get_layer("fc")
        assert isinstance(layer, qat.QuantizeWrapper)
        assert (layer.bits, layer.axis) == (4, -1)
    else:
        constraint = loaded.get_layer("fc").layer.kernel.constraint
        assert constraint.then.get_config() == {"bits": 4, "axis": -1}
    # Training the loaded model keeps the zeros and the quantization.
    fit(loaded, data, epochs=1)
    final = kernels(qat.finalize(loaded))
    for name, mask in masks(model).items():
        assert np.all(final[name][mask == 0] == 0)
        assert distinct_per_channel(final[name]) <= 15


@pytest.fixture(scope="module")
def mnist(data_dir):
    """A small conv net trained for 3 epochs on 4000 MNIST digits."""
    data = np.load(Path(data_dir, "mnist", "mnist.npz"))
    x = (data["x_train"][:4000, ..., None] / 255.0).astype("float32")
    x_test = (data["x_test"][:1000, ..., None] / 255.0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(8, 3, strides=2, activation="relu"),
            L.Conv2D(16, 3, strides=2, activation="relu"),
            L.Flatten(),
            L.Dense(32, activation="relu"),
            L.Dense(10),
        ]
    )
    recipes.compile_classifier(model)
    model.fit(x, data["y_train"][:4000], epochs=3, batch_size=64, verbose=0)
    return model, (x, data["y_train"][:4000]), (x_test, data["y_test"][:1000])


def accuracy(model, test) -> float:
    return float(np.mean(model.predict(test[0], verbose=0).argmax(1) == test[1]))


@pytest.mark.parametrize("method", METHODS)
def test_mnist_90_percent_pruned_4_bits(mnist, method):
    dense, train, test = mnist
    result = qat.quantized_prune(
        dense,
        train,
        bits=4,
        method=method,
        target=0.9,
        reweight_epochs=1,
        retrain_epochs=2,
        finetune_epochs=1,
        batch_size=64,
        verbose=0,
    )
    pruned_accuracy = accuracy(tfr.strip(result.prune.model), test)
    final_accuracy = accuracy(result.model, test)
    # Measured: dense 0.880, pruned 0.872, 4-bit 0.865 (projection), 0.873 (STE).
    assert pruned_accuracy > 0.8
    assert final_accuracy >= pruned_accuracy - 0.02

    final = kernels(result.model)
    rows = tfr.report(result.prune.model).rows
    assert sum(r.nonzeros for r in rows) <= 0.1 * sum(r.weights for r in rows) + 1
    for kernel in final.values():
        assert distinct_per_channel(kernel) <= 2**4 - 1  # zero included
        np.testing.assert_allclose(numpy_quantize(kernel, 4), kernel, atol=1e-6)
    report = compression_report(result.model, bits=4)
    assert result.report["compression"] == report["compression"]
    assert result.report["nonzeros"] == sum(np.count_nonzero(k) for k in final.values())
    assert result.report["compression"] > 10
    assert "4-bit" in result.summary() and f"{report['compression']:.1f}x" in (
        result.summary()
    )


@pytest.mark.parametrize("method", METHODS)
def test_strip_is_finalize(pruned, data, method):
    """`tfr.strip` of a quantized pruned model: plain layers, pruned kernels on grid."""
    mask = masks(pruned)
    model = fit(qat.quantize_model(pruned, 3, method), data, epochs=1)
    plain = tfr.strip(model)
    assert all(
        not isinstance(layer, (tfr.PruningWrapper, qat.QuantizeWrapper))
        for layer in plain.layers
    )
    final = kernels(plain)
    for name, kernel in kernels(qat.finalize(model)).items():
        np.testing.assert_array_equal(final[name], kernel)
    for name, kernel in final.items():
        assert distinct_per_channel(kernel) <= 2**3 - 1
        if name in mask:
            assert np.all(kernel[mask[name] == 0] == 0)
    np.testing.assert_allclose(
        plain.predict(data[0], verbose=0), model.predict(data[0], verbose=0), atol=1e-5
    )


def test_quantized_layers_opens_nested_models(pruned):
    quantized = qat.quantize_model(pruned, 4, "ste")
    inputs = keras.Input((8, 8, 2))
    outer = keras.Model(inputs, quantized(inputs))
    assert [layer.name for layer in qat.quantized_layers(outer)] == [
        "conv",
        "fc",
        "out",
    ]
    assert qat.quantized_layers(keras.layers.Dense(2)) == []
