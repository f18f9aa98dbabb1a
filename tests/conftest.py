"""Shared test fixtures: quiet TF logs and locate the local dataset copies."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

_DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
