"""The ``tf-reweight`` command.

``tf-reweight compress`` is the main job: pretrain (or load) a dense model,
prune it with reweighted group regularization, retrain with masks, evaluate,
save the `.keras` model, export a sparse int8 `.tflite`, verify it in the
LiteRT interpreter and write ``report.json``, ``report.md`` and plots.
The ``robust`` and ``mrs`` subcommands run in `tf_reweight.cli.robust`; the
steps all of them share are in `tf_reweight.cli.common`. The command is also
``python -m tf_reweight.cli``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tf_reweight.cli import args as cli_args
from tf_reweight.cli import checks, common
from tf_reweight.cli import robust as cli_robust
from tf_reweight.core import backend_support


def _export(plain, out: Path, train, test, per_channel_dense: bool) -> dict:
    from tflite_export import evaluate_tflite, export

    x_test, y_test = test
    report = export(
        plain,
        str(out / "model_int8.tflite"),
        quantization="int8",
        # The sparse file always: a pruned job ships its small file, and the
        # choice never rests on timings of a busy machine (sparse="auto" does).
        sparse=True,
        representative_data=train[0][:512],
        sample=x_test[:1000],
        per_channel_dense=per_channel_dense,
    )
    accuracy = evaluate_tflite(report.path, x_test, y_test)
    print(report)
    print(f"TFLite int8 accuracy on the full test set: {accuracy:.4f}")
    return {**report.to_dict(), "tflite_accuracy": accuracy, "text": str(report)}


def compress(args) -> dict:
    """Runs ``tf-reweight compress``.

    Args:
        args: The parsed ``compress`` arguments (`tf_reweight.cli.args.parser`).

    Returns:
        The run's record, also written to ``report.json`` in ``--out``.

    Raises:
        ValueError: For an option that does not fit the model or data,
            before any data are loaded or anything is written.
    """
    import tf_reweight as tfr
    from tf_reweight.cli import reporting
    from tf_reweight.core import presets
    from tf_reweight.training import plans, recipes

    # Every check runs before data are loaded or anything is written.
    if args.target is None and presets.fixed_sparsity(args.structure) is None:
        args.target = cli_args.DEFAULT_TARGET
    args.reweight_epochs, args.retrain_epochs = cli_args.compress_epochs(args)
    plans.get_plan(args.schedule).stage_rates(args.target, args.reweight_epochs)
    out = checks.check_out_dir(args.out)
    eps = {} if args.reweight_eps is None else {"eps": args.reweight_eps}
    model = common.initial_model(args)
    common.check_pruning(
        model,
        args.structure,
        args.target,
        penalty=args.penalty,
        bounded=args.bounded,
        scope=args.scope,
        skip_first=args.skip_first,
        skip_last=args.skip_last,
        **eps,
    )
    start = time.perf_counter()
    train, test = common.load_data(args)
    out.mkdir(parents=True, exist_ok=True)
    dense = common.dense_model(args, train, model)
    dense_accuracy = float(dense.evaluate(*test, verbose=0)[1])
    print(f"Dense test accuracy: {dense_accuracy:.4f}")
    dense.save(out / "dense.keras")

    plan = "" if args.schedule == "default" else f" ({args.schedule} schedule)"
    print(
        f"Reweighted pruning: structure={args.structure} target={args.target} "
        f"lambda={args.penalty}: {args.reweight_epochs} reweighted + "
        f"{args.retrain_epochs} masked retraining epochs{plan}"
    )
    result = recipes.reweighted_prune(
        dense,
        train,
        structure=args.structure,
        target=args.target,
        penalty=args.penalty,
        reweight_epochs=args.reweight_epochs,
        retrain_epochs=args.retrain_epochs,
        schedule=args.schedule,
        batch_size=args.batch_size,
        lr=args.lr,
        scope=args.scope,
        bounded=args.bounded,
        skip_first=args.skip_first,
        skip_last=args.skip_last,
        **eps,
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
        "penalty": result.penalty,
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
        record["export"] = _export(
            plain, out, train, test, per_channel_dense=not args.per_tensor_dense
        )
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
    if args.verbose == 2:  # the most verbose run also shows TensorFlow's logs
        backend_support.show_native_logs()
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
