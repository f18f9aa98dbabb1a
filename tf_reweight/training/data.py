"""MNIST and CIFAR-10 as NumPy arrays, offline first.

`load` looks for a dataset in this order and never touches the network unless it
is asked to with ``download=True``:

1. a tensorflow-datasets copy that is already prepared under ``TFDS_DATA_DIR``
   (default ``~/tensorflow_datasets``);
2. the local copies in the directory given by `data_dir` or the
   ``TF_REWEIGHT_DATA_DIR`` environment variable (``mnist/mnist.npz`` in the
   `keras.datasets` layout, ``cifar10/cifar10-jpg.tar.gz`` as a JPEG image-folder
   tree);
3. a tensorflow-datasets download, only with ``download=True``.

If none of them applies, `DatasetNotFoundError` is raised at once.
"""

from __future__ import annotations

from tf_reweight.core.backend_support import require

require(__name__, "tf.data and tensorflow-datasets", backend=None)

import hashlib
import os
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import tensorflow as tf

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# Local file and per-example image shape of each supported dataset.
_LOCAL_FILES = {"mnist": "mnist.npz", "cifar10": "cifar10-jpg.tar.gz"}
_IMAGE_SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
_SPLITS = ("train", "test")
# Bump when the layout of the decoded CIFAR-10 cache changes.
_CACHE_VERSION = 1
_REPLACE = "Replace {path} with a complete copy of the file."
# What NumPy raises on a truncated, corrupt or incomplete .npz file.
_UNREADABLE = (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error)

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class DatasetNotFoundError(FileNotFoundError):
    """No copy of the requested dataset was found and downloading was not allowed."""


def image_shape(name: str) -> tuple[int, int, int]:
    """The shape of one image of a supported dataset, without loading it.

    Args:
        name: `"mnist"` or `"cifar10"`.

    Returns:
        ``(28, 28, 1)`` for MNIST, ``(32, 32, 3)`` for CIFAR-10.

    Raises:
        ValueError: If `name` is not a supported dataset.

    Example:

    >>> image_shape("cifar10")
    (32, 32, 3)
    """
    if name not in _LOCAL_FILES:
        raise ValueError(
            f"Unknown dataset name. Expected one of {sorted(_LOCAL_FILES)}. "
            f"Received: name={name!r}"
        )
    return _IMAGE_SHAPES[name]


