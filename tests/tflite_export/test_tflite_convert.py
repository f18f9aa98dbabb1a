"""Tests for tflite_export.convert: parity, quantization, kept zeros, input checks."""

import os
from pathlib import Path

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tf_reweight.cli.tflite import main
from tflite_export import evaluate_tflite, export

L = keras.layers


@pytest.fixture(scope="module")
def mnist(data_dir):
    """A small conv net trained for two epochs on 2000 MNIST digits."""
    data = np.load(Path(data_dir, "mnist", "mnist.npz"))
    x = (data["x_train"][:2000, ..., None] / 255.0).astype("float32")
    x_test = (data["x_test"][:500, ..., None] / 255.0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(8, 3, strides=2, activation="relu"),
            L.Conv2D(16, 3, strides=2, activation="relu"),
            L.Flatten(),
            L.Dense(10),
        ]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss)
    model.fit(x, data["y_train"][:2000], epochs=2, batch_size=64, verbose=0)
    return model, x, x_test, data["y_test"][:500]


def _run(path, x):
    interpreter = Interpreter(model_path=str(path))
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_float_export_matches_keras(tmp_path, mnist):
    model, _, x_test, _ = mnist
    path = tmp_path / "float.tflite"
    report = export(model, str(path), sparse=False, verify=False)

    actual, expected = _run(path, x_test[:64]), model.predict(x_test[:64], verbose=0)
    assert np.max(np.abs(actual - expected)) < 1e-4
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))
    assert report.file_bytes == path.stat().st_size
    assert report.verification is None


@pytest.fixture(scope="module")
def int8_files(mnist, tmp_path_factory):
    """The MNIST net exported int8, Dense weights per channel and per tensor."""
    model, x, x_test, _ = mnist
    folder = tmp_path_factory.mktemp("int8")
    return {
        per_channel: export(
            model,
            str(folder / f"int8_{per_channel}.tflite"),
            quantization="int8",
            representative_data=x[:100],
            sample=x_test[:200],
            per_channel_dense=per_channel,
        )
        for per_channel in (True, False)
    }


@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_export_agrees_with_keras(mnist, int8_files, per_channel):
    model, _, x_test, y_test = mnist
    report = int8_files[per_channel]
    # Stated tolerance: >= 95% argmax agreement, accuracy within 2 points.
    assert report.verification.argmax_agreement >= 0.95
    keras_accuracy = np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test)
    assert abs(evaluate_tflite(report.path, x_test, y_test) - keras_accuracy) <= 0.02
    details = Interpreter(model_path=report.path).get_input_details()[0]
    assert details["dtype"] == np.float32


def test_per_tensor_dense_weights_store_one_scale(mnist, int8_files):
    import tensorflow as tf

    from tflite_export.convert import PER_TENSOR_DENSE
    from tflite_export.flatbuffer import read

    # The one private converter attribute the export uses still exists.
    assert hasattr(tf.lite.TFLiteConverter.from_keras_model(mnist[0]), PER_TENSOR_DENSE)
    units, inputs = 10, mnist[0].layers[-1].kernel.shape[0]
    files = {}
    for per_channel, report in int8_files.items():
        assert report.per_channel_dense is per_channel
        dense = [t for t in read(report.path) if t.data and t.shape == (units, inputs)]
        files[per_channel] = (report.file_bytes, dense[0].quant_param_bytes)
    assert files[True][1] == units * 12  # a float32 scale + an int64 zero point each
    assert files[False][1] == 12
    assert files[False][0] < files[True][0]
    assert "Dense weights per tensor" in str(int8_files[False])
    assert "per tensor" not in str(int8_files[True])


def test_int8_weights_keep_the_zeros(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), L.Dense(32), L.Dense(4)])
    kernel = model.layers[0].kernel.numpy()
    kernel[np.random.default_rng(0).random(kernel.shape) < 0.9] = 0.0
    model.layers[0].kernel.assign(kernel)
    x = np.random.default_rng(1).normal(size=(32, 64)).astype("float32")
    path = tmp_path / "int8.tflite"
    export(
        model,
        str(path),
        quantization="int8",
        sparse=False,
        representative_data=[x[i : i + 4] for i in range(0, len(x), 4)],
        verify=False,
    )

    interpreter = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    # TFLite stores a Dense kernel transposed, as (units, inputs).
    (weights,) = [
        interpreter.get_tensor(t["index"])
        for t in interpreter.get_tensor_details()
        if t["dtype"] == np.int8 and tuple(t["shape"]) == (32, 64)
    ]
    assert np.count_nonzero(weights == 0) >= np.count_nonzero(kernel == 0)


