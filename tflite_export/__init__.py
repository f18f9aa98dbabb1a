"""Export pruned Keras 3 models to TFLite: convert, shrink and verify.

`shrink`, `shrink_report` and `count_macs` are Keras-level and work on every
backend, as do `verify`, `measure`, `measure_pair`, `evaluate_tflite` and
`choose_encoding` (LiteRT only). `export` needs TensorFlow (the TFLite
converter), so it loads on first use and says so on another backend.
"""

# First: imports Keras and TensorFlow without their native log lines.
from tf_reweight.core import backend_support  # noqa: F401, I001

import importlib

from tflite_export.encoding import EncodingChoice, choose_encoding
from tflite_export.shrink import ShrinkReport, count_macs, shrink, shrink_report
from tflite_export.verify import (
    VerifyReport,
    evaluate_tflite,
    measure,
    measure_pair,
    verify,
)

_LAZY_ATTRIBUTES = {
    "ExportReport": "convert",
    "export": "convert",
}


def __getattr__(name: str):
    if name in _LAZY_ATTRIBUTES:
        module = importlib.import_module(f"tflite_export.{_LAZY_ATTRIBUTES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'tflite_export' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_ATTRIBUTES))


__all__ = [
    "EncodingChoice",
    "ExportReport",
    "ShrinkReport",
    "VerifyReport",
    "choose_encoding",
    "count_macs",
    "evaluate_tflite",
    "export",
    "measure",
    "measure_pair",
    "shrink",
    "shrink_report",
    "verify",
]
