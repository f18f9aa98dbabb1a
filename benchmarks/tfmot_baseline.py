"""Baseline: TensorFlow Model Optimization's gradual magnitude pruning of LeNet-5.

`tensorflow_model_optimization` (tfmot) needs the legacy ``tf_keras``, so this
script runs in a process of its own with ``TF_USE_LEGACY_KERAS=1`` set before
TensorFlow is imported; `tf_reweight` itself never imports tfmot.
`benchmarks/frontier.py` starts it with the dense LeNet-5 weights it trained
(an ``.npz`` of Keras 3 ``model.get_weights()``, in layer order) and the same
data, epoch budget and learning rates as the other methods:

1. build the Caffe LeNet-5 of `tf_reweight.models.lenet5` in ``tf_keras`` and
   load the dense weights;
2. wrap it with ``prune_low_magnitude`` and a ``PolynomialDecay`` schedule
   from sparsity 0 to the target over the phase-1 epochs, then keep training
   with the masks for the retraining epochs (``UpdatePruningStep`` drives the
   masks). tfmot prunes every layer to the same sparsity; ``--layer-sparsity``
   gives each of the four layers its own target instead (the frontier passes
   the allocation of a global magnitude ranking of the dense weights);
3. strip the wrappers, evaluate on the whole test set and print ONE JSON line
   with the accuracy, the nonzero weights of the four pruned kernels (biases
   excluded), the seconds of the `fit`, the epochs and the library versions.

Usage:
    python benchmarks/tfmot_baseline.py --weights dense.npz --data mnist.npz \\
        --target 0.98 --epochs 4 4

``--data`` is an ``.npz`` with ``x_train``, ``y_train``, ``x_test`` and
``y_test`` (uint8 images are divided by 255).
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

# (layer class, name, arguments) of the Caffe LeNet-5 of `tf_reweight.models`.
_LENET5 = (
    ("Conv2D", "conv1", {"filters": 20, "kernel_size": 5}),
    ("MaxPooling2D", "pool1", {"pool_size": 2}),
    ("Conv2D", "conv2", {"filters": 50, "kernel_size": 5}),
    ("MaxPooling2D", "pool2", {"pool_size": 2}),
    ("Flatten", "flatten", {}),
    ("Dense", "fc1", {"units": 500, "activation": "relu"}),
    ("Dense", "logits", {"units": 10}),
)


def lenet5(tf_keras):
    """Caffe LeNet-5 in ``tf_keras``, layer for layer `tf_reweight.models.lenet5`."""
    layers = [
        getattr(tf_keras.layers, cls)(name=name, **kwargs)
        for cls, name, kwargs in _LENET5
    ]
    return tf_keras.Sequential(
        [tf_keras.Input((28, 28, 1), name="image"), *layers], name="lenet5"
    )


def _images(x: np.ndarray) -> np.ndarray:
    x = x.reshape((-1, 28, 28, 1))
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help=".npz of the dense weights")
    p.add_argument("--data", required=True, help=".npz with the train/test arrays")
    p.add_argument("--target", type=float, required=True, help="sparsity in (0, 1)")
    p.add_argument(
        "--layer-sparsity",
        default=None,
        help="comma-separated sparsity of conv1, conv2, fc1 and logits "
        "(default: --target for every layer)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        nargs=2,
        default=(4, 4),
        metavar=("PRUNE", "RETRAIN"),
        help="epochs of the sparsity ramp, then of retraining with masks",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--lrs",
        default=None,
        help="comma-separated learning rate per epoch (default: --lr throughout)",
    )
    p.add_argument("--frequency", type=int, default=100, help="steps between prunes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=0, choices=[0, 1, 2])
    return p


def run(args) -> dict:
    """Prunes, retrains and evaluates; returns the JSON record."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    if not 0.0 < args.target < 1.0 or args.epochs[0] < 1 or args.epochs[1] < 0:
        raise ValueError(
            "Expected a target sparsity in (0, 1), at least one pruning epoch and "
            f"retraining epochs >= 0. Received: target={args.target}, "
            f"epochs={list(args.epochs)}"
        )
    tf_keras.utils.set_random_seed(args.seed)
    with np.load(args.data) as f:
        x, y = _images(f["x_train"]), f["y_train"].astype(np.int64)
        x_test, y_test = _images(f["x_test"]), f["y_test"].astype(np.int64)
    with np.load(args.weights) as f:
        weights = [f[f"arr_{i}"] for i in range(len(f.files))]
    model = lenet5(tf_keras)
    model.set_weights(weights)

    epochs = sum(args.epochs)
    lrs = [float(v) for v in args.lrs.split(",")] if args.lrs else [args.lr] * epochs
    ramp = args.epochs[0] * math.ceil(len(x) / args.batch_size)
    frequency = min(args.frequency, ramp)
    sparsity = tfmot.sparsity.keras

    def prune(layer, target):
        schedule = sparsity.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=target,
            begin_step=0,
            end_step=ramp // frequency * frequency,  # the last prune hits target
            frequency=frequency,
        )
        return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule)

    if args.layer_sparsity:
        kernels = [layer.name for layer in model.layers if hasattr(layer, "kernel")]
        values = [float(v) for v in args.layer_sparsity.split(",")]
        targets = dict(zip(kernels, values, strict=True))
        pruned = tf_keras.models.clone_model(
            model,
            clone_function=lambda layer: (
                prune(layer, targets[layer.name])
                if targets.get(layer.name, 0.0) > 0.0
                else layer
            ),
        )
    else:
        pruned = prune(model, args.target)
    pruned.compile(
        optimizer=tf_keras.optimizers.Adam(lrs[0]),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callbacks = [
        sparsity.UpdatePruningStep(),
        tf_keras.callbacks.LearningRateScheduler(lambda epoch: lrs[epoch]),
    ]
    start = time.perf_counter()
    pruned.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=epochs,
        callbacks=callbacks,
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - start
    plain = sparsity.strip_pruning(pruned)
    plain.compile(
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    accuracy = float(plain.evaluate(x_test, y_test, batch_size=1000, verbose=0)[1])
    kernels = [
        layer.kernel.numpy() for layer in plain.layers if hasattr(layer, "kernel")
    ]
    return {
        "accuracy": accuracy,
        "nonzeros": int(sum(np.count_nonzero(k) for k in kernels)),
        "weights": int(sum(k.size for k in kernels)),
        "seconds": round(seconds, 2),
        "epochs": epochs,
        "versions": {
            "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__,
            "tfmot": tfmot.__version__,
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Prints the record as one JSON line."""
    args = _parser().parse_args(argv)
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