def _small_model():
    return keras.Sequential([keras.Input((4,)), L.Dense(2)])


def _int8(representative_data):
    return {"quantization": "int8", "representative_data": representative_data}


def test_int8_without_representative_data_writes_nothing(tmp_path):
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match="representative_data"):
        export(_small_model(), str(path), quantization="int8")
    assert not path.exists()


@pytest.mark.parametrize(
    "model, kwargs, message",
    [
        (keras.Sequential([L.Dense(2)]), {}, "built"),
        (_small_model(), {"quantization": "int4"}, "quantization"),
        (_small_model(), {"per_channel_dense": False}, "needs quantization='int8'"),
        (_small_model(), {"per_channel_dense": "no"}, "per_channel_dense"),
        (_small_model(), {"sample": np.zeros((2, 5))}, "sample"),
        (_small_model(), _int8([np.zeros((2, 5), "float32")]), "shape"),
        (_small_model(), _int8(np.zeros((2, 5), "float32")), "shape"),
        (_small_model(), _int8([]), "at least one batch"),
        (_small_model(), _int8(np.array([["a"] * 4])), "real numbers"),
        (_small_model(), _int8([np.zeros((2, 4)), np.zeros((3, 2))]), "shape"),
    ],
    ids=[
        "unbuilt",
        "unknown-quantization",
        "per-tensor-dense-float",
        "per-tensor-dense-not-bool",
        "bad-sample",
        "calibration-list-shape",
        "calibration-array-shape",
        "calibration-empty",
        "calibration-strings",
        "calibration-second-batch",
    ],
)
def test_bad_input_raises_before_writing(tmp_path, model, kwargs, message):
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=message):
        export(model, str(path), **kwargs)
    assert not path.exists()


def test_calibration_batches_of_a_generator_are_checked(tmp_path):
    model = _small_model()
    batches = (np.zeros((2, n), "float32") for n in (4, 5))
    with pytest.raises(ValueError, match=r"representative_data.*\(2, 5\)"):
        export(model, str(tmp_path / "m.tflite"), **_int8(batches))
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.parametrize(
    "where, message",
    [
        ("{tmp}", "not a directory"),
        ("{tmp}/missing/m.tflite", "existing directory"),
        ("/dev/null/m.tflite", "existing directory"),
    ],
)
def test_a_bad_output_path_is_refused_before_converting(
    tmp_path, monkeypatch, where, message
):
    def forbidden(model):
        raise AssertionError("the output path must be checked before converting")

    monkeypatch.setattr("tf_reweight.strip", forbidden)
    with pytest.raises(ValueError, match=message):
        export(_small_model(), where.format(tmp=tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_folder_is_refused(tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir(mode=0o500)
    with pytest.raises(ValueError, match="not writable"):
        export(_small_model(), str(folder / "m.tflite"))


def test_export_with_shrink_reports_fewer_macs(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 2)), L.Conv2D(6, 3), L.ReLU(), L.Flatten(), L.Dense(3)]
    )
    weights = model.layers[0].get_weights()
    weights[0][..., :3] = 0.0
    model.layers[0].set_weights(weights)

    report = export(model, str(tmp_path / "small.tflite"), shrink=True)

    assert report.shrink.macs_after < report.shrink.macs_before
    assert report.verification.max_abs_diff < 1e-4


def test_cli_convert_int8(tmp_path, mnist):
    model, x, _, _ = mnist
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "calibration.npy", x[:50])
    code = main(
        [
            "convert",
            str(tmp_path / "model.keras"),
            str(tmp_path / "model.tflite"),
            "--quantization",
            "int8",
            "--representative-npy",
            str(tmp_path / "calibration.npy"),
            "--min-agreement",
            "0.9",
        ]
    )
    assert code == 0
    assert (tmp_path / "model.tflite").stat().st_size > 0
    code = main(
        [
            "convert",
            str(tmp_path / "model.keras"),
            str(tmp_path / "per_tensor.tflite"),
            "--quantization",
            "int8",
            "--representative-npy",
            str(tmp_path / "calibration.npy"),
            "--per-tensor-dense",
        ]
    )
    assert code == 0
    sizes = [
        (tmp_path / f).stat().st_size for f in ("model.tflite", "per_tensor.tflite")
    ]
    assert sizes[1] < sizes[0]
