"""Choose how a `.tflite` file stores its zero weights: sparse or dense.

LiteRT's sparse tensor encoding (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`)
makes a pruned file smaller, but the default delegate (XNNPACK) cannot run
every sparse format: a sparse `FULLY_CONNECTED` with int8 weights, for
example, falls back to the builtin kernels, which may be slower than XNNPACK
on the dense file. `choose_encoding` decides from what `verify.measure_pair`
measured on both files, timed in interleaved rounds;
`tflite_export.export(..., sparse="auto")` writes the encoding it chooses.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tf_reweight.core.checks import check_number
from tflite_export.verify import measure, measure_pair

XNNPACK = "xnnpack"


@dataclasses.dataclass
class EncodingChoice:
    """Which weight encoding `export` wrote, and why.

    Attributes:
        encoding: `"sparse"` or `"dense"`.
        reason: Why, in words.
        sparse_delegate: The delegate that ran the sparse file (`"xnnpack"`
            or `"builtin"`), None if it was not measured.
        sparse_latency_ms: Its median single-sample latency.
        dense_delegate: The delegate that ran the dense file.
        dense_latency_ms: Its median single-sample latency.
        sparse_bytes: The size of the sparse file, if both were converted.
        dense_bytes: The size of the dense file, if both were converted.
    """

    encoding: str
    reason: str
    sparse_delegate: str | None = None
    sparse_latency_ms: float | None = None
    dense_delegate: str | None = None
    dense_latency_ms: float | None = None
    sparse_bytes: int | None = None
    dense_bytes: int | None = None

    def to_dict(self) -> dict:
        """Returns the fields as a JSON-friendly dict."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        text = f"encoding: {self.encoding} ({self.reason})"
        if self.sparse_latency_ms is None or self.dense_latency_ms is None:
            return text
        sizes = ("", "")
        if self.sparse_bytes is not None and self.dense_bytes is not None:
            sizes = (f", {self.sparse_bytes} bytes", f", {self.dense_bytes} bytes")
        return (
            f"{text}; sparse {self.sparse_latency_ms:.4g} ms on "
            f"{self.sparse_delegate}{sizes[0]}, dense {self.dense_latency_ms:.4g} "
            f"ms on {self.dense_delegate}{sizes[1]}"
        )


def choose_encoding(
    sparse_delegate: str,
    sparse_latency_ms: float,
    dense_delegate: str,
    dense_latency_ms: float,
    tolerance: float = 0.05,
) -> EncodingChoice:
    """Chooses the sparse or the dense file from their delegates and latencies.

    The dense file is chosen when the sparse one falls off XNNPACK while the
    dense one runs on it, or when the sparse one is slower by more than
    ``tolerance`` (a fraction of the dense latency, which absorbs timing
    noise); otherwise the sparse file, which is never larger.

    Args:
        sparse_delegate: Delegate of the sparse file (`"xnnpack"`, `"builtin"`).
        sparse_latency_ms: Median latency of the sparse file.
        dense_delegate: Delegate of the dense file.
        dense_latency_ms: Median latency of the dense file.
        tolerance: How much slower the sparse file may be and still be chosen.

    Returns:
        An `EncodingChoice` holding the four measurements.

    Raises:
        ValueError: For a negative latency or tolerance.

    Example:
    >>> choose_encoding("builtin", 2.0, "xnnpack", 1.0).encoding
    'dense'
    """
    for name, value in (
        ("sparse_latency_ms", sparse_latency_ms),
        ("dense_latency_ms", dense_latency_ms),
        ("tolerance", tolerance),
    ):
        check_number(name, value, low=0.0)
    measured = {
        "sparse_delegate": sparse_delegate,
        "sparse_latency_ms": float(sparse_latency_ms),
        "dense_delegate": dense_delegate,
        "dense_latency_ms": float(dense_latency_ms),
    }
    if sparse_delegate != XNNPACK and dense_delegate == XNNPACK:
        reason = (
            f"the sparse file falls back from XNNPACK to the {sparse_delegate} "
            "kernels; the dense file runs on XNNPACK"
        )
        return EncodingChoice("dense", reason, **measured)
    if sparse_latency_ms > dense_latency_ms * (1.0 + tolerance):
        reason = "the sparse file is slower than the dense file"
        return EncodingChoice("dense", reason, **measured)
    return EncodingChoice(
        "sparse", "the sparse file is smaller and not slower", **measured
    )


def write_encoding(
    convert: Callable[[bool], bytes],
    path: str,
    sparse: bool | str,
    sample: np.ndarray,
    folder: str,
    measured: bool = True,
) -> tuple[EncodingChoice, str | None]:
    """Writes the requested (or, for `"auto"`, the faster) encoding to ``path``.

    For `"auto"` both encodings are converted and timed in interleaved rounds
    (`verify.measure_pair`, so a busy machine slows both alike) and
    `choose_encoding` decides; when both give the same bytes (no tensor
    sparse enough) the file is called dense. For True the sparse file is
    written and, when it falls off XNNPACK, the dense one is timed too and a
    warning names the dense file if `choose_encoding` prefers it.

    Args:
        convert: Converts the model; its argument says whether to use the
            sparse encoding.
        path: Where to write the chosen file.
        sparse: True, False or `"auto"`.
        sample: Float inputs to time on (the first row).
        folder: A temporary folder for the dense file.
        measured: Whether to time a `sparse=True` file (`"auto"` always is).

    Returns:
        The `EncodingChoice` and the path of a dense file to compare the
        written file with (None when the written file is the dense one).

    Example:
    >>> choice, dense_path = write_encoding(convert, "m.tflite", "auto", x, tmp)
    """
    if sparse is False:
        Path(path).write_bytes(convert(False))
        return EncodingChoice("dense", "requested: sparse=False"), None
    flatbuffer = convert(True)
    Path(path).write_bytes(flatbuffer)
    requested = EncodingChoice("sparse", "requested: sparse=True")
    if sparse is True and not measured:
        return requested, None
    if sparse is True:
        sparse_delegate, sparse_ms = measure(path, sample)
        if sparse_delegate == XNNPACK:
            return dataclasses.replace(
                requested, sparse_delegate=sparse_delegate, sparse_latency_ms=sparse_ms
            ), None
    dense_path = os.path.join(folder, "dense.tflite")
    dense = convert(False)
    Path(dense_path).write_bytes(dense)
    if dense == flatbuffer:
        reason = "no weight tensor is sparse enough: both encodings give this file"
        return EncodingChoice("dense", reason), None
    # Both files timed in interleaved rounds, so a busy machine slows both alike.
    sparse_timing, dense_timing = measure_pair(path, dense_path, sample)
    choice = dataclasses.replace(
        choose_encoding(*sparse_timing, *dense_timing),
        sparse_bytes=len(flatbuffer),
        dense_bytes=len(dense),
    )
    if sparse is True:
        if choice.encoding == "dense":
            warnings.warn(
                f"{path}: {choice.reason} ({choice.sparse_latency_ms:.4g} ms "
                f"against {choice.dense_latency_ms:.4g} ms here); sparse='auto' "
                "or sparse=False writes the dense file instead.",
                stacklevel=3,
            )
        choice = dataclasses.replace(choice, encoding="sparse", reason=requested.reason)
        return choice, dense_path
    if choice.encoding == "dense":
        Path(path).write_bytes(dense)
        return choice, None
    return choice, dense_path
