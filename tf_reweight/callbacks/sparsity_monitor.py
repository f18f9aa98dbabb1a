"""The `SparsityMonitor` callback: sparsity in the logs and TensorBoard."""

from __future__ import annotations

import os

import keras

from tf_reweight.callbacks.base import ConfigurableCallback
from tf_reweight.core import backend_support
from tf_reweight.pruning.sparsity import report


@keras.saving.register_keras_serializable(package="tf_reweight")
class SparsityMonitor(ConfigurableCallback):
    """Writes per-layer sparsity into ``logs`` and, optionally, TensorBoard.

    Adds ``sparsity`` (over the pruned kernels) and ``sparsity_<layer>`` for
    each pruned layer to the epoch logs, so they land in `History`.

    Args:
        log_dir: A TensorBoard log directory, or None.

    Example:
    >>> history = model.fit(x, y, callbacks=[SparsityMonitor("runs/tb")])
    >>> history.history["sparsity"]
    """

    def __init__(self, log_dir: str | os.PathLike | None = None):
        super().__init__()
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise ValueError(
                "`log_dir` must be a directory path or None. Received: "
                f"log_dir={log_dir!r}"
            )
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        rep = report(self.model)
        values = {"sparsity": rep.sparsity}
        for row in rep.pruned_rows:
            suffix = "" if row.kernel == "kernel" else f"_{row.kernel}"
            values[f"sparsity_{row.layer}{suffix}"] = row.sparsity
        if logs is not None:
            logs.update(values)
        if self.log_dir is not None:
            self._write(epoch, values)

    def _write(self, epoch, values):
        backend_support.require(
            "SparsityMonitor(log_dir=...)", "tf.summary", backend=None
        )
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for name, value in values.items():
                tf.summary.scalar(
                    name.replace("sparsity_", "sparsity/"), value, step=epoch
                )
        self._writer.flush()

    def get_config(self):
        return {"log_dir": self.log_dir}
