"""Export pruned Keras 3 models to TFLite: convert, shrink and verify."""

from tflite_export.convert import ExportReport, export
from tflite_export.shrink import ShrinkReport, count_macs, shrink, shrink_report
from tflite_export.verify import VerifyReport, evaluate_tflite, verify

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
