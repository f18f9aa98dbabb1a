"""Export pruned Keras 3 models to TFLite: convert, shrink and verify.

`shrink`, `shrink_report` and `count_macs` are Keras-level and work on every
backend, as do `verify` and `evaluate_tflite` (LiteRT only). `export` needs
TensorFlow (the TFLite converter), so it loads on first use and says so on
another backend.
"""

import importlib

from tflite_export.shrink import ShrinkReport, count_macs, shrink, shrink_report
from tflite_export.verify import VerifyReport, evaluate_tflite, verify

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
    "ExportReport",
    "ShrinkReport",
    "VerifyReport",
    "count_macs",
    "evaluate_tflite",
    "export",
    "shrink",
    "shrink_report",
    "verify",
]
