"""Fixtures shared by the TFLite export tests."""

import keras
import numpy as np
import pytest

L = keras.layers


@pytest.fixture(scope="module")
def sparse_convnet():
    """A small conv net with 80% zero kernels, and a sample of 16 inputs."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(8, 3, activation="relu"),
            L.Flatten(),
            L.Dense(16, activation="relu"),
            L.Dense(4),
        ]
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            kernel = layer.kernel.numpy()
            kernel[rng.random(kernel.shape) < 0.8] = 0.0
            layer.kernel.assign(kernel)
    return model, rng.normal(size=(16, 8, 8, 1)).astype("float32")
