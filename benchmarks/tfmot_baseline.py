"""Baseline: TensorFlow Model Optimization's gradual magnitude pruning.

`tensorflow_model_optimization` (tfmot) needs the legacy ``tf_keras``, so this
script runs in a process of its own with ``TF_USE_LEGACY_KERAS=1`` set before
TensorFlow is imported; `tf_reweight` itself never imports tfmot.
`benchmarks/frontier.py` starts it with the dense weights it trained (an
``.npz`` of Keras 3 ``model.get_weights()``, in layer order) and the same
data, epoch budget and learning rates as the other methods:

1. build the model (``--model``: the Caffe LeNet-5 of
   `tfr.models.lenet5` or the ResNet-20 of `tfr.models.resnet20`)
   in ``tf_keras``, layer for layer and with the same layer names, and load
   the dense weights with ``set_weights``; with ``--check-logits`` (an
   ``.npz`` of ``images`` and the Keras 3 ``logits``) stop with an error
   unless the loaded model gives the same logits;
2. wrap the pruned layers with ``prune_low_magnitude`` and a
   ``PolynomialDecay`` schedule from sparsity 0 to the target over the
   phase-1 epochs, then keep training with the masks for the retraining
   epochs (``UpdatePruningStep`` drives the masks). The pruned layers are
   ``--layers`` (default: every layer with a kernel), all at sparsity
   ``--target`` unless ``--layer-sparsity`` gives each its own (the frontier
   passes the allocation of a global magnitude ranking of the dense weights);
3. strip the wrappers, evaluate on the whole test set and print ONE JSON line
   with the accuracy, the weights and nonzero weights of the pruned kernels
   (biases and BatchNorm excluded), the seconds of the `fit`, the epochs and
   the library versions.

Usage:
    python benchmarks/tfmot_baseline.py --weights dense.npz --data mnist.npz \\
        --target 0.98 --epochs 4 4
    python benchmarks/tfmot_baseline.py --model resnet20 --weights dense.npz \\
        --data cifar10.npz --target 0.75 --layers stage1_block1_conv1,...
    python benchmarks/tfmot_baseline.py --model resnet20 --weights dense.npz \\
        --check-logits reference.npz      # only the loading check

``--data`` is an ``.npz`` with ``x_train``, ``y_train``, ``x_test`` and
``y_test`` (uint8 images are divided by 255; 28x28x1 for LeNet-5, 32x32x3
for ResNet-20).
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

# (layer class, name, arguments) of the Caffe LeNet-5 of `tf_reweight.training.models`.
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
    """Caffe LeNet-5 in ``tf_keras``, layer for layer `tfr.models.lenet5`."""
    layers = [
        getattr(tf_keras.layers, cls)(name=name, **kwargs)
        for cls, name, kwargs in _LENET5
    ]
    return tf_keras.Sequential(
        [tf_keras.Input((28, 28, 1), name="image"), *layers], name="lenet5"
    )


def resnet20(tf_keras, num_classes: int = 10):
    """ResNet-20 in ``tf_keras``, layer for layer `tfr.models.resnet20`.

    Same layers, names and creation order as ``tfr.models._cifar_resnet``
    (stem 16, stages of 16, 32 and 64 filters, 3 basic blocks each, 1x1
    projection shortcuts where the shape changes), so the Keras 3
    ``get_weights()`` list loads with ``set_weights``.
    """
    L = tf_keras.layers

    def conv_bn(x, filters, size, strides, conv, bn):
        x = L.Conv2D(filters, size, strides, "same", use_bias=False, name=conv)(x)
        return L.BatchNormalization(name=bn)(x)

    inputs = tf_keras.Input((32, 32, 3), name="image")
    x = L.ReLU(name="relu1")(conv_bn(inputs, 16, 3, 1, "conv1", "bn1"))
    for s, filters in enumerate((16, 32, 64), start=1):
        for b in range(1, 4):
            name, strides = f"stage{s}_block{b}", 2 if s > 1 and b == 1 else 1
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                conv, bn = f"{name}_shortcut_conv", f"{name}_shortcut_bn"
                shortcut = conv_bn(x, filters, 1, strides, conv, bn)
            x = conv_bn(x, filters, 3, strides, f"{name}_conv1", f"{name}_bn1")
            x = L.ReLU(name=f"{name}_relu1")(x)
            x = conv_bn(x, filters, 3, 1, f"{name}_conv2", f"{name}_bn2")
            x = L.Add(name=f"{name}_add")([x, shortcut])
            x = L.ReLU(name=f"{name}_relu2")(x)
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = L.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, outputs, name="resnet20")


MODELS = {"lenet5": lenet5, "resnet20": resnet20}


def _images(x: np.ndarray, shape) -> np.ndarray:
    x = x.reshape((-1, *shape))
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x


def load_model(args):
    """Builds ``--model`` in ``tf_keras`` and loads ``--weights`` into it.

    With ``--check-logits``, raises `ValueError` unless the model's logits on
    the reference images match the reference logits; returns the model and
    the largest absolute difference (None without a check).
    """
    import tf_keras

    model = MODELS[args.model](tf_keras)
    with np.load(args.weights) as f:
        model.set_weights([f[f"arr_{i}"] for i in range(len(f.files))])
    if not args.check_logits:
        return model, None
    with np.load(args.check_logits) as f:
        images, expected = f["images"], f["logits"]
    logits = model.predict(_images(images, model.input_shape[1:]), verbose=0)
    diff = float(np.max(np.abs(logits - expected)))
    scale = max(float(np.max(np.abs(expected))), 1.0)
    if not diff <= 1e-4 * scale:
        raise ValueError(
            f"The tf_keras {args.model} does not reproduce the Keras 3 logits of "
            f"{args.check_logits}: max |difference| = {diff:.3g} (logits up to "
            f"{scale:.3g}). The weights were loaded into the wrong layers."
        )
    return model, diff


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lenet5", choices=sorted(MODELS))
    p.add_argument("--weights", required=True, help=".npz of the dense weights")
    p.add_argument(
        "--check-logits",
        default=None,
        help=".npz of 'images' and their Keras 3 'logits': check the loaded "
        "weights against them (alone, without --data: only the check)",
    )
    p.add_argument("--data", default=None, help=".npz with the train/test arrays")
    p.add_argument("--target", type=float, default=None, help="sparsity in (0, 1)")
    p.add_argument(
        "--layers",
        default=None,
        help="comma-separated names of the layers to prune and count "
        "(default: every layer with a kernel)",
    )
    p.add_argument(
        "--layer-sparsity",
        default=None,
        help="comma-separated sparsity of each of --layers, in order (default: "
        "--target for every layer); LeNet-5 without --layers: conv1, conv2, "
        "fc1 and logits",
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


def _targets(args, model) -> dict[str, float]:
    """Sparsity of each pruned layer, by name (the counted layers too)."""
    kernels = [layer.name for layer in model.layers if hasattr(layer, "kernel")]
    names = kernels if args.layers is None else _split(args.layers)
    unknown = sorted(set(names) - set(kernels))
    if unknown:
        raise ValueError(
            f"--layers names layers without a kernel. Expected some of {kernels}. "
            f"Received: {unknown}"
        )
    if args.layer_sparsity is None:
        return dict.fromkeys(names, args.target)
    values = [float(v) for v in _split(args.layer_sparsity)]
    if len(values) != len(names):
        raise ValueError(
            f"--layer-sparsity needs one value per pruned layer ({len(names)}: "
            f"{names}). Received: {len(values)} values"
        )
    return dict(zip(names, values, strict=True))


def _split(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def run(args) -> dict:
    """Prunes, retrains and evaluates; returns the JSON record."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    tf_keras.utils.set_random_seed(args.seed)
    model, check = load_model(args)
    if args.data is None:  # only the loading check
        return {"model": args.model, "check_max_abs_diff": check}
    if (
        args.target is None
        or not 0.0 < args.target < 1.0
        or args.epochs[0] < 1
        or args.epochs[1] < 0
    ):
        raise ValueError(
            "Expected a target sparsity in (0, 1), at least one pruning epoch and "
            f"retraining epochs >= 0. Received: target={args.target}, "
            f"epochs={list(args.epochs)}"
        )
    shape = model.input_shape[1:]
    with np.load(args.data) as f:
        x, y = _images(f["x_train"], shape), f["y_train"].astype(np.int64)
        x_test, y_test = _images(f["x_test"], shape), f["y_test"].astype(np.int64)
    targets = _targets(args, model)

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

    if args.layers is None and args.layer_sparsity is None:
        pruned = prune(model, args.target)
    else:
        pruned = tf_keras.models.clone_model(
            model,
            clone_function=lambda layer: (
                prune(layer, targets[layer.name])
                if targets.get(layer.name, 0.0) > 0.0
                else layer
            ),
        )
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
    kernels = [plain.get_layer(name).kernel.numpy() for name in targets]
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
        **({} if check is None else {"check_max_abs_diff": check}),
    }


def main(argv: list[str] | None = None) -> int:
    """Prints the record as one JSON line."""
    args = _parser().parse_args(argv)
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
