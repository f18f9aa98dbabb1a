"""Convert a (pruned) Keras 3 model to a `.tflite` file."""

from __future__ import annotations

from tf_reweight.core.backend_support import require

require(__name__, "the TFLite converter")

import dataclasses
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import tf_reweight as tfr
from tf_reweight.core.backend_support import quiet_native_logs
from tf_reweight.core.checks import check_bool, check_choice
from tflite_export import quantizer
from tflite_export.encoding import EncodingChoice, write_encoding
from tflite_export.flatbuffer import gzip_bytes
from tflite_export.inputs import random_sample, validate_batch, validate_model
from tflite_export.shrink import ShrinkReport, shrink_report
from tflite_export.shrink import shrink as shrink_model
from tflite_export.verify import VerifyReport
from tflite_export.verify import verify as verify_file

QUANTIZATIONS = ("none", "dynamic", "int8", "float16", *quantizer.MODES)
SPARSE = (True, False, "auto")
CONVERTERS = ("saved_model", "keras")
# The converter's one setting used here that has no public name: per-tensor
# (not per-channel) quantization of FULLY_CONNECTED weights. Both converters
# take it as an attribute (Keras' exporter sets the converter attributes it is
# given); tests/tflite_export pin that it still exists.
PER_TENSOR_DENSE = "_experimental_disable_per_channel_quantization_for_dense_layers"


@dataclasses.dataclass
class ExportReport:
    """What `export` wrote.

    Attributes:
        path: The written `.tflite` file.
        file_bytes: Its size in bytes.
        gzip_bytes: Its size compressed with gzip (as apps ship it).
        quantization: One of `"none"`, `"dynamic"`, `"int8"`, `"float16"`,
            `"weight_int8"`, `"weight_int4"`.
        sparse: The encoding requested: True, False or `"auto"`.
        converter: `"saved_model"` or `"keras"` (Keras' LiteRT exporter).
        per_channel_dense: Whether Dense weights were quantized per output
            channel (False: one scale per tensor).
        encoding: The encoding written, with the measurements it was chosen
            on (`sparse="auto"`), as an `EncodingChoice`.
        shrink: Parameter and MAC counts before/after `shrink`, if it ran.
        verification: The `VerifyReport` of the file, if verification ran.
    """

    path: str
    file_bytes: int
    gzip_bytes: int
    quantization: str
    sparse: bool | str
    converter: str
    encoding: EncodingChoice
    per_channel_dense: bool = True
    shrink: ShrinkReport | None = None
    verification: VerifyReport | None = None

    def to_dict(self) -> dict:
        """Returns the report as a JSON-friendly dict."""
        return {
            "path": self.path,
            "file_bytes": self.file_bytes,
            "gzip_bytes": self.gzip_bytes,
            "quantization": self.quantization,
            "sparse": self.sparse,
            "converter": self.converter,
            "per_channel_dense": self.per_channel_dense,
            "encoding": self.encoding.to_dict(),
            "shrink": self.shrink and self.shrink.to_dict(),
            "verification": self.verification and self.verification.to_dict(),
        }

    def __str__(self) -> str:
        lines = [
            f"{self.path}: {self.file_bytes} bytes ({self.gzip_bytes} gzipped), "
            f"quantization={self.quantization}, sparse={self.sparse}, "
            f"converter={self.converter}"
            + ("" if self.per_channel_dense else ", Dense weights per tensor"),
            str(self.encoding),
        ]
        if self.shrink is not None:
            lines.append(f"shrink: {self.shrink}")
        if self.verification is not None:
            lines.append(str(self.verification))
        return "\n".join(lines)


def _calibration_batch(batch, model) -> np.ndarray:
    """One batch of calibration inputs as float32, checked against the model."""
    batch = np.asarray(batch)
    if batch.dtype.kind not in "biuf":
        raise ValueError(
            "Expected `representative_data` of real numbers (float or int). "
            f"Received: a batch of dtype {batch.dtype}"
        )
    return validate_batch(batch, "representative_data", model)


def _representative_dataset(data, model):
    """Wraps an input array (one sample per step) or an iterable of batches."""
    if isinstance(data, np.ndarray):
        batches = (data[i : i + 1] for i in range(len(data)))
    else:
        batches = iter(data)
    for batch in batches:
        yield [_calibration_batch(batch, model)]


def _converter_options(
    quantization: str, sparse: bool, data, model, per_channel_dense: bool
) -> dict:
    """The TFLite converter's settings, as `keras.Model.export` takes them."""
    optimizations = [] if quantization == "none" else [tf.lite.Optimize.DEFAULT]
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    options = {"optimizations": optimizations}
    if not per_channel_dense:
        options[PER_TENSOR_DENSE] = True
    if quantization == "float16":
        options["target_spec"] = {"supported_types": [tf.float16]}
    if quantization == "int8":
        options["representative_dataset"] = lambda: _representative_dataset(data, model)
        int8_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        options["target_spec"] = {"supported_ops": int8_ops}
    return options