def load(name: str, data_dir: str | None = None, *, download: bool = False) -> Arrays:
    """Loads MNIST or CIFAR-10 as float32 images in [0, 1] and int64 labels.

    Sources are tried in this order: a prepared tensorflow-datasets copy under
    ``TFDS_DATA_DIR`` (default ``~/tensorflow_datasets``); the local copies in the
    directory given by `data_dir` or the ``TF_REWEIGHT_DATA_DIR`` environment
    variable; a tensorflow-datasets download if ``download=True``. The local
    directory may be the one that holds the ``mnist/`` and ``cifar10/`` folders or
    the dataset folder itself.

    MNIST is read from ``mnist.npz`` (the `keras.datasets.mnist` layout). CIFAR-10
    is read from ``cifar10-jpg.tar.gz``, a JPEG tree ``train/<class>/*.jpg`` and
    ``test/<class>/*.jpg``. Its first load decodes the 60,000 JPEGs (5 to 10 s on
    two CPU cores) and caches them as an uncompressed ``.npz`` (about 185 MB) under
    ``TF_REWEIGHT_CACHE_DIR`` (default ``~/.cache/tf_reweight``), keyed by the
    archive's SHA-256, so later loads take under a second. The archive does not
    keep the original CIFAR-10 order, so its examples are put in a fixed random
    order (seed 0) with the classes mixed: slices such as ``x_train[:1000]`` or
    a Keras ``validation_split`` then see every class. A tensorflow-datasets copy
    keeps the example order of tensorflow-datasets.

    Args:
        name: `"mnist"` or `"cifar10"`.
        data_dir: Directory of the local copies. Defaults to the
            ``TF_REWEIGHT_DATA_DIR`` environment variable.
        download: Whether to download the dataset with tensorflow-datasets when
            no copy is found. Needs network access.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``. Images are float32 in [0, 1],
        shaped ``(N, 28, 28, 1)`` for MNIST and ``(N, 32, 32, 3)`` for CIFAR-10;
        labels are int64 of shape ``(N,)``.

    Raises:
        ValueError: If `name` is not a supported dataset, or its local copy is
            truncated or corrupt.
        DatasetNotFoundError: If no copy was found and `download` is False.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = load("mnist")  # doctest: +SKIP
    >>> x_train.shape, y_train.dtype  # doctest: +SKIP
    ((60000, 28, 28, 1), dtype('int64'))
    """
    shape = image_shape(name)
    tfds_dir = Path(
        os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    ).expanduser()
    # Looking for the folder first keeps tensorflow-datasets from being imported
    # (and warning about a missing copy) in the common case.
    if (tfds_dir / name).is_dir():
        builder = _tfds_builder(name, tfds_dir)
        if builder.is_prepared():
            return _from_tfds(builder, shape)
    looked = [f"{tfds_dir / name} (prepared tensorflow-datasets copy)"]

    root = data_dir or os.environ.get("TF_REWEIGHT_DATA_DIR")
    if root:
        for folder in (Path(root) / name, Path(root)):
            path = folder / _LOCAL_FILES[name]
            if path.is_file():
                if name == "cifar10":
                    train, test = _read_cifar10(path)
                else:
                    train, test = _read_npz(path, _REPLACE.format(path=path))
                return _normalize(*train, shape), _normalize(*test, shape)
            looked.append(str(path))
    else:
        looked.append(
            "no local directory: `data_dir` not passed and TF_REWEIGHT_DATA_DIR not set"
        )

    if download:
        builder = _tfds_builder(name, tfds_dir)
        builder.download_and_prepare()
        return _from_tfds(builder, shape)

    raise DatasetNotFoundError(
        f"Could not find the dataset {name!r}. Looked in: {'; '.join(looked)}. "
        "To fix this, set the TF_REWEIGHT_DATA_DIR environment variable or pass "
        f"`data_dir=` to the directory that holds `{name}/{_LOCAL_FILES[name]}` "
        f"(or to the `{name}/` folder itself), or pass `download=True` to "
        "download it with tensorflow-datasets (needs network access)."
    )


