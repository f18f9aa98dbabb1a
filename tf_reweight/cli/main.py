"""The ``tf-reweight`` command.

``tf-reweight compress`` is the main job: pretrain (or load) a dense model,
prune it with reweighted group regularization, retrain with masks, evaluate,
save the `.keras` model, export a sparse int8 `.tflite`, verify it in the
LiteRT interpreter and write ``report.json``, ``report.md`` and plots.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_reweight.cli import args as cli_args
from tf_reweight.cli import checks  # noqa: E402
from tf_reweight.cli import robust as cli_robust  # noqa: E402


def initial_model(args):
    """The dense model before any training: ``--checkpoint`` or a new ``--model``.

    Seeds Keras with ``--seed`` first. Loads nothing but the checkpoint.

    Args:
        args: Parsed arguments (``checkpoint``, ``model``, ``dataset``, ``seed``).

    Returns:
        The loaded checkpoint, or the freshly built model.

    Raises:
        ValueError: If the checkpoint is not a valid ``.keras`` file or does
            not take the dataset's images, or the model name is unknown.
    """
    import keras

    from tf_reweight.training import data, models

    keras.utils.set_random_seed(args.seed)
    shape = data.image_shape(args.dataset)
    if not args.checkpoint:
        try:
            return models.get(args.model, input_shape=shape, num_classes=10)
        except ValueError as error:
            raise ValueError(f"argument --model: {error}") from error
    model = checks.load_keras(args.checkpoint, "--checkpoint")
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1 or tuple(inputs[0].shape[1:]) != shape:
        raise ValueError(
            f"argument --checkpoint: {args.checkpoint} takes inputs "
            f"{[tuple(i.shape) for i in inputs]}. Expected one input of shape "
            f"(batch, *{shape}), the images of --dataset {args.dataset}."
        )
    return model


def check_pruning(model, structure, target, **options) -> None:
    """Runs `tf_reweight.apply` once on ``model``: structure and target fit it.

    Its warnings (kernels left dense) are shown; a structure that fits no
    kernel at all is refused.

    Args:
        model: The dense model the run will prune (left unchanged).
        structure: ``--structure``.
        target: ``--target``.
        **options: Other `tf_reweight.apply` arguments.

    Raises:
        ValueError: Naming ``--structure`` and ``--target``, if they do not
            fit the model.
    """
    import tf_reweight as tfr

    try:
        tfr.apply(model, structure, target, **options)
    except ValueError as error:
        raise ValueError(
            f"arguments --structure {structure} --target {target}: {error}"
        ) from error


def load_data(args):
    """Loads ``--dataset``, keeps the first ``--train-limit`` training images.

    Then seeds Keras with ``--seed`` again, so that training does not depend
    on the checks that ran before.
    """
    import keras

    from tf_reweight.training import data

    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise ValueError(
            f"argument --data-dir: no such directory. Expected the directory of "
            f"the local dataset copies. Received: {args.data_dir}"
        )
    train, test = data.load(args.dataset, args.data_dir)
    if args.train_limit:
        train = (train[0][: args.train_limit], train[1][: args.train_limit])
    keras.utils.set_random_seed(args.seed)
    return train, test


def _dense_model(args, train, model=None):
    """Compiles ``model`` (default `initial_model`); trains it unless loaded."""
    import keras

    from tf_reweight.training import recipes

    model = initial_model(args) if model is None else model
    recipes.compile_classifier(model, args.lr)
    if args.checkpoint:
        print(f"Loaded dense checkpoint {args.checkpoint}")
        return model
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
    import tf_reweight as tfr
    from tf_reweight.cli import reporting
    from tf_reweight.training import recipes

    # Every check runs before data are loaded or anything is written.
    if (
        args.target is None
        and tfr.structures.get(args.structure).fixed_sparsity is None
    ):
        args.target = cli_args.DEFAULT_TARGET
    out = checks.check_out_dir(args.out)
    model = initial_model(args)
    check_pruning(
        model,
        args.structure,
        args.target,
        penalty=args.penalty,
        bounded=args.bounded,
        scope=args.scope,
        skip_first=args.skip_first,
        skip_last=args.skip_last,
    )
    start = time.perf_counter()
    train, test = load_data(args)
    out.mkdir(parents=True, exist_ok=True)
    dense = _dense_model(args, train, model)
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
    """Entry point of the ``tf-reweight`` console script.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success; 2 for an invalid argument, input file or output
        directory, reported as one ``error:`` line on stderr (nothing written).

    Example:
    >>> main(["compress", "--target", "16x", "--out", "runs/lenet5"])
    """
    try:
        args = cli_args.parser().parse_args(argv)
    except SystemExit as exit:  # argparse has printed usage and the error
        return exit.code if isinstance(exit.code, int) else 2
    try:
        if args.command == "compress":
            compress(args)
        else:
            cli_robust.run(args)
    except (ValueError, OSError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"tf-reweight: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
