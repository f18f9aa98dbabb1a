"""The ``tf-reweight`` command.

``tf-reweight compress`` is the main job: pretrain (or load) a dense model,
prune it with reweighted group regularization, retrain with masks, evaluate,
save the `.keras` model, export a sparse int8 `.tflite`, verify it in the
LiteRT interpreter and write ``report.json``, ``report.md`` and plots.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_reweight import cli_robust  # noqa: E402

DEFAULT_TARGET = "50x"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="lenet5", help="model name (tf_reweight.models)")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "cifar10"])
    p.add_argument(
        "--data-dir",
        default=None,
        help="local dataset copies (default: $TF_REWEIGHT_DATA_DIR or tfds)",
    )
    p.add_argument("--checkpoint", default=None, help="a trained dense .keras model")
    p.add_argument("--pretrain-epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-limit",
        type=int,
        default=None,
        help="use only the first N training images",
    )
    p.add_argument("--out", default="runs/compress", help="output directory")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tf-reweight",
        description="Reweighted group-sparsity compression for Keras 3 models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="pretrain, reweight, prune, retrain, export")
    _add_common(c)
    c.add_argument("--structure", default="unstructured")
    c.add_argument(
        "--target",
        default=None,
        help=f"sparsity (0.98) or rate ('100x'); default {DEFAULT_TARGET} (N:M: none)",
    )
    c.add_argument("--penalty", type=float, default=1e-5, help="lambda")
    c.add_argument(
        "--bounded",
        action="store_true",
        help="exempt the groups the target keeps from the penalty (off by default)",
    )
    c.add_argument("--scope", default="global", choices=["global", "layer"])
    c.add_argument("--skip-first", action="store_true")
    c.add_argument("--skip-last", action="store_true")
    c.add_argument("--reweight-epochs", type=int, default=6)
    c.add_argument("--retrain-epochs", type=int, default=6)
    c.add_argument("--no-export", action="store_true", help="skip the TFLite export")
    cli_robust.add_parsers(sub)
    return parser


def _dense_model(args, train):
    import keras

    from tf_reweight import models, recipes

    if args.checkpoint:
        model = keras.saving.load_model(args.checkpoint)
        print(f"Loaded dense checkpoint {args.checkpoint}")
        return recipes.compile_classifier(model, args.lr)
    model = models.get(args.model, input_shape=train[0].shape[1:], num_classes=10)
    recipes.compile_classifier(model, args.lr)
    print(
        f"Pretraining {args.model}: {args.pretrain_epochs} epochs, cosine learning rate"
    )
    schedule = recipes.two_phase_lr(0, args.pretrain_epochs, args.lr)
    model.fit(
        *train,
        batch_size=args.batch_size,
        epochs=args.pretrain_epochs,
        callbacks=[keras.callbacks.LearningRateScheduler(schedule)],
        verbose=args.verbose,
    )
    return model


def _export(plain, out: Path, train, test) -> dict:
    from tflite_export import evaluate_tflite, export

    x_test, y_test = test
    report = export(
        plain,
        str(out / "model_int8.tflite"),
        quantization="int8",
        sparse=True,
        representative_data=train[0][:512],
        sample=x_test[:1000],
    )
    accuracy = evaluate_tflite(report.path, x_test, y_test)
    print(report)
    print(f"TFLite int8 accuracy on the full test set: {accuracy:.4f}")
    return {**report.to_dict(), "tflite_accuracy": accuracy, "text": str(report)}


def compress(args) -> dict:
    """Runs the main job and returns its record."""
    import keras

    import tf_reweight as tfr
    from tf_reweight import data, recipes, reporting

    structure = tfr.structures.get(args.structure)  # fail fast, before any training
    if args.target is None and structure.fixed_sparsity is None:
        args.target = DEFAULT_TARGET
    if args.target is not None:
        try:  # a sparsity such as 0.98 arrives as a string from the command line
            args.target = float(args.target)
        except ValueError:
            pass
        tfr.parse_target(args.target)
    keras.utils.set_random_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train, test = data.load(args.dataset, args.data_dir)
    if args.train_limit:
        train = (train[0][: args.train_limit], train[1][: args.train_limit])
    dense = _dense_model(args, train)
    dense_accuracy = float(dense.evaluate(*test, verbose=0)[1])
    print(f"Dense test accuracy: {dense_accuracy:.4f}")
    dense.save(out / "dense.keras")

    print(
        f"Reweighted pruning: structure={args.structure} target={args.target} "
        f"lambda={args.penalty}: {args.reweight_epochs} reweighted + "
        f"{args.retrain_epochs} masked retraining epochs"
    )
    result = recipes.reweighted_prune(
        dense,
        train,
        structure=args.structure,
        target=args.target,
        penalty=args.penalty,
        reweight_epochs=args.reweight_epochs,
        retrain_epochs=args.retrain_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        scope=args.scope,
        bounded=args.bounded,
        skip_first=args.skip_first,
        skip_last=args.skip_last,
        validation_data=test,  # monitored per epoch for the plot; never used to select
        verbose=args.verbose,
    )
    accuracy = float(result.model.evaluate(*test, verbose=0)[1])
    rep = tfr.report(result.model)
    result.model.save(out / "pruned.keras")
    plain = tfr.strip(result.model)
    plain.save(out / "model.keras")
    print(rep)
    record = {
        "title": f"{args.model} on {args.dataset}: {args.structure} {args.target}",
        "model": args.model,
        "dataset": args.dataset,
        "structure": args.structure,
        "target": args.target,
        "penalty": args.penalty,
        "dense_accuracy": dense_accuracy,
        "accuracy": accuracy,
        "sparsity": rep.sparsity,
        "rate": rep.rate,
        "nonzeros": rep.to_dict()["nonzeros"],
        "weights": rep.to_dict()["weights"],
        "epochs": result.epochs,
        "prune_seconds": round(result.seconds, 1),
    }
    if not args.no_export:
        record["export"] = _export(plain, out, train, test)
    record["total_seconds"] = round(time.perf_counter() - start, 1)
    reporting.write_report(
        out, record, rep, result.history, {"hard prune": args.reweight_epochs}
    )
    print(
        f"\nTest accuracy {accuracy:.4f} (dense {dense_accuracy:.4f}) at "
        f"{rep.rate:.1f}x compression ({rep.sparsity:.2%} sparsity) of the pruned "
        f"kernels, in {record['total_seconds']:.0f} s. Report: {out / 'report.md'}"
    )
    return record


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tf-reweight`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "compress":
            compress(args)
        else:
            cli_robust.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"tf-reweight: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