def dataset(
    name: str,
    split: str,
    batch_size: int,
    data_dir: str | None = None,
    *,
    shuffle: bool = True,
    seed: int = 0,
    limit: int | None = None,
) -> tf.data.Dataset:
    """Batched `(image, label)` pairs of one split, as loaded by `load`.

    Args:
        name: `"mnist"` or `"cifar10"`.
        split: `"train"` or `"test"`.
        batch_size: Examples per batch; the last batch may be smaller.
        data_dir: Directory of the local copies, as in `load`.
        shuffle: Whether to reshuffle the examples every epoch.
        seed: Seed of the shuffle.
        limit: Keep only the first `limit` examples of the split (all classes
            are mixed in `load`'s order). `None` keeps all of them.

    Returns:
        A `tf.data.Dataset` of float32 image batches and int64 label batches.

    Raises:
        ValueError: If `split` is unknown or `limit` is not positive.

    Example:

    >>> ds = dataset("mnist", "test", batch_size=128, shuffle=False)  # doctest: +SKIP
    >>> model.evaluate(ds)  # doctest: +SKIP
    """
    if split not in _SPLITS:
        raise ValueError(
            f"Unknown split. Expected one of {list(_SPLITS)}. Received: split={split!r}"
        )
    if limit is not None and limit < 1:
        raise ValueError(
            f"`limit` must be a positive integer or None. Received: limit={limit}"
        )
    x, y = load(name, data_dir)[_SPLITS.index(split)]
    ds = tf.data.Dataset.from_tensor_slices((x[:limit], y[:limit]))
    if shuffle:
        ds = ds.shuffle(len(ds), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _tfds_builder(name: str, tfds_dir: Path):
    import tensorflow_datasets as tfds

    return tfds.builder(name, data_dir=str(tfds_dir))


def _from_tfds(builder, shape: tuple[int, ...]) -> Arrays:
    import tensorflow_datasets as tfds

    splits = builder.as_dataset(split=list(_SPLITS), as_supervised=True, batch_size=-1)
    train, test = (tfds.as_numpy(split) for split in splits)
    return _normalize(*train, shape), _normalize(*test, shape)


def _normalize(
    images: np.ndarray, labels: np.ndarray, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    x = images.astype(np.float32).reshape((-1, *shape))
    x /= 255.0
    return x, np.asarray(labels, dtype=np.int64).reshape(-1)


def _read_npz(path: Path, remedy: str) -> Arrays:
    """Reads uint8 arrays in the `keras.datasets` layout.

    Args:
        path: The ``.npz`` file.
        remedy: What to do when the file is unreadable (the error's last part).

    Raises:
        ValueError: If the file is truncated, corrupt or lacks an array.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
    except _UNREADABLE as e:
        raise ValueError(
            f"The dataset file {path} is truncated or corrupt ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'unreadable'}). Expected an "
            "`.npz` archive with the arrays x_train, y_train, x_test and y_test. "
            f"{remedy}"
        ) from e


def _read_cifar10(archive: Path) -> Arrays:
    """Reads the decoded archive from the cache, decoding and caching it if needed."""
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    cache_dir = Path(
        os.environ.get("TF_REWEIGHT_CACHE_DIR", "~/.cache/tf_reweight")
    ).expanduser()
    cache = cache_dir / f"cifar10-v{_CACHE_VERSION}-{digest}.npz"
    if cache.is_file():
        return _read_npz(cache, f"Delete it; the next load decodes {archive} again.")
    try:
        arrays = _decode_cifar10(archive)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise ValueError(
            f"The dataset file {archive} is truncated or corrupt ({type(e).__name__}: "
            f"{e}). Expected a gzipped tar of JPEG files. "
            + _REPLACE.format(path=archive)
        ) from e
    _write_npz(cache, arrays)
    return arrays


def _decode_cifar10(archive: Path) -> Arrays:
    """Decodes the JPEG tree ``<split>/<class>/<file>.jpg`` into uint8 arrays."""
    members = {split: [] for split in _SPLITS}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".jpg"):
                continue
            # Padding keeps a too-short path from unpacking into the wrong names.
            split, label, file_name = ("", "", *PurePosixPath(member.name).parts)[-3:]
            if split not in members or label not in CIFAR10_CLASSES:
                raise ValueError(
                    "The CIFAR-10 archive must hold JPEG files under "
                    f"`<split>/<class>/`, with split in {list(_SPLITS)} and class in "
                    f"{list(CIFAR10_CLASSES)}. Received: member={member.name!r} "
                    f"in archive={str(archive)!r}"
                )
            data = tar.extractfile(member).read()
            members[split].append(
                (label, file_name, CIFAR10_CLASSES.index(label), data)
            )

    arrays = []
    for split in _SPLITS:
        # Sort first so that the seeded permutation gives the same order on every
        # machine, whatever the order of the archive members.
        entries = sorted(members[split])
        order = np.random.default_rng(0).permutation(len(entries))
        blobs = [entries[i][3] for i in order]
        labels = np.array([entries[i][2] for i in order], dtype=np.uint8)
        images = (
            tf.data.Dataset.from_tensor_slices(tf.constant(blobs, dtype=tf.string))
            .map(
                lambda b: tf.io.decode_jpeg(b, channels=3),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            .batch(4096)
        )
        arrays.append((np.concatenate(list(images.as_numpy_iterator())), labels))
    return tuple(arrays)


def _write_npz(path: Path, arrays: Arrays) -> None:
    """Writes `arrays` atomically; a cache that cannot be written only warns."""
    (x_train, y_train), (x_test, y_test) = arrays
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, suffix=".npz.tmp", delete=False
        ) as f:
            tmp = f.name
            np.savez(f, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        warnings.warn(
            f"Could not write the dataset cache {path} ({e}); the archive will be "
            "decoded again on the next load.",
            stacklevel=3,
        )
