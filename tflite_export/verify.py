"""Check a `.tflite` file against its Keras model: parity, zeros, size, latency.

The LiteRT interpreter is first loaded with its default delegate (XNNPACK on
CPU). XNNPACK cannot prepare some sparse models with quantized weights (for
example a sparse `FULLY_CONNECTED` with int8 weights, as produced by the
`"dynamic"` and `"int8"` modes with `sparse=True`). The delegate is applied at
the first invoke, so a probe invoke on zeros is run right after loading; when
it fails, the failure message is recorded and the model is loaded again with
the builtin kernels only, which run every sparse format.
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
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType

_WEIGHT_TYPES = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.INT8: np.int8,
}


@dataclasses.dataclass
class VerifyReport:
    """What `verify` measured for one `.tflite` file.

    Attributes:
        path: The verified `.tflite` file.
        file_bytes: Its size in bytes.
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
    """

    path: str
    file_bytes: int
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
        try:
            self._load(path, OpResolverType.AUTO)
            self.delegate = "xnnpack"
        except RuntimeError as error:
            # The default delegate is applied lazily and fails on first invoke.
            self.delegate_error = str(error)
            self._load(path, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            self.delegate = "builtin"

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

    def latency_ms(self, sample: np.ndarray, runs: int) -> float:
        """Median wall time of `runs` invokes on one sample (after a warm-up)."""
        self._resize(1)
        batch = np.repeat(sample[:1], self.batch_size, axis=0)
        self._invoke(batch)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.interpreter.invoke()
            times.append(time.perf_counter() - start)
        return 1000.0 * statistics.median(times)


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


def count_zero_weights(tflite_path: str) -> tuple[int, int, int]:
    """Counts the zeros that survive in the weight tensors of a flatbuffer.

    A weight tensor is a constant tensor (one backed by a data buffer) of rank
    >= 2 stored as float32, float16 or int8; rank-1 constants (biases, shapes)
    are not counted. Elements are counted at the tensor's dense shape. For an
    int8 tensor a zero is a stored value of 0: the TFLite quantization spec
    fixes the zero point of weights at 0, so this is exactly a real 0.0. A
    tensor in the sparse encoding stores every non-zero value (plus the zeros
    inside kept blocks), so its zeros are its dense size minus its stored
    non-zero values.

    Args:
        tflite_path: Path of a `.tflite` file.

    Returns:
        `(weight_count, zero_weights, sparse_tensors)`.

    Example:

    ```python
    total, zeros, sparse = count_zero_weights("model.tflite")
    print(f"{zeros / total:.1%} zeros, {sparse} sparse tensors")
    ```
    """
    raw = Path(tflite_path).read_bytes()
    model = schema.Model.GetRootAs(raw, 0)
    total = zeros = sparse = 0
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            values = _buffer_values(raw, model.Buffers(tensor.Buffer()), tensor)
            if values is None or tensor.ShapeLength() < 2:
                continue
            dense_size = int(np.prod(tensor.ShapeAsNumpy()))
            total += dense_size
            zeros += dense_size - int(np.count_nonzero(values))
            sparse += tensor.Sparsity() is not None
    return total, zeros, sparse


def _buffer_values(raw: bytes, buffer, tensor) -> np.ndarray | None:
    dtype = _WEIGHT_TYPES.get(tensor.Type())
    if dtype is None:
        return None
    if buffer.Offset() > 1:
        data = raw[buffer.Offset() : buffer.Offset() + buffer.Size()]
    elif buffer.DataLength():
        data = buffer.DataAsNumpy().tobytes()
    else:
        return None
    return np.frombuffer(data, dtype)


def random_sample(model: keras.Model, num_samples: int, seed: int = 0) -> np.ndarray:
    """Draws a uniform [0, 1) batch shaped like the model's single input.

    Args:
        model: A built Keras model with one input of known non-batch shape.
        num_samples: Batch size of the returned array.
        seed: Seed of the NumPy generator.

    Returns:
        A float32 array of shape `(num_samples, *input_shape)`.

    Example:

    ```python
    x = random_sample(model, 8)
    ```
    """
    validate_model(model)
    shape = tuple(model.inputs[0].shape[1:])
    if None in shape:
        raise ValueError(
            "Cannot draw a random sample for an input with unknown dimensions; "
            f"pass a sample instead. Received: input shape {(None, *shape)}"
        )
    rng = np.random.default_rng(seed)
    return rng.random((num_samples, *shape), dtype=np.float32)


def validate_model(model: keras.Model) -> None:
    """Checks that `model` is a built Keras model with one input and output.

    Args:
        model: The object to check.

    Raises:
        ValueError: If it is not.

    Example:

    ```python
    validate_model(model)
    ```
    """
    if not isinstance(model, keras.Model) or not model.built or not model.inputs:
        raise ValueError(
            "Expected a built Keras model with known inputs (call it on data or "
            f"build it from an `Input`). Received: model={model!r}"
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "Expected a model with one input and one output. Received: "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs"
        )


def validate_batch(x, name: str, model: keras.Model | None = None) -> np.ndarray:
    """Checks that `x` is a non-empty batch, shaped like `model`'s input if given.

    Args:
        x: Array-like batch of inputs.
        name: Argument name used in the error message.
        model: Optional model whose input shape `x` must match.

    Returns:
        `x` as a float32 array.

    Raises:
        ValueError: If `x` is empty, holds NaN or inf, or does not fit the
            model's input.

    Example:

    ```python
    x = validate_batch(x, "sample", model)
    ```
    """
    x = np.asarray(x)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(
            f"Expected `{name}` to be a non-empty batch of inputs. "
            f"Received: {name} with shape {x.shape}"
        )
    if np.issubdtype(x.dtype, np.number) and not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(
            f"Expected `{name}` to hold finite values. Received: {name} with "
            f"{bad} NaN or inf values of {x.size}"
        )
    if model is not None:
        expected = tuple(model.inputs[0].shape[1:])
        fits = len(expected) == x.ndim - 1 and all(
            e is None or e == d for e, d in zip(expected, x.shape[1:], strict=True)
        )
        if not fits:
            raise ValueError(
                f"Expected `{name}` of shape (batch, *{expected}). "
                f"Received: {name} with shape {x.shape}"
            )
    return x.astype(np.float32)


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
        dense = _Runner(dense_reference_path)
        report.dense_reference_latency_ms = dense.latency_ms(sample, runs)
    return report


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
