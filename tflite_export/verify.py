"""Check a `.tflite` file against its Keras model: parity, zeros, size, latency.

The LiteRT interpreter is first loaded with its default delegate (XNNPACK on
CPU). XNNPACK cannot prepare some sparse models with quantized weights (for
example a sparse `FULLY_CONNECTED` with int8 weights, as produced by the
`"dynamic"` and `"int8"` modes with `sparse=True`). The delegate is applied at
the first invoke, so a probe invoke on zeros is run right after loading; when
it fails, the failure message is recorded and the model is loaded again with
the builtin kernels only, which run every sparse format. LiteRT's own INFO
lines (the delegate it created) are held back (see
`tf_reweight.core.backend_support.quiet_native_logs`).
"""

from __future__ import annotations

from tf_reweight.core.backend_support import require

require(__name__, "the LiteRT interpreter", backend=None, package="ai_edge_litert")

import dataclasses
import statistics
import time
from pathlib import Path

import keras
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tf_reweight.core import checks
from tf_reweight.core.backend_support import quiet_native_logs
from tflite_export.flatbuffer import count_zero_weights, gzip_bytes
from tflite_export.inputs import validate_batch, validate_model


@dataclasses.dataclass
class VerifyReport:
    """What `verify` measured for one `.tflite` file.

    Attributes:
        path: The verified `.tflite` file.
        file_bytes: Its size in bytes.
        gzip_bytes: Its size compressed with gzip (as apps ship it).
        delegate: `"xnnpack"` when the default delegate ran the model,
            `"builtin"` when the builtin kernels had to be used instead.
        delegate_fallback: Whether the default delegate failed and the
            builtin kernels were used.
        delegate_error: The default delegate's failure message, if any.
        num_samples: Number of samples compared with the reference.
        max_abs_diff: Largest absolute difference between the `.tflite`
            outputs and the reference model's outputs.
        argmax_agreement: Fraction of samples whose output argmax agrees.
        weight_count: Elements of the constant weight tensors (rank >= 2) in
            the flatbuffer, counted at their dense shape.
        zero_weights: How many of those elements are exactly zero.
        sparse_tensors: How many of those tensors use the sparse encoding.
        latency_ms: Median latency of one single-sample invoke (one batch
            for a model with a fixed batch size).
        dense_reference_bytes: Size of the dense reference file, if given.
        dense_reference_latency_ms: Its median single-sample latency.
        dense_reference_delegate: The delegate that ran the dense reference.
    """

    path: str
    file_bytes: int
    gzip_bytes: int
    delegate: str
    delegate_fallback: bool
    delegate_error: str | None
    num_samples: int
    max_abs_diff: float
    argmax_agreement: float
    weight_count: int
    zero_weights: int
    sparse_tensors: int
    latency_ms: float
    dense_reference_bytes: int | None = None
    dense_reference_latency_ms: float | None = None
    dense_reference_delegate: str | None = None

    @property
    def zero_fraction(self) -> float:
        """Fraction of the weight elements that are zero."""
        return self.zero_weights / self.weight_count if self.weight_count else 0.0

    @property
    def size_ratio(self) -> float | None:
        """File size divided by the dense reference's size."""
        if self.dense_reference_bytes is None:
            return None
        return self.file_bytes / self.dense_reference_bytes

    @property
    def speedup(self) -> float | None:
        """Dense reference latency divided by this file's latency."""
        if self.dense_reference_latency_ms is None:
            return None
        return self.dense_reference_latency_ms / self.latency_ms

    def to_dict(self) -> dict:
        """Returns the fields and derived ratios as a JSON-friendly dict."""
        return {
            **dataclasses.asdict(self),
            "zero_fraction": self.zero_fraction,
            "size_ratio": self.size_ratio,
            "speedup": self.speedup,
        }

    def __str__(self) -> str:
        rows = [
            (key, _format_value(value))
            for key, value in self.to_dict().items()
            if value is not None
        ]
        width = max(len(key) for key, _ in rows)
        return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class _Runner:
    """A LiteRT interpreter for one single-input, single-output model file."""

    def __init__(self, path: str):
        self.delegate_error = None
        self.delegate = "xnnpack"
        with quiet_native_logs():
            try:
                self._load(path, OpResolverType.AUTO)
            except RuntimeError as error:
                # The default delegate is applied lazily and fails on first
                # invoke; its log lines are held back, its message recorded.
                self.delegate_error = str(error)
                self.delegate = "builtin"
        if self.delegate_error is not None:
            self._load(path, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)

    def _load(self, path: str, resolver: OpResolverType) -> None:
        self.interpreter = Interpreter(
            model_path=path, experimental_op_resolver_type=resolver
        )
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                "Expected a `.tflite` model with one input and one output. "
                f"Received: {len(inputs)} inputs and {len(outputs)} outputs "
                f"in {path}"
            )
        self.input, self.output = inputs[0], outputs[0]
        self.dynamic_batch = self.input["shape_signature"][0] == -1
        self.batch_size = int(self.input["shape"][0])
        self.interpreter.allocate_tensors()
        self._invoke(np.zeros(self.input["shape"], np.float32))

    def _resize(self, batch_size: int) -> None:
        if self.dynamic_batch and batch_size != self.batch_size:
            shape = [batch_size, *self.input["shape"][1:]]
            self.interpreter.resize_tensor_input(self.input["index"], shape)
            self.interpreter.allocate_tensors()
            self.batch_size = batch_size

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], _quantize(batch, self.input))
        self.interpreter.invoke()
        return _dequantize(
            self.interpreter.get_tensor(self.output["index"]), self.output
        )

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Runs `x` in batches; a model with a fixed batch gets padded batches."""
        step = min(batch_size, len(x)) if self.dynamic_batch else self.batch_size
        results = []
        for start in range(0, len(x), step):
            batch = x[start : start + step]
            self._resize(len(batch))
            padding = self.batch_size - len(batch)
            padded = np.concatenate(
                [batch, np.zeros_like(batch[:1]).repeat(padding, 0)]
            )
            results.append(self._invoke(padded)[: len(batch)])
        return np.concatenate(results)

    def prepare(self, sample: np.ndarray) -> None:
        """Sets one sample as the input and runs it once (a warm-up)."""
        self._resize(1)
        self._invoke(np.repeat(sample[:1], self.batch_size, axis=0))

    def times(self, runs: int) -> list[float]:
        """Wall times in seconds of `runs` invokes of the prepared input."""
        found = []
        for _ in range(runs):
            start = time.perf_counter()
            self.interpreter.invoke()
            found.append(time.perf_counter() - start)
        return found

    def latency_ms(self, sample: np.ndarray, runs: int) -> float:
        """Median wall time of `runs` invokes on one sample (after a warm-up)."""
        self.prepare(sample)
        return 1000.0 * statistics.median(self.times(runs))


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if not np.issubdtype(detail["dtype"], np.integer):
        return y.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return (y.astype(np.float32) - zero_point) * scale


def _check_outputs(outputs: np.ndarray, source: str) -> None:
    """Refuses outputs with NaN or inf, which no parity measure can compare."""
    bad = ~np.all(np.isfinite(outputs), axis=1)
    if bad.any():
        raise ValueError(
            f"Verification failed: {source} gives NaN or inf outputs, so the "
            "file cannot be checked against its model. Expected finite outputs "
            "on the sample (check the model's weights for NaN or inf). "
            f"Received: {int(bad.sum())} of {len(outputs)} samples with "
            "non-finite outputs"
        )


def _check_file(path, name: str) -> str:
    if not Path(path).is_file():
        raise ValueError(f"Expected `{name}` to be an existing file. Received: {path}")
    return str(path)


def verify(
    tflite_path: str,
    reference: keras.Model,
    sample: np.ndarray,
    runs: int = 20,
    dense_reference_path: str | None = None,
) -> VerifyReport:
    """Compares a `.tflite` file with its Keras model and measures it.

    Runs `sample` through the file with the LiteRT interpreter (default
    delegate, or builtin kernels when the default delegate fails) and through
    `reference.predict`, counts the zero weights stored in the flatbuffer and
    times single-sample invokes. Verification fails when either model gives
    NaN or inf outputs on `sample`.

    Args:
        tflite_path: Path of the `.tflite` file (one input, one output).
            Integer input/output tensors are (de)quantized with their scale
            and zero point, so `sample` is always given as float.
        reference: The Keras model the file was converted from.
        sample: Float input batch, shaped like the reference's input.
        runs: Number of timed single-sample invokes (the median is reported).
        dense_reference_path: Optional dense float `.tflite` of the same model,
            whose size and latency are reported for comparison.

    Returns:
        A `VerifyReport`.

    Raises:
        ValueError: For bad arguments, or non-finite outputs of the Keras
            model or of the file.

    Example:

    ```python
    report = verify("model.tflite", model, x_test[:100])
    print(report)
    assert report.argmax_agreement > 0.99
    ```
    """
    tflite_path = _check_file(tflite_path, "tflite_path")
    if dense_reference_path is not None:
        dense_reference_path = _check_file(dense_reference_path, "dense_reference_path")
    validate_model(reference)
    sample = validate_batch(sample, "sample", reference)
    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"Expected `runs` to be a positive int. Received: runs={runs}")

    expected = np.asarray(reference.predict(sample, verbose=0)).reshape(len(sample), -1)
    _check_outputs(expected, "the Keras reference model")
    runner = _Runner(tflite_path)
    actual = runner.predict(sample).reshape(len(sample), -1)
    _check_outputs(actual, f"the .tflite file {tflite_path}")
    weight_count, zero_weights, sparse_tensors = count_zero_weights(tflite_path)
    report = VerifyReport(
        path=tflite_path,
        file_bytes=Path(tflite_path).stat().st_size,
        gzip_bytes=gzip_bytes(tflite_path),
        delegate=runner.delegate,
        delegate_fallback=runner.delegate_error is not None,
        delegate_error=runner.delegate_error,
        num_samples=len(sample),
        max_abs_diff=float(np.max(np.abs(actual - expected))),
        argmax_agreement=float(np.mean(actual.argmax(1) == expected.argmax(1))),
        weight_count=weight_count,
        zero_weights=zero_weights,
        sparse_tensors=sparse_tensors,
        latency_ms=runner.latency_ms(sample, runs),
    )
    if dense_reference_path is not None:
        report.dense_reference_bytes = Path(dense_reference_path).stat().st_size
        report.dense_reference_delegate, report.dense_reference_latency_ms = measure(
            dense_reference_path, sample, runs
        )
    return report


def measure(tflite_path: str, sample: np.ndarray, runs: int = 20) -> tuple[str, float]:
    """The delegate that runs a `.tflite` file, and its single-sample latency.

    Args:
        tflite_path: Path of the `.tflite` file (one input, one output).
        sample: Float input batch; its first row is timed.
        runs: Number of timed invokes (the median is reported).

    Returns:
        ``(delegate, latency_ms)``: `"xnnpack"` or `"builtin"` (see
        `VerifyReport.delegate`) and the median latency in milliseconds.

    Example:
    >>> delegate, latency_ms = measure("model.tflite", x_test[:1])
    """
    runner = _Runner(_check_file(tflite_path, "tflite_path"))
    return runner.delegate, runner.latency_ms(validate_batch(sample, "sample"), runs)


def measure_pair(
    first: str, second: str, sample: np.ndarray, rounds: int = 16, runs: int = 5
) -> tuple[tuple[str, float], tuple[str, float]]:
    """`measure` of two `.tflite` files, timed in interleaved rounds.

    Each round times ``runs`` invokes of each file, the order alternating
    between rounds (first-second, second-first, ...), so load that drifts
    while they are timed (a busy machine) slows both alike. Each file's
    latency is the median of all its timed invokes.

    Args:
        first: Path of the first `.tflite` file (one input, one output).
        second: Path of the second.
        sample: Float input batch; its first row is timed.
        rounds: Rounds of timing (>= 1).
        runs: Invokes of each file per round (>= 1).

    Returns:
        ``((delegate, latency_ms), (delegate, latency_ms))`` of the two files.

    Example:
    >>> (_, sparse_ms), (_, dense_ms) = measure_pair("s.tflite", "d.tflite", x)
    """
    rounds = checks.check_int("rounds", rounds, 1)
    runs = checks.check_int("runs", runs, 1)
    sample = validate_batch(sample, "sample")
    runners = [
        _Runner(_check_file(first, "first")),
        _Runner(_check_file(second, "second")),
    ]
    for runner in runners:
        runner.prepare(sample)
    times: list[list[float]] = [[], []]
    for i in range(rounds):
        for k in (0, 1) if i % 2 == 0 else (1, 0):
            times[k].extend(runners[k].times(runs))
    first_result, second_result = (
        (runner.delegate, 1000.0 * statistics.median(t))
        for runner, t in zip(runners, times, strict=True)
    )
    return first_result, second_result


def evaluate_tflite(
    tflite_path: str, x: np.ndarray, y: np.ndarray, batch_size: int = 256
) -> float:
    """Top-1 accuracy of a `.tflite` classifier on a whole test set.

    Args:
        tflite_path: Path of the `.tflite` file (one input, one output).
        x: Float inputs, batch first.
        y: Integer labels of shape `(n,)` or one-hot labels of shape `(n, k)`.
        batch_size: Samples per invoke when the model's batch is dynamic.

    Returns:
        The fraction of samples whose output argmax equals the label.

    Raises:
        ValueError: For bad arguments, or NaN or inf outputs of the file.

    Example:

    ```python
    accuracy = evaluate_tflite("model.tflite", x_test, y_test)
    ```
    """
    tflite_path = _check_file(tflite_path, "tflite_path")
    x = validate_batch(x, "x")
    y = np.asarray(y)
    labels = y.argmax(-1) if y.ndim == 2 else y
    if labels.shape != (len(x),):
        raise ValueError(
            "Expected `y` to hold one integer label or one-hot row per sample of "
            f"`x` ({len(x)} samples). Received: y with shape {y.shape}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            "Expected `batch_size` to be a positive int. "
            f"Received: batch_size={batch_size}"
        )
    outputs = _Runner(tflite_path).predict(x, batch_size).reshape(len(x), -1)
    _check_outputs(outputs, f"the .tflite file {tflite_path}")
    return float(np.mean(outputs.argmax(1) == labels))
