"""Structured vs unstructured pruning of a small residual net at one budget.

The net (`build_model`) is a small Functional model of the kind that global
structured budgets used to wreck: a strided Conv2D stem, a DepthwiseConv2D
block and two SeparableConv2D blocks (one strided) with residual ``Add``s,
BatchNorm after every convolution, global average pooling and two Dense
layers. For each dataset
(MNIST and a CIFAR-10 slice) one dense model is trained and its weights are
cached (``--cache-dir``, default ``runs/structured``); every pruned run starts
from it with the same epochs ``--epochs P R``: ``P`` epochs of reweighted
training (`tf_reweight.Reweight`) and ``R`` of masked retraining after the
hard prune (`tf_reweight.HardPrune`), the same Adam rate and batch size,
and the same reweighting ``--penalty`` (default 1e-5) and ``--eps``
(default 1e-3; records without an ``eps`` field ran with 1e-3). The dense cache
is keyed by every setting that shapes the dense weights (images, epochs,
rate, batch size, seed), so a cache of other settings is never reused.

All runs rank units globally across the pruned kernels (``scope="global"``)
and leave the logits layer dense and uncounted (``skip_last``: pruning its
filters would remove classes), so ``sparsity`` and ``rate`` count the same
kernels for every structure. ``--max-prune`` lists the per-kernel floors
(the largest share of a kernel's units the global ranking may remove) of the
structured runs and ``--unstructured-max-prune`` those of the unstructured
runs; ``default`` passes none, so the library's default applies
(`tf_reweight.core.budget.DEFAULT_MAX_PRUNE` for structured kernels, no floor for
single weights).

Every pruned `fit` ends with `tf_reweight.RecalibrateBatchNorm` on 10,000
training inputs (``"batchnorm": "recalibrated"``), as `tf_reweight.recipes.prune`
does by default. Each record holds the test accuracy and the accuracy on the
training slice, both in inference mode (BatchNorm's moving statistics), the
last epoch's training accuracy as `fit` saw it (batch statistics), the test
accuracy after one more `tf_reweight.recalibrate_batchnorm` on the whole
training slice, the exact sparsity and the units every kernel keeps. Records are
appended to ``--results`` (default ``benchmarks/results/structured.json``)
as soon as they are measured; a record whose key is already there is
skipped, so an interrupted run resumes. Records of older settings stay in
the file marked ``"superseded": true`` and are left out of the printed
table, and their keys are measured again (`benchmarks.records.Store`).
Run (data from ``TF_REWEIGHT_DATA_DIR``):

    python benchmarks/structured.py --datasets mnist --train-limit 20000 \
        --dense-epochs 16 --unstructured-max-prune default,0.9
    python benchmarks/structured.py --datasets cifar10 --dense-epochs 20 \
        --unstructured-max-prune default,0.9
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_reweight as tfr  # noqa: E402
from benchmarks import records  # noqa: E402

HERE = Path(__file__).resolve().parent
STRUCTURES = ("unstructured", "filter", "block:4x4")
KEY_FIELDS = (
    "spare_scale_free",
    "stream_min_keep",
    "dataset",
    "structure",
    "target",
    "max_prune",
    "penalty",
    "eps",
    "epochs",
    "dense_epochs",
    "train_images",
    "test_images",
    "lr",
    "batch_size",
    "seed",
    "batchnorm",
)
DEFAULT = "default"
# Pruned runs end with `tfr.RecalibrateBatchNorm` on this many training inputs.
RECALIBRATE_SAMPLES = 10_000


def _batchnorm(name: str) -> keras.layers.BatchNormalization:
    # Momentum 0.9: with Keras' 0.99 the moving statistics lag the weights
    # of short runs, and inference-mode accuracy falls far below fit's.
    return keras.layers.BatchNormalization(momentum=0.9, name=name)


def build_model(input_shape: tuple[int, ...], classes: int) -> keras.Model:
    """The small residual Functional net of the benchmark (BatchNorm momentum 0.9)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(
        32, 3, strides=2, padding="same", use_bias=False, name="stem"
    )(inputs)
    x = keras.layers.ReLU()(_batchnorm("stem_bn")(x))
    y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = keras.layers.ReLU()(_batchnorm("dw_bn")(y))
    x = keras.layers.Add()([x, y])
    x = keras.layers.SeparableConv2D(
        64, 3, strides=2, padding="same", use_bias=False, name="sep1"
    )(x)
    x = keras.layers.ReLU()(_batchnorm("sep1_bn")(x))
    y = keras.layers.SeparableConv2D(
        64, 3, padding="same", use_bias=False, name="sep2"
    )(x)
    y = keras.layers.ReLU()(_batchnorm("sep2_bn")(y))
    x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="residual_net")


