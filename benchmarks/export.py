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

This module holds the command line; the data and the trained models are in
`benchmarks/export_train.py`, the exports, measurements and records in
`benchmarks/export_measure.py`.

Example:

```
python -m benchmarks.export --part lenet
python -m benchmarks.export --part resnet --cifar-epochs 3,2,2
python -m benchmarks.export --quick   # minutes: tiny slices, results in the cache
```
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import records  # noqa: E402
from benchmarks.export_measure import METHODS, Bench, versions  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "export.json"


def default_cache_dir() -> Path:
    """``$TF_REWEIGHT_BENCH_CACHE`` or ``~/.cache/tf_reweight/bench``."""
    return Path(
        os.environ.get("TF_REWEIGHT_BENCH_CACHE", "~/.cache/tf_reweight/bench")
    ).expanduser()


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
