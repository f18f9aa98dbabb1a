"""Export benchmark: what pruning buys in a `.tflite` file and in LiteRT.

Two parts, each appending flat records to a JSON list (default
``benchmarks/results/export.json``):

- ``lenet``: LeNet-5 on MNIST, dense float32 against pruning at ``--rate``
  (100x, ranked across layers, by default) with ``--structure`` (unstructured
  by default; ``fc1=block:16x1`` prunes fc1 in the 1x16 blocks of TFLite's
  int8 sparse format), exported as dense float32 (``dense``), dense
  full-integer int8 (``int8``), pruned float32 in the TFLite sparse encoding
  (``sparse``) and pruned int8 in the sparse encoding (``sparse_int8``, with
  full-integer and with dynamic-range quantization). The pruned model exported
  int8 without the sparse encoding is recorded as ``int8`` with its structure,
  and with its dead units removed first (``shrunk``, int8 in the sparse
  encoding).
- ``resnet``: ResNet-20 on CIFAR-10, dense against filter pruning at
  ``--cifar-rate`` (16x, first and last layers dense), exported dense, sparse
  and shrunk (zero filters removed by `tflite_export.shrink`), float32 and
  int8; the latency of batch-1 invokes is compared with the MAC reduction.

Every record holds the TFLite accuracy on the full test set (``test_samples``
says how many were used; ``--quick`` and ``--test-limit`` use fewer), the
argmax agreement and largest output difference against the Keras model over
the same samples, the file size and where its bytes go, the median latency of
``--latency-runs`` single-sample invokes next to the dense file's latency
measured right after it (a paired measurement, so both see the same machine
load), the delegate that ran the file, the training budget and the command.

Trained models are cached outside the repository, under
``$TF_REWEIGHT_BENCH_CACHE`` or ``~/.cache/tf_reweight/bench`` (``--cache-dir``),
keyed by their training settings. Records whose key (model, dataset, structure,
target, method, quantization, encoding, training budget, test samples) is
already in the results file are skipped, so an interrupted run resumes where it
stopped.

Example:

```
python -m benchmarks.export --part lenet
python -m benchmarks.export --part resnet --cifar-epochs 3,2,2
python -m benchmarks.export --quick   # minutes: tiny slices, results in the cache
```
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_reweight as tfr  # noqa: E402
from benchmarks import records  # noqa: E402
from tflite_export import (  # noqa: E402
    count_macs,
    evaluate_tflite,
    export,
    shrink,
    shrink_report,
    verify,
)
from tflite_export.flatbuffer import byte_breakdown  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "export.json"
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


def default_cache_dir() -> Path:
    """``$TF_REWEIGHT_BENCH_CACHE`` or ``~/.cache/tf_reweight/bench``."""
    return Path(
        os.environ.get("TF_REWEIGHT_BENCH_CACHE", "~/.cache/tf_reweight/bench")
    ).expanduser()


def versions() -> str:
    """The versions that matter for the numbers, as one line."""
    import tensorflow as tf

    litert = metadata.version("ai-edge-litert")
    return (
        f"python {platform.python_version()}, tensorflow {tf.__version__}, "
        f"keras {keras.__version__}, ai-edge-litert {litert}, numpy {np.__version__}"
    )


@dataclass
class Trained:
    """A trained Keras model with what its training cost."""

    name: str
    model: keras.Model
    meta: dict


class Bench:
    """One benchmark run: settings, data, caches and the results file."""

    def __init__(self, args: argparse.Namespace, command: str):
        self.args = args
        self.command = command
        self.cache = Path(args.cache_dir).expanduser()
        self.results = records.Store(args.results, KEY_FIELDS)
        self.versions = versions()
        self._data: dict[str, tuple] = {}
        self.measured: list[dict] = []

    # Data and models -------------------------------------------------------

    def data(self, name: str):
        """``((x_train, y_train), (x_test, y_test))``, cut to the limits."""
        if name not in self._data:
            (x, y), (xt, yt) = tfr.data.load(name, self.args.data_dir)
            n, nt = self.args.train_limit, self.args.test_limit
            self._data[name] = ((x[:n], y[:n]), (xt[:nt], yt[:nt]))
        return self._data[name]

    def cached(self, name: str, train: Callable[[], tuple]) -> Trained:
        """Loads ``name`` from the cache or trains it with ``train()``.

        ``train`` returns ``(plain_model, meta)``; both are written to the
        cache (``name.keras`` and ``name.json``).
        """
        path, meta_path = self.cache / f"{name}.keras", self.cache / f"{name}.json"
        if path.is_file() and meta_path.is_file():
            print(f"[cache] {name}", flush=True)
            return Trained(
                name, keras.saving.load_model(path), json.loads(meta_path.read_text())
            )
        print(f"[train] {name}", flush=True)
        model, meta = train()
        self.cache.mkdir(parents=True, exist_ok=True)
        model.save(path)
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
        return Trained(name, model, meta)

    def dense(self, model_name: str, dataset: str, epochs: int) -> Trained:
        """A dense model pretrained with Adam for ``epochs`` epochs."""
        a = self.args
        name = _slug(
            f"{model_name}_{dataset}_dense_e{epochs}_b{a.batch_size}_lr{a.lr:g}"
            f"_n{a.train_limit}_s{a.seed}"
        )

        def train():
            train_data, test = self.data(dataset)
            keras.utils.set_random_seed(a.seed)
            model = tfr.models.get(
                model_name, input_shape=train_data[0].shape[1:], num_classes=10
            )
            tfr.recipes.compile_classifier(model, a.lr)
            start = time.perf_counter()
            if epochs:
                model.fit(
                    *train_data,
                    batch_size=a.batch_size,
                    epochs=epochs,
                    verbose=a.verbose,
                )
            seconds = time.perf_counter() - start
            return model, {
                "epochs": epochs,
                "seconds": round(seconds, 1),
                "keras_accuracy": _accuracy(model, test),
            }

        return self.cached(name, train)

    def pruned(
        self,
        dense: Trained,
        dataset: str,
        structure: str,
        target: str,
        epochs: tuple[int, int],
        **apply_kwargs,
    ) -> Trained:
        """``dense`` pruned by `tfr.recipes.reweighted_prune`, stripped."""
        a = self.args
        extra = "".join(f"_{k}" for k, v in sorted(apply_kwargs.items()) if v)
        name = _slug(
            f"{dense.name}__{structure}_{target}_l{a.penalty:g}"
            f"_r{epochs[0]}_t{epochs[1]}{extra}"
        )

        def train():
            train_data, test = self.data(dataset)
            keras.utils.set_random_seed(a.seed)
            result = tfr.recipes.reweighted_prune(
                dense.model,
                train_data,
                structure=_per_layer(structure),
                target=_per_layer(target),
                penalty=a.penalty,
                reweight_epochs=epochs[0],
                retrain_epochs=epochs[1],
                batch_size=a.batch_size,
                lr=a.lr,
                verbose=a.verbose,
                **apply_kwargs,
            )
            report = tfr.report(result.model)
            print(report, flush=True)
            plain = tfr.strip(result.model)
            return plain, {
                "epochs": result.epochs,
                "seconds": round(result.seconds, 1),
                "keras_accuracy": _accuracy(plain, test),
                "rate": report.rate,
                "model_rate": report.model_rate,
            }

        return self.cached(name, train)

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

    def train_size(self, dataset: str) -> int:
        return len(self.data(dataset)[0][0])


class _Lazy:
    """Calls ``make`` once, on first use."""

    def __init__(self, make: Callable[[], Trained]):
        self.make, self.value = make, None

    def __call__(self) -> Trained:
        if self.value is None:
            self.value = self.make()
        return self.value


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", text)


def _accuracy(model: keras.Model, test) -> float:
    logits = model.predict(test[0], batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == test[1]))


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


# Defaults of the options left unset, for full and for --quick runs.
_FULL = {
    "pretrain_epochs": 5,
    "reweight_epochs": 6,
    "retrain_epochs": 6,
    "cifar_epochs": (3, 2, 2),
    "latency_runs": 500,
}
_QUICK = {
    "pretrain_epochs": 1,
    "reweight_epochs": 1,
    "retrain_epochs": 1,
    "cifar_epochs": (1, 1, 1),
    "latency_runs": 20,
    "train_limit": 2000,
    "test_limit": 500,
}


def _epochs(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected PRETRAIN,REWEIGHT,RETRAIN epochs such as 3,2,2; got {text!r}"
        )
    return tuple(int(p) for p in parts)


def _per_layer(text: str):
    """``"fc1=block:16x1,conv2=filter"`` as a dict; a text without ``=`` as is.

    Per-layer targets (``"fc1=126x,conv1=0.6"``) are rate strings or floats.
    """
    if "=" not in text:
        return text
    pairs = [item.split("=", 1) for item in text.split(",")]
    return {
        name.strip(): value.strip()
        if not value.strip().replace(".", "", 1).isdigit()
        else float(value)
        for name, value in pairs
    }


def _methods(text: str) -> tuple[str, ...]:
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = sorted(set(methods) - set(METHODS))
    if not methods or unknown:
        raise argparse.ArgumentTypeError(
            f"expected methods among {','.join(METHODS)}; got {text!r}"
        )
    return methods


def parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.export",
        description="Dense vs sparse vs int8 vs shrunk TFLite exports of pruned "
        "models: size, accuracy, agreement and LiteRT latency.",
    )
    p.add_argument("--part", choices=["lenet", "resnet", "all"], default="all")
    p.add_argument(
        "--rate",
        default="100x",
        help="LeNet-5 target (one budget ranked across layers), or "
        "LAYER=TARGET,... per layer",
    )
    p.add_argument(
        "--structure",
        default="unstructured",
        help="LeNet-5 structure, or LAYER=STRUCTURE,... with the other layers "
        "unstructured (fc1=block:16x1 matches TFLite's int8 sparse blocks)",
    )
    p.add_argument("--penalty", type=float, default=1e-4, help="lambda")
    p.add_argument("--pretrain-epochs", type=int, help="LeNet-5 (default 5)")
    p.add_argument("--reweight-epochs", type=int, help="LeNet-5 (default 6)")
    p.add_argument("--retrain-epochs", type=int, help="LeNet-5 (default 6)")
    p.add_argument("--cifar-rate", default="16x", help="ResNet-20 filter target")
    p.add_argument(
        "--cifar-epochs",
        type=_epochs,
        help="ResNet-20 PRETRAIN,REWEIGHT,RETRAIN epochs (default 3,2,2); "
        "0 pretraining epochs prunes an untrained model",
    )
    p.add_argument(
        "--methods",
        type=_methods,
        default=METHODS,
        help="comma-separated subset of " + ",".join(METHODS) + " (the dense "
        "float file is always measured: the others are compared with it)",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency-runs", type=int, help="default 500")
    p.add_argument("--calibration-samples", type=int, default=512)
    p.add_argument("--train-limit", type=int, default=None, help="first N images")
    p.add_argument("--test-limit", type=int, default=None, help="first N images")
    p.add_argument("--data-dir", default=None, help="default $TF_REWEIGHT_DATA_DIR")
    p.add_argument(
        "--cache-dir",
        default=None,
        help="trained models and files (default $TF_REWEIGHT_BENCH_CACHE or "
        "~/.cache/tf_reweight/bench)",
    )
    p.add_argument("--results", default=None, help=f"default {RESULTS.name}")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny run: 2000 training and 500 test images, 1 epoch per phase, "
        "20 latency runs (unless given); results go to the cache unless "
        "--results is given",
    )
    p.add_argument("--verbose", type=int, default=2, choices=[0, 1, 2])
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses ``argv`` and fills in the defaults that depend on ``--quick``."""
    args = parser().parse_args(argv)
    if args.cache_dir is None:
        args.cache_dir = str(default_cache_dir())
    if args.quick and args.results is None:
        args.results = str(Path(args.cache_dir).expanduser() / "quick" / "export.json")
    for name, value in (_QUICK if args.quick else _FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.results = args.results or str(RESULTS)
    for name in ("latency_runs", "calibration_samples", "batch_size"):
        if getattr(args, name) < 1:
            parser().error(f"--{name.replace('_', '-')} must be positive")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the benchmark; returns the records measured in this run."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    command = records.command("export", argv, module=True)
    print(f"$ {command}\n{versions()}", flush=True)
    bench = Bench(args, command)
    if args.part in ("lenet", "all"):
        bench.lenet()
    if args.part in ("resnet", "all"):
        bench.resnet()
    print(f"{len(bench.measured)} new records in {bench.results.path}", flush=True)
    return bench.measured


if __name__ == "__main__":
    main()