def _compile(model: keras.Model, lr: float) -> None:
    model.compile(
        keras.optimizers.Adam(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _accuracy(model: keras.Model, x, y, batch_size: int) -> float:
    return float(model.evaluate(x, y, batch_size=batch_size, verbose=0)[1])


def _slices(args, dataset: str):
    (x, y), (xt, yt) = tfr.data.load(dataset, args.data_dir)
    return (x[: args.train_limit], y[: args.train_limit]), (
        xt[: args.test_limit],
        yt[: args.test_limit],
    )


def dense_model(args, dataset: str, data) -> tuple[keras.Model, dict]:
    """The dense model of a dataset, trained once and cached."""
    (x, y), (xt, yt) = data
    keras.utils.set_random_seed(args.seed)
    model = build_model(x.shape[1:], int(y.max()) + 1)
    _compile(model, args.lr)
    settings = (len(x), args.dense_epochs, args.lr, args.batch_size, args.seed)
    stem = "_".join(map(str, (dataset, *settings))) + ".weights.h5"
    path = Path(args.cache_dir) / stem
    if path.is_file():
        model.load_weights(path)
    else:
        model.fit(x, y, batch_size=args.batch_size, epochs=args.dense_epochs, verbose=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save_weights(path)
    facts = {
        "test_accuracy": _accuracy(model, xt, yt, args.batch_size),
        "train_accuracy": _accuracy(model, x, y, args.batch_size),
    }
    return model, facts


def kept_units(pruned: keras.Model) -> list[dict]:
    """Units kept and weights of every pruned kernel."""
    rows = []
    for wrapper in tfr.pruning.wrappers(pruned):
        for pk in wrapper.pruned_kernels:
            kernel = pk.canonical()
            kept = wrapper.structure.group_mask(kernel)
            rows.append(
                {
                    "layer": wrapper.name,
                    "kernel": pk.layout.attr,
                    "units": int(kept.size),
                    "kept_units": int(kept.sum()),
                    "weights": int(kernel.size),
                    "nonzeros": int(np.count_nonzero(kernel)),
                }
            )
    return rows


def pruned_run(args, dataset, data, dense, structure, max_prune) -> dict:
    """One pruned run from the dense weights; returns its measured facts."""
    (x, y), (xt, yt) = data
    keras.utils.set_random_seed(args.seed)
    # "default": no override, the library's floor of the structure applies.
    floor = {} if max_prune == DEFAULT else {"max_prune": max_prune}
    pruned = tfr.apply(
        dense,
        structure=structure,
        target=args.target,
        method=tfr.ReweightedGroupPenalty(
            args.penalty, args.eps, spare_scale_free=not args.penalize_scale_free
        ),
        skip_last=True,
        **floor,
    )
    _compile(pruned, args.lr)
    start = time.time()
    history = pruned.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=sum(args.epochs),
        verbose=0,
        callbacks=[
            tfr.Reweight(),
            tfr.HardPrune(args.epochs[0]),
            tfr.RecalibrateBatchNorm(x, RECALIBRATE_SAMPLES, args.batch_size),
        ],
    )
    seconds = time.time() - start
    rep = tfr.report(pruned)
    facts = {
        "test_accuracy": _accuracy(pruned, xt, yt, args.batch_size),
        "train_accuracy": _accuracy(pruned, x, y, args.batch_size),
        "fit_train_accuracy": float(history.history["accuracy"][-1]),
        "sparsity": rep.sparsity,
        "rate": rep.rate,
        "weights": sum(r.weights for r in rep.pruned_rows),
        "nonzeros": sum(r.nonzeros for r in rep.pruned_rows),
        "layers": kept_units(pruned),
        "seconds": round(seconds, 1),
    }
    if args.penalty == "auto":  # the lambda the library set
        facts["penalty_set"] = tfr.pruning.calibrated_penalty(pruned)
    tfr.recalibrate_batchnorm(pruned, x, batch_size=args.batch_size)
    facts["test_accuracy_recalibrated"] = _accuracy(pruned, xt, yt, args.batch_size)
    return facts


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="mnist,cifar10")
    p.add_argument("--structures", default=",".join(STRUCTURES))
    p.add_argument("--target", default="4x", help="a sparsity or a rate 'Nx'")
    p.add_argument(
        "--max-prune",
        default=DEFAULT,
        help="comma-separated floors of the structured runs ('default': no "
        "override, the library's DEFAULT_MAX_PRUNE)",
    )
    p.add_argument(
        "--unstructured-max-prune",
        default=DEFAULT,
        help="comma-separated floors of the unstructured runs ('default': no "
        "override, no floor for single weights)",
    )
    p.add_argument("--penalty", type=records.number_or_auto, default=1e-5)
    p.add_argument(
        "--penalize-scale-free",
        action="store_true",
        help="penalize the filters BatchNorm makes scale-free too (the library "
        "spares them; records say spare_scale_free: false)",
    )
    p.add_argument(
        "--eps",
        type=records.number_or_auto,
        default=1e-3,
        help="reweighting eps, or auto (records without one ran with 1e-3)",
    )
    p.add_argument("--epochs", type=int, nargs=2, default=(3, 3), metavar=("P", "R"))
    p.add_argument("--dense-epochs", type=int, default=12)
    p.add_argument("--train-limit", type=int, default=10_000)
    p.add_argument("--test-limit", type=int, default=2_000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache-dir", default="runs/structured")
    p.add_argument("--results", default=str(HERE / "results" / "structured.json"))
    return p


def _floors(text: str) -> list[float | str]:
    return [DEFAULT if v.strip() == DEFAULT else float(v) for v in text.split(",")]


def table(stored: list[dict]) -> str:
    """A Markdown table of the records that are not superseded."""
    lines = [
        "| dataset | structure | penalty | max_prune | sparsity | test | train "
        "| fit train | test recal. | kept units |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in stored:
        if r.get("superseded"):
            continue
        kept = " ".join(
            f"{row['kept_units']}/{row['units']}" for row in r.get("layers", [])
        )
        lines.append(
            f"| {r['dataset']} | {r['structure']} | {records.label(r['penalty'])} | "
            f"{r.get('max_prune') or ''} | "
            f"{r.get('sparsity', 0.0):.4f} | {100 * r['test_accuracy']:.2f} | "
            f"{100 * r['train_accuracy']:.2f} | "
            f"{100 * r.get('fit_train_accuracy', float('nan')):.2f} | "
            f"{100 * r.get('test_accuracy_recalibrated', float('nan')):.2f} | "
            f"{kept} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    args.target = tfr.parse_target(args.target)
    command = records.command("structured", argv)
    store = records.Store(args.results, KEY_FIELDS)
    done = store.keys()
    structures = [s for s in args.structures.split(",") if s]
    for dataset in args.datasets.split(","):
        data = _slices(args, dataset)
        base = {
            "dataset": dataset,
            "penalty": args.penalty,
            "eps": args.eps,
            "epochs": list(args.epochs),
            "dense_epochs": args.dense_epochs,
            "train_images": len(data[0][1]),
            "test_images": len(data[1][1]),
            "lr": args.lr,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "model": "residual_net",
            "batchnorm": "recalibrated",
        }
        dense = None
        floors = {
            "unstructured": _floors(args.unstructured_max_prune),
            "structured": _floors(args.max_prune),
        }
        jobs = [("dense", None, None)] + [
            (s, args.target, floor)
            for s in structures
            for floor in floors["unstructured" if s == "unstructured" else "structured"]
        ]
        for structure, target, floor in jobs:
            record = {**base, "structure": structure, "target": target}
            if structure != "dense" and args.penalize_scale_free:
                record["spare_scale_free"] = False
            if structure not in ("dense", "unstructured"):
                # The budget's residual-stream floor (records without one
                # kept sqrt(1 - sparsity) of a stream's channels).
                record["stream_min_keep"] = tfr.budget.STREAM_MIN_KEEP
            record["max_prune"] = floor
            if store.key(record) in done:
                continue
            if dense is None:
                dense, dense_facts = dense_model(args, dataset, data)
            facts = (
                dense_facts
                if structure == "dense"
                else pruned_run(args, dataset, data, dense, structure, floor)
            )
            record.update(facts, command=command, **records.stamp())
            store.add(record)
            done.add(store.key(record))
            print(table([record]).splitlines()[-1], flush=True)
    print(table(store.records()))
    print(f"Reproduce: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
