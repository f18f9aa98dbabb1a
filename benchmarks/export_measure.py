"""Export benchmark, the measurements: one record per exported file.

`Bench` exports a trained model (`benchmarks/export_train.py`) to
``.tflite``, verifies, evaluates and times the file and appends its record to
the results file; its parts (`Bench.lenet`, `Bench.resnet`) say which files
each model is exported to.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import keras
import numpy as np

import tf_reweight as tfr
from benchmarks import records
from benchmarks.export_train import Models, Trained
from tflite_export import (
    count_macs,
    evaluate_tflite,
    export,
    shrink,
    shrink_report,
    verify,
)
from tflite_export.flatbuffer import byte_breakdown

METHODS = ("dense", "sparse", "int8", "sparse_int8", "shrunk")
KEY_FIELDS = (
    "model",
    "dataset",
    "structure",
    "target",
    "method",
    "quantization",
    "sparse_encoding",
    "training",
    "test_samples",
)


def versions() -> str:
    """The versions that matter for the numbers, as one line."""
    import tensorflow as tf

    litert = metadata.version("ai-edge-litert")
    return (
        f"python {platform.python_version()}, tensorflow {tf.__version__}, "
        f"keras {keras.__version__}, ai-edge-litert {litert}, numpy {np.__version__}"
    )


class Bench(Models):
    """One benchmark run: the data and models of `Models`, and the results file."""

    def __init__(self, args: argparse.Namespace, command: str):
        super().__init__(args)
        self.command = command
        self.results = records.Store(args.results, KEY_FIELDS)
        self.versions = versions()
        self.measured: list[dict] = []

    # Measurements ----------------------------------------------------------

    def measure(
        self,
        base: dict,
        trained: Trained,
        method: str,
        quantization_mode: str,
        sparse: bool,
        dense_file: Path | None,
        do_shrink: bool = False,
    ) -> Path:
        """Exports, verifies, evaluates and records one file (unless recorded).

        Returns:
            The `.tflite` path (re-exported when the record exists but the file
            is gone, since later records compare against it).
        """
        if method not in METHODS:
            raise ValueError(f"Expected a method in {METHODS}. Received: {method!r}")
        a = self.args
        record = {
            **base,
            "method": method,
            "quantization": quantization_mode,
            "sparse_encoding": sparse,
            "test_samples": len(self.data(base["dataset"])[1][0]),
        }
        tag = f"{method}_{quantization_mode}_{'sparse' if sparse else 'dense'}"
        path = self.cache / "tflite" / f"{trained.name}__{tag}.tflite"
        recorded = self.results.has(record)
        if recorded and path.is_file():
            print(f"[skip] {_describe(record)}", flush=True)
            return path
        (x_train, _), (x_test, y_test) = self.data(base["dataset"])
        path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        exported = export(
            trained.model,
            str(path),
            quantization=quantization_mode,
            sparse=sparse,
            representative_data=x_train[: a.calibration_samples],
            shrink=do_shrink,
            verify=False,
        )
        export_seconds = time.perf_counter() - start
        if recorded:
            print(f"[skip] {_describe(record)} (file re-exported)", flush=True)
            return path
        check = verify(
            str(path),
            trained.model,
            x_test,
            runs=a.latency_runs,
            dense_reference_path=None if dense_file is None else str(dense_file),
        )
        accuracy = evaluate_tflite(str(path), x_test, y_test)
        plain = shrink(trained.model) if do_shrink else trained.model
        kernels = tfr.report(trained.model)
        record.update(
            {
                "accuracy": accuracy,
                "keras_accuracy": trained.meta["keras_accuracy"],
                "epochs": trained.meta["epochs"],
                "seconds": trained.meta["seconds"],
                "nonzeros": sum(r.nonzeros for r in kernels.rows),
                "kernel_weights": sum(r.weights for r in kernels.rows),
                "rate": trained.meta.get("rate", 1.0),
                "model_rate": trained.meta.get("model_rate", 1.0),
                "file_bytes": exported.file_bytes,
                "file_compression": None,
                **byte_breakdown(path),
                "ideal_compression_8bit": tfr.quantization.compression_report(
                    plain, bits=8
                )["compression"],
                "argmax_agreement": check.argmax_agreement,
                "max_abs_diff": check.max_abs_diff,
                "latency_ms": check.latency_ms,
                "dense_latency_ms": check.dense_reference_latency_ms,
                "latency_speedup": check.speedup,
                "latency_runs": a.latency_runs,
                "delegate": check.delegate,
                "delegate_error": _first_line(check.delegate_error),
                "sparse_tensors": check.sparse_tensors,
                "macs": count_macs(plain),
                "export_seconds": round(export_seconds, 1),
                "calibration_samples": a.calibration_samples
                if quantization_mode == "int8"
                else 0,
                "versions": self.versions,
                "command": self.command,
            }
        )
        if check.dense_reference_bytes:
            record["file_compression"] = check.dense_reference_bytes / check.file_bytes
        elif dense_file is None:
            record["file_compression"] = 1.0
        if do_shrink:
            record.update(_shrink_fields(trained.model, plain, x_test))
        self.results.add(record)
        self.measured.append(record)
        print(f"[record] {_describe(record)}", flush=True)
        print(json.dumps(record), flush=True)
        return path

    # Parts -----------------------------------------------------------------

    def lenet(self) -> None:
        """LeNet-5/MNIST: dense, int8, sparse, sparse int8 and shrunk files."""
        a = self.args
        dense = _Lazy(lambda: self.dense("lenet5", "mnist", a.pretrain_epochs))
        epochs = (a.reweight_epochs, a.retrain_epochs)
        pruned = _Lazy(
            lambda: self.pruned(dense(), "mnist", a.structure, a.rate, epochs)
        )
        base = {"model": "lenet5", "dataset": "mnist"}
        dense_base = {
            **base,
            "structure": "dense",
            "target": None,
            "training": f"pretrain {a.pretrain_epochs} epochs, "
            f"{self.train_size('mnist')} images",
        }
        pruned_base = {
            **base,
            "structure": a.structure,
            "target": a.rate,
            "training": f"pretrain {a.pretrain_epochs} + reweight {epochs[0]} + "
            f"retrain {epochs[1]} epochs, lambda {a.penalty:g}, "
            f"{self.train_size('mnist')} images",
        }
        self._run(
            dense,
            pruned,
            dense_base,
            pruned_base,
            [
                ("dense", "int8", False, False),
                ("pruned", "sparse", "none", True, False),
                ("pruned", "sparse_int8", "int8", True, False),
                ("pruned", "sparse_int8", "dynamic", True, False),
                ("pruned", "int8", "int8", False, False),
                ("pruned", "shrunk", "int8", True, True),
                ("pruned", "shrunk", "dynamic", True, True),
            ],
        )

    def resnet(self) -> None:
        """ResNet-20/CIFAR-10: dense, sparse and shrunk files, float and int8."""
        a = self.args
        pre, rw, rt = a.cifar_epochs
        dense = _Lazy(lambda: self.dense("resnet20", "cifar10", pre))
        pruned = _Lazy(
            lambda: self.pruned(
                dense(),
                "cifar10",
                "filter",
                a.cifar_rate,
                (rw, rt),
                skip_first=True,
                skip_last=True,
            )
        )
        base = {"model": "resnet20", "dataset": "cifar10"}
        size = self.train_size("cifar10")
        dense_base = {
            **base,
            "structure": "dense",
            "target": None,
            "training": f"pretrain {pre} epochs, {size} images",
        }
        pruned_base = {
            **base,
            "structure": "filter",
            "target": a.cifar_rate,
            "training": f"pretrain {pre} + reweight {rw} + retrain {rt} epochs, "
            f"lambda {a.penalty:g}, first and last layers dense, {size} images",
        }
        self._run(
            dense,
            pruned,
            dense_base,
            pruned_base,
            [
                ("dense", "int8", False, False),
                ("pruned", "sparse", "none", True, False),
                ("pruned", "shrunk", "none", False, True),
                ("pruned", "shrunk", "int8", False, True),
            ],
        )

    def _run(self, dense, pruned, dense_base, pruned_base, plan) -> None:
        """Measures the dense float file, then every ``plan`` entry against it.

        ``plan`` rows are ``("dense", quantization, sparse, shrink)`` for other
        exports of the dense model and ``("pruned", method, quantization,
        sparse, shrink)`` for the pruned model.
        """
        dense_file = self.measure(dense_base, dense(), "dense", "none", False, None)
        for row in plan:
            method = "int8" if row[0] == "dense" else row[1]
            if method not in self.args.methods:
                continue
            if row[0] == "dense":
                _, mode, sparse, do_shrink = row
                self.measure(
                    dense_base, dense(), "int8", mode, sparse, dense_file, do_shrink
                )
            else:
                _, method, mode, sparse, do_shrink = row
                self.measure(
                    pruned_base, pruned(), method, mode, sparse, dense_file, do_shrink
                )


class _Lazy:
    """Calls ``make`` once, on first use."""

    def __init__(self, make: Callable[[], Trained]):
        self.make, self.value = make, None

    def __call__(self) -> Trained:
        if self.value is None:
            self.value = self.make()
        return self.value


def _first_line(text: str | None) -> str | None:
    return None if not text else text.strip().splitlines()[0][:200]


def _shrink_fields(original: keras.Model, small: keras.Model, x: np.ndarray) -> dict:
    """`shrink_report` counts and the Keras-level difference after shrinking."""
    counts = shrink_report(original, small)
    sample = x[:512]
    diff = np.max(
        np.abs(original.predict(sample, verbose=0) - small.predict(sample, verbose=0))
    )
    return {
        "params_before": counts.params_before,
        "params_after": counts.params_after,
        "macs_before": counts.macs_before,
        "macs_after": counts.macs_after,
        "macs_speedup": counts.macs_speedup,
        "shrink_keras_max_abs_diff": float(diff),
    }


def _describe(record: dict) -> str:
    text = (
        f"{record['model']}/{record['dataset']} {record['structure']} "
        f"{record['target'] or ''} {record['method']} "
        f"({record['quantization']}, sparse={record['sparse_encoding']})"
    )
    if "file_bytes" in record:
        ratio = record["file_compression"]
        speed = record["latency_speedup"]
        text += (
            f": acc {record['accuracy']:.4f}, {record['file_bytes']} B"
            + (f" ({ratio:.1f}x smaller)" if ratio else "")
            + f", agree {record['argmax_agreement']:.4f}, "
            f"{record['latency_ms']:.3f} ms"
            + (f" ({speed:.2f}x dense)" if speed else "")
            + f", {record['delegate']}"
        )
    return text
