"""Shared test fixtures: the Keras backend, quiet TF logs, local dataset copies.

The tests run on the Keras backend named by ``KERAS_BACKEND`` (TensorFlow by
default). On JAX and PyTorch the modules of `TENSORFLOW_ONLY` are not
collected: they test the TensorFlow-only parts (attacks, adversarial
training, robustness, MRPF, the data pipeline, the CLIs, the TFLite export
and the benchmarks built on them) or use TensorFlow APIs themselves.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

TENSORFLOW_ONLY = (
    # Whole packages: robustness (cleverhans), the CLIs and the TFLite export.
    "tests/robust",
    "tests/cli",
    "tests/tflite_export",
    "test_batchnorm.py",
    "test_benchmarks_*.py",
    "test_data.py",
    "test_distribute.py",
    "test_recipes.py",
    # Single tests that use TensorFlow APIs (tf.GradientTape, tf.function):
    "test_quantization.py::test_fake_quantize_value_and_identity_gradient",
    "test_schedules.py::test_schedules_trace_in_tf_function",
)

_MODULES = [entry for entry in TENSORFLOW_ONLY if "::" not in entry]
_TESTS = {entry for entry in TENSORFLOW_ONLY if "::" in entry}
_DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_ignore_collect(collection_path: Path, config):
    """Leaves the TensorFlow-only test modules out on the other backends."""
    if keras.backend.backend() == "tensorflow":
        return None
    if any(collection_path.match(pattern) for pattern in _MODULES):
        return True
    return None


def pytest_collection_modifyitems(config, items):
    """Skips the TensorFlow-only single tests on the other backends."""
    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason="uses TensorFlow APIs")
    for item in items:
        if f"{item.path.name}::{item.originalname}" in _TESTS:
            item.add_marker(skip)


def pytest_report_header(config):
    backend = keras.backend.backend()
    skipped = "" if backend == "tensorflow" else "; TensorFlow-only modules skipped"
    return f"Keras backend: {backend}{skipped}"


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The local dataset copies (``TF_REWEIGHT_DATA_DIR`` or ``../shared/data``)."""
    path = os.environ.get("TF_REWEIGHT_DATA_DIR") or str(_DEFAULT_DATA)
    if not Path(path, "mnist", "mnist.npz").exists():
        pytest.skip(f"No local MNIST copy under {path}; set TF_REWEIGHT_DATA_DIR.")
    return path


@pytest.fixture(scope="session")
def mnist(data_dir):
    """A flat MNIST slice: 2,000 training and 500 test images in [0, 1]."""
    with np.load(Path(data_dir, "mnist", "mnist.npz")) as d:
        x = d["x_train"][:2000].reshape(-1, 784).astype("float32") / 255.0
        xt = d["x_test"][:500].reshape(-1, 784).astype("float32") / 255.0
        return (
            x,
            d["y_train"][:2000].astype("int64"),
            xt,
            d["y_test"][:500].astype("int64"),
        )


@pytest.fixture(scope="session")
def mlp(mnist):
    """A 784-32-10 MLP trained for two epochs on the MNIST slice (logits)."""
    x, y, _, _ = mnist
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(32, "relu"), keras.layers.Dense(10)]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    return model