def keras_exporter_available() -> bool:
    """Whether this Keras' `Model.export` writes LiteRT (``format="litert"``).

    Keras has no public flag for its export formats; its `Model.export`
    docstring lists them (``"litert"`` since Keras 3.13).

    Returns:
        True if ``model.export(path, format="litert")`` is supported.
    """
    return '"litert"' in (keras.Model.export.__doc__ or "")


def _convert(
    model, quantization: str, sparse: bool, data, converter: str, per_channel_dense
) -> bytes:
    """Converts ``model`` to a flatbuffer, native log lines held back."""
    if quantization in quantizer.MODES:  # float first, then LiteRT's quantizer
        flatbuffer = _convert(
            model, "none", False, data, converter, per_channel_dense=True
        )
        with quiet_native_logs():
            return quantizer.quantize_flatbuffer(
                flatbuffer, quantizer.MODES[quantization]
            )
    options = _converter_options(quantization, sparse, data, model, per_channel_dense)
    with tempfile.TemporaryDirectory() as folder, quiet_native_logs():
        if converter == "keras":
            path = os.path.join(folder, "model.tflite")
            model.export(path, format="litert", verbose=False, **options)
            return Path(path).read_bytes()
        model.export(folder, format="tf_saved_model", verbose=False)
        tflite = tf.lite.TFLiteConverter.from_saved_model(folder)
        for name, value in options.pop("target_spec", {}).items():
            setattr(tflite.target_spec, name, value)
        for name, value in options.items():
            setattr(tflite, name, value)
        return tflite.convert()


def check_output_path(path, name: str = "path") -> None:
    """Checks that a file can be written at ``path``, before any conversion.

    Args:
        path: The output file.
        name: The argument named in the error message.

    Raises:
        ValueError: If ``path`` is a directory, its folder does not exist, or
            the place is not writable.

    Example:

    ```python
    check_output_path("model.tflite")
    ```
    """
    target, folder = Path(path), Path(path).parent
    if target.is_dir():
        raise ValueError(
            f"Expected `{name}` to be a file name, not a directory; add a file "
            f"name such as {target / 'model.tflite'}. Received: {name}={path}"
        )
    if not folder.is_dir():
        raise ValueError(
            f"Expected `{name}` in an existing directory; create {folder} first. "
            f"Received: {name}={path}"
        )
    place = target if target.exists() else folder
    if not os.access(place, os.W_OK):
        raise ValueError(
            f"Expected `{name}` in a place this user may write; {place} is not "
            f"writable. Received: {name}={path}"
        )


def _check_calibration(data, model) -> None:
    """Checks an array, list or tuple of calibration inputs against the model.

    Batches of another iterable are checked as the converter draws them.
    """
    if isinstance(data, list | tuple) and not data:
        raise ValueError(
            "Expected `representative_data` to hold at least one batch. "
            f"Received: representative_data={data!r}"
        )
    if isinstance(data, np.ndarray):
        _calibration_batch(data, model)
    elif isinstance(data, list | tuple):
        for batch in data:
            _calibration_batch(batch, model)


def _check_arguments(
    model,
    path,
    quantization,
    sparse,
    converter,
    representative_data,
    sample,
    per_channel_dense,
) -> None:
    validate_model(model)
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Expected `quantization` to be one of {QUANTIZATIONS}. "
            f"Received: quantization={quantization!r}"
        )
    quantizer.require(quantization)
    if quantization in quantizer.MODES and sparse is True:
        raise ValueError(
            f"quantization={quantization!r} (LiteRT's quantizer) writes dense "
            "tensors; the sparse encoding is the converter's. Expected "
            f"sparse=False or 'auto'. Received: sparse=True"
        )
    check_bool("per_channel_dense", per_channel_dense)
    if not per_channel_dense and quantization not in ("int8", "dynamic"):
        raise ValueError(
            "`per_channel_dense=False` sets how int8 Dense weights are quantized; "
            "it needs quantization='int8' or 'dynamic'. Received: "
            f"per_channel_dense=False, quantization={quantization!r}"
        )
    if not (isinstance(sparse, bool) or (isinstance(sparse, str) and sparse == "auto")):
        raise ValueError(
            f"Expected `sparse` to be one of {SPARSE}. Received: sparse={sparse!r}"
        )
    check_choice("converter", converter, CONVERTERS)
    if converter == "keras" and not keras_exporter_available():
        raise ValueError(
            "`converter='keras'` needs a Keras whose `Model.export` writes LiteRT "
            f"(format='litert', Keras 3.13 or later); this is Keras "
            f"{keras.__version__}. Use converter='saved_model'. "
            f"Received: converter={converter!r}"
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "Full-integer quantization needs `representative_data` (an input "
            "array or an iterable of input batches) to calibrate activation "
            "ranges. Received: representative_data=None"
        )
    if representative_data is not None:
        _check_calibration(representative_data, model)
    if sample is not None:
        validate_batch(sample, "sample", model)
    check_output_path(path)


