"""Shared test fixtures: quiet TF logs and locate the local dataset copies."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

_DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The local dataset copies (``TF_REWEIGHT_DATA_DIR`` or ``../shared/data``)."""
    path = os.environ.get("TF_REWEIGHT_DATA_DIR") or str(_DEFAULT_DATA)
    if not Path(path, "mnist", "mnist.npz").exists():
        pytest.skip(f"No local MNIST copy under {path}; set TF_REWEIGHT_DATA_DIR.")
    return path
