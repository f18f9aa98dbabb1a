"""Tests for `tf_reweight.training.data` against the real local dataset copies."""

import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tf_reweight.training import data

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
CIFAR10_TRAIN_MEANS = np.array([125.3, 122.9, 113.9]) / 255.0


@pytest.fixture(scope="module")
def isolated(tmp_path_factory):
    """An empty tensorflow-datasets directory and a fresh cache directory."""
    root = tmp_path_factory.mktemp("data_env")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TFDS_DATA_DIR", str(root / "tfds"))
        mp.setenv("TF_REWEIGHT_CACHE_DIR", str(root / "cache"))
        yield root


@pytest.fixture(scope="module")
def cifar10(isolated, data_dir):
    if not Path(data_dir, "cifar10", "cifar10-jpg.tar.gz").exists():
        pytest.skip(f"No local CIFAR-10 copy under {data_dir}.")
    return data.load("cifar10", data_dir)


def test_mnist_local_copy(isolated, data_dir):
    (x_train, y_train), (x_test, y_test) = data.load("mnist", data_dir)
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y_train), MNIST_TRAIN_COUNTS)
    with np.load(Path(data_dir, "mnist", "mnist.npz")) as raw:
        np.testing.assert_allclose(x_test[..., 0], raw["x_test"] / 255.0, atol=1e-7)


def test_dataset_folder_itself_is_accepted(isolated, data_dir):
    (_, y_train), _ = data.load("mnist", str(Path(data_dir, "mnist")))
    assert y_train.shape == (60000,)


def test_cifar10_local_copy(cifar10):
    (x_train, y_train), (x_test, y_test) = cifar10
    assert x_train.shape == (50000, 32, 32, 3) and x_test.shape == (10000, 32, 32, 3)
    assert x_train.dtype == np.float32 and y_test.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(y_train), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    np.testing.assert_allclose(
        x_train.mean(axis=(0, 1, 2), dtype=np.float64), CIFAR10_TRAIN_MEANS, atol=0.01
    )
    # The archive is sorted by class; `load` mixes the classes.
    assert len(np.unique(y_train[:100])) == 10


def test_cifar10_second_load_uses_cache(cifar10, data_dir, monkeypatch):
    def no_decode(archive):
        raise AssertionError("The archive was decoded again.")

    monkeypatch.setattr(data, "_decode_cifar10", no_decode)
    (x_train, y_train), (x_test, _) = data.load("cifar10", data_dir)
    np.testing.assert_array_equal(y_train, cifar10[0][1])
    np.testing.assert_array_equal(x_test, cifar10[1][0])


def test_prepared_tfds_copy_comes_first(isolated, data_dir, monkeypatch):
    class PreparedBuilder:
        def is_prepared(self):
            return True

        def as_dataset(self, split, as_supervised, batch_size):
            images = tf.fill((2, 28, 28, 1), tf.constant(51, tf.uint8))
            return [(images, tf.constant([3, 4], tf.int64)) for _ in split]

    (isolated / "tfds" / "mnist").mkdir(parents=True)
    monkeypatch.setattr(data, "_tfds_builder", lambda name, tfds_dir: PreparedBuilder())
    (x_train, y_train), _ = data.load("mnist", data_dir)
    np.testing.assert_allclose(x_train, np.full((2, 28, 28, 1), 0.2), atol=1e-7)
    np.testing.assert_array_equal(y_train, [3, 4])


def test_missing_directory_fails_fast(isolated, tmp_path):
    missing = tmp_path / "nowhere"
    start = time.perf_counter()
    with pytest.raises(data.DatasetNotFoundError, match="TF_REWEIGHT_DATA_DIR") as e:
        data.load("cifar10", str(missing))
    assert time.perf_counter() - start < 10.0  # no download; loaded CPUs are slow
    assert isinstance(e.value, FileNotFoundError)
    assert str(missing / "cifar10" / "cifar10-jpg.tar.gz") in str(e.value)
    assert "download=True" in str(e.value)


def test_unknown_name():
    with pytest.raises(ValueError, match="'cifar10', 'mnist'.*name='imagenet'"):
        data.load("imagenet")


def test_dataset_batches(isolated, data_dir):
    ds = data.dataset("mnist", "test", batch_size=32, data_dir=data_dir, limit=70)
    sizes = [int(y.shape[0]) for _, y in ds]
    assert sizes == [32, 32, 6]
    x, y = next(iter(ds))
    assert x.shape == (32, 28, 28, 1) and y.dtype == tf.int64
    with pytest.raises(ValueError, match="split='val'"):
        data.dataset("mnist", "val", batch_size=32, data_dir=data_dir)


def _broken_copies(root, real):
    """Writes damaged mnist.npz copies; yields (data directory, what is wrong)."""
    blob = Path(real).read_bytes()
    with np.load(real) as f:
        arrays = {key: f[key][:10] for key in ("x_train", "y_train", "x_test")}
    damaged = {
        "truncated": lambda path: path.write_bytes(blob[:100_000]),
        "garbage": lambda path: path.write_bytes(b"not an npz" * 100),
        "empty": lambda path: path.write_bytes(b""),
        "missing_array": lambda path: np.savez(path, **arrays),
        "flipped_bytes": lambda path: path.write_bytes(
            blob[:5000] + bytes(255 - b for b in blob[5000:6000]) + blob[6000:]
        ),
    }
    for name, write in damaged.items():
        path = root / name / "mnist" / "mnist.npz"
        path.parent.mkdir(parents=True)
        write(path)
        yield name, path


def test_a_damaged_mnist_copy_is_one_clear_error(isolated, data_dir, tmp_path):
    real = Path(data_dir, "mnist", "mnist.npz")
    for name, path in _broken_copies(tmp_path, real):
        with pytest.raises(ValueError, match="truncated or corrupt") as e:
            data.load("mnist", str(path.parents[1]))
        message = str(e.value)
        assert str(path) in message and "x_train" in message, name
        assert "Replace" in message and "\n" not in message, name


def test_a_damaged_cifar10_archive_is_one_clear_error(isolated, tmp_path):
    path = tmp_path / "cifar10" / "cifar10-jpg.tar.gz"
    path.parent.mkdir()
    path.write_bytes(b"\x1f\x8b" + b"not a gzip stream" * 50)
    with pytest.raises(ValueError, match="truncated or corrupt") as e:
        data.load("cifar10", str(tmp_path))
    assert str(path) in str(e.value)


def test_the_missing_dataset_error_is_one_line(isolated, tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.load("mnist", str(tmp_path))
    assert "\n" not in str(e.value)


def test_image_shape_needs_no_data():
    assert data.image_shape("mnist") == (28, 28, 1)
    assert data.image_shape("cifar10") == (32, 32, 3)
    with pytest.raises(ValueError, match="name='svhn'"):
        data.image_shape("svhn")