def export(
    model: keras.Model,
    path: str,
    quantization: str = "none",
    sparse: bool | str = "auto",
    representative_data: np.ndarray | Iterable | None = None,
    shrink: bool = False,
    verify: bool = True,
    sample: np.ndarray | None = None,
    converter: str = "saved_model",
    per_channel_dense: bool = True,
) -> ExportReport:
    """Converts a Keras model to a `.tflite` file and checks the result.

    The model is first stripped with `tf_reweight.strip` (pruning and
    quantization wrappers removed, zeros kept, quantized kernels on their
    grid), optionally shrunk (zero filters removed, see `shrink`), then
    converted: exported as a SavedModel and converted with
    `tf.lite.TFLiteConverter.from_saved_model` (``converter="saved_model"``),
    or with Keras' own ``model.export(path, format="litert")``
    (``converter="keras"``, Keras 3.13 or later), with the same settings.

    Quantization modes:

    - `"none"`: float32 weights and activations.
    - `"dynamic"`: int8 weights, float activations.
    - `"float16"`: float16 weights, float32 compute.
    - `"int8"`: int8 weights and activations with int8 builtin ops only,
      calibrated on `representative_data`. Input and output stay float32
      (quantize/dequantize ops are inside the model), so the file is fed the
      same data as the Keras model.
    - `"weight_int8"`, `"weight_int4"`: LiteRT's own quantizer
      (``ai-edge-quantizer``, `tflite_export.quantizer`) on the float file:
      8- or 4-bit symmetric per-channel weights, dequantized before float32
      ops. Dense tensors only (``sparse`` must not be True).

    Weight encodings (`sparse`): LiteRT's sparse encoding
    (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`) stores weight tensors with
    many zeros compactly, but XNNPACK, LiteRT's default CPU delegate, cannot
    run every sparse format (see `tflite_export.encoding`). `"auto"` converts
    both encodings, times both in LiteRT (`verify.measure`) and writes the
    sparse file unless it falls off XNNPACK where the dense one runs on it,
    or is slower (`choose_encoding`); the report says which and why.
    `True` writes the sparse file and warns when the dense one would be
    faster; `False` writes the dense file.

    Args:
        model: A built Keras 3 model with one input and one output.
        path: Where to write the `.tflite` file.
        quantization: One of `"none"`, `"dynamic"`, `"int8"`, `"float16"`,
            `"weight_int8"`, `"weight_int4"`.
        sparse: `"auto"`, True or False (see above).
        representative_data: Calibration inputs for `"int8"`: either an array
            of samples (each sample is one calibration step; a few hundred is
            plenty) or an iterable of input batches.
        shrink: Remove removable zero filters first (see `shrink`).
        verify: Run `verify` on the written file, against `model` itself.
        sample: Inputs for verification and timing. Defaults to the first 32
            rows of an array `representative_data`, else a random uniform
            [0, 1) batch.
        converter: `"saved_model"` or `"keras"` (see above).
        per_channel_dense: Quantize the weights of Dense layers per output
            channel (the converter's default). False uses one scale per
            tensor: every quantized Dense weight and its bias otherwise
            store a float32 scale and an int64 zero point per output unit
            (24 bytes a unit), which in a pruned model can outweigh the
            weights themselves. Needs ``"int8"`` or ``"dynamic"``.

    Returns:
        An `ExportReport`.

    Raises:
        ValueError: For bad arguments (before anything is written), or when
            verification fails.

    Example:

    ```python
    report = export(model, "model.tflite", quantization="int8",
                    representative_data=x_train[:200], sample=x_test[:100])
    print(report.encoding, report.gzip_bytes)
    ```
    """
    _check_arguments(
        model,
        path,
        quantization,
        sparse,
        converter,
        representative_data,
        sample,
        per_channel_dense,
    )
    if quantization in quantizer.MODES:
        sparse = False  # the quantizer rewrites dense tensors only
    if representative_data is not None and iter(representative_data) is (
        representative_data
    ):
        representative_data = list(representative_data)  # converted up to twice
    converted = tfr.strip(model)
    shrink_summary = None
    if shrink:
        stripped, converted = converted, shrink_model(converted)
        shrink_summary = shrink_report(stripped, converted)
    if sample is None and isinstance(representative_data, np.ndarray):
        sample = representative_data[:32]
    if sample is None:
        sample = random_sample(model, 8)

    def convert(encoding: bool) -> bytes:
        return _convert(
            converted,
            quantization,
            encoding,
            representative_data,
            converter,
            per_channel_dense,
        )

    with tempfile.TemporaryDirectory() as folder:
        encoding, dense_path = write_encoding(
            convert, str(path), sparse, sample, folder, measured=verify
        )
        report = ExportReport(
            path=str(path),
            file_bytes=Path(path).stat().st_size,
            gzip_bytes=gzip_bytes(path),
            quantization=quantization,
            sparse=sparse,
            converter=converter,
            encoding=encoding,
            per_channel_dense=per_channel_dense,
            shrink=shrink_summary,
        )
        if verify:
            report.verification = verify_file(
                str(path), model, sample, dense_reference_path=dense_path
            )
    return report
