"""The ``tf-reweight robust`` and ``tf-reweight mrs`` subcommands.

``robust``: adversarial pretraining (after an optional clean warm start),
pruning with every epoch trained adversarially (`tf_reweight.robust.mrpf`),
robust evaluation (`tf_reweight.robust.robustness.evaluate_robustness`), the
``.keras`` models and a report (`tf_reweight.cli.reporting.write_report`).
The per-layer ratios are global (ranked across layers), uniform, or
allocated by Module Robustness Sensitivity (``--allocation mrs``, MRPF).

``mrs``: the Module Robustness Sensitivity table of a (robust) dense model as
``mrs.json`` and ``mrs.png``, and the ratios it allocates for ``--target`` as
``ratios.json``.

`tf_reweight.cli.args.add_robust_parsers` adds both to the ``tf-reweight``
subparsers and `run` executes a parsed command. Every option is checked
before any data are loaded or anything is written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tf_reweight.cli import checks

COMMANDS = ("robust", "mrs")

#: Per dataset: L-inf radius, PGD evaluation steps and step size (Madry et al.
#: for MNIST: PGD-40, step 0.01; CIFAR-10: PGD-10, step 2/255).
DATASET_DEFAULTS = {
    "mnist": {"eps": 0.3, "eval_steps": 40, "eval_step_size": 0.01},
    "cifar10": {"eps": 8 / 255, "eval_steps": 10, "eval_step_size": 2 / 255},
}


def run(args: argparse.Namespace) -> dict:
    """Runs a parsed ``robust`` or ``mrs`` command.

    Args:
        args: Parsed arguments of a parser set up by
            `tf_reweight.cli.args.add_robust_parsers`.

    Returns:
        The run's record (also written to the output directory).

    Raises:
        ValueError: For invalid options, a checkpoint that is not a valid
            ``.keras`` file or an output directory that cannot be written,
            before any data is loaded.
    """
    if args.command not in COMMANDS:
        raise ValueError(
            f"Unknown command. Expected one of {COMMANDS}. "
            f"Received: command={args.command!r}"
        )
    _resolve(args)
    return {"robust": robust, "mrs": mrs}[args.command](args)


def _resolve(args) -> None:
    """Fills dataset defaults and checks the options against each other."""
    from tf_reweight.core import budget

    defaults = DATASET_DEFAULTS[args.dataset]
    for name, value in defaults.items():
        if getattr(args, name, value) is None:
            setattr(args, name, value)
    sparsity = budget.parse_target(args.target)
    if args.max_ratio is not None and not sparsity <= args.max_ratio < 1:
        raise ValueError(
            f"argument --max-ratio: expected a ratio in [target, 1) = "
            f"[{sparsity:.4g}, 1). Received: {args.max_ratio}"
        )
    try:
        train_attack(args)
        eval_attack(args)
    except ValueError as error:
        raise ValueError(
            "arguments --attack/--eps/--step-size/--attack-steps/--eval-steps/"
            f"--eval-step-size: {error}"
        ) from error
    if not 0 < args.probe_ratio < 1:
        raise ValueError(
            "argument --probe-ratio: expected a fraction in (0, 1). "
            f"Received: {args.probe_ratio}"
        )


def _check_pruning(args, model) -> None:
    """Checks ``--method``, ``--penalty``, ``--bounded``, ``--structure``,
    ``--target`` and ``--recalibrate-bn`` on the (untrained) dense model."""
    from tf_reweight.cli.common import check_pruning
    from tf_reweight.pruning import batchnorm
    from tf_reweight.robust import mrpf
    from tf_reweight.training import recipes

    bounded = mrpf.bounded_option(args.method, args.bounded)
    try:
        setup = recipes.method_setup(args.method, args.penalty, **bounded)
    except ValueError as error:
        raise ValueError(f"argument --method {args.method}: {error}") from error
    check_pruning(
        model, args.structure, args.target, method=setup.penalty, **setup.apply_kwargs
    )
    if args.recalibrate_bn is not None:
        try:
            batchnorm.require_batchnorm(model)
        except ValueError as error:
            raise ValueError(f"argument --recalibrate-bn: {error}") from error


def _probe_attack(args):
    """The MRS probe: PGD-10 at ``--eps`` (the default step size)."""
    from tf_reweight.robust.attack import Attack

    return Attack(kind="pgd", epsilon=args.eps)


def _mrs_options(args) -> dict:
    """`module_robustness_sensitivity` options of the chosen probe."""
    if args.mode == "prune":
        return {"probe_ratio": args.probe_ratio}
    return {"rho": args.rho} if hasattr(args, "rho") else {}


def train_attack(args):
    """The training `Attack` of ``--attack``, ``--eps``, ``--attack-steps``
    and ``--step-size``."""
    from tf_reweight.robust.attack import Attack

    return Attack(
        kind=args.attack,
        epsilon=args.eps,
        steps=args.attack_steps,
        step_size=args.step_size,
    )


def eval_attack(args):
    """The PGD evaluation `Attack` of ``--eps``, ``--eval-steps`` and
    ``--eval-step-size`` (the MRS probe's too); PGD-10 without them."""
    from tf_reweight.robust.attack import Attack

    return Attack(
        kind="pgd",
        epsilon=args.eps,
        steps=getattr(args, "eval_steps", None) or 10,
        step_size=getattr(args, "eval_step_size", None),
    )


def robust_dense(args, train, out: Path, model=None):
    """The robust dense model: ``--checkpoint``, or clean then adversarial training.

    Args:
        args: Parsed arguments (``--pretrain-epochs`` clean epochs, then
            ``--adv-epochs`` adversarial ones with the training attack).
        train: ``(x, y)`` training arrays.
        out: Where ``dense.keras`` is written.
        model: The untrained (or loaded) model from
            `tf_reweight.cli.common.initial_model`; None builds or loads it here.

    Returns:
        The compiled dense model.
    """
    from tf_reweight.cli.common import dense_model
    from tf_reweight.robust.adversarial import adversarial_pretrain

    model = dense_model(args, train, model)
    if not args.checkpoint and args.adv_epochs:
        attack = train_attack(args)
        print(f"Adversarial pretraining: {args.adv_epochs} epochs, {attack}")
        adversarial_pretrain(
            model,
            train,
            args.adv_epochs,
            attack=attack,
            batch_size=args.batch_size,
            lr=args.lr,
            verbose=args.verbose,
        )
    model.save(out / "dense.keras")
    return model


def _measure(model, test, args) -> dict:
    from tf_reweight.robust.robustness import measure_robustness

    return measure_robustness(
        model, test, eval_attack(args), args.eval_restarts, args.eval_limit
    )


def prune(args, dense, train):
    """Adversarial pruning of ``dense`` as ``args`` say.

    Args:
        args: Parsed ``robust`` arguments (``method``, ``allocation``,
            ``target``, ``structure``, ``penalty``, epochs, attack, MRS
            options, optionally ``method_options``).
        dense: The robust dense model (left unchanged).
        train: ``(x, y)`` training arrays; MRS probes its first
            ``probe_size`` images.

    Returns:
        ``(result, ratios)``: a `recipes.PruneResult` or `mrpf.MRPFResult`,
        and the per-layer ratios (None for the global allocation).
    """
    from tf_reweight.robust import mrpf

    options = {
        "method": args.method,
        "structure": args.structure,
        "penalty": args.penalty,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "verbose": args.verbose,
        "method_options": getattr(args, "method_options", None),
        "recalibrate_bn": getattr(args, "recalibrate_bn", None),
        "bounded": getattr(args, "bounded", None),
    }
    if args.allocation == "global":
        result = mrpf.adversarial_prune(
            dense,
            train,
            args.target,
            phase1_epochs=args.reweight_epochs,
            retrain_epochs=args.retrain_epochs,
            attack=train_attack(args),
            **options,
        )
        return result, None
    result = mrpf.mrpf(
        dense,
        train,
        train[0][: args.probe_size],
        train[1][: args.probe_size],
        args.target,
        train_attack(args),
        probe=_probe_attack(args),
        allocation=args.allocation,
        mode=args.mode,
        finetune_epochs=args.reweight_epochs + args.retrain_epochs,
        phase1_epochs=args.reweight_epochs,
        max_ratio=args.max_ratio,
        mrs_options=_mrs_options(args),
        **options,
    )
    return result, result.ratios


def robust(args) -> dict:
    """``tf-reweight robust``: returns the record written to ``report.json``."""
    import tf_reweight as tfr
    from tf_reweight.cli import reporting
    from tf_reweight.cli.common import initial_model, load_data
    from tf_reweight.robust import mrpf

    out = checks.check_out_dir(args.out)
    model = initial_model(args)
    _check_pruning(args, model)
    start = time.perf_counter()
    train, test = load_data(args)
    out.mkdir(parents=True, exist_ok=True)
    dense = robust_dense(args, train, out, model)
    dense_metrics = _measure(dense, test, args)
    print(f"Dense: {dense_metrics}")
    print(
        f"Robust {args.method} pruning ({args.allocation} ratios): "
        f"{args.structure} {args.target}, {args.reweight_epochs} penalized + "
        f"{args.retrain_epochs} retraining epochs, all adversarial"
    )
    result, ratios = prune(args, dense, train)
    metrics = _measure(result.model, test, args)
    rep = tfr.report(result.model)
    result.model.save(out / "pruned.keras")
    tfr.strip(result.model).save(out / "model.keras")
    print(rep)
    totals = rep.to_dict()
    record = {
        "title": f"Robust {args.method} ({args.allocation}) {args.model} on "
        f"{args.dataset}: {args.structure} {args.target}, eps {args.eps:.4g}",
        "model": args.model,
        "dataset": args.dataset,
        "method": args.method,
        "allocation": args.allocation,
        "bounded": mrpf.bounded_option(args.method, args.bounded).get("bounded"),
        "structure": args.structure,
        "target": args.target,
        "eps": args.eps,
        "train_attack": train_attack(args).label,
        "attack": eval_attack(args).label,
        "dense_accuracy": dense_metrics["accuracy"],
        "dense_robust_accuracy": dense_metrics["robust_accuracy"],
        **metrics,
        "sparsity": rep.sparsity,
        "rate": rep.rate,
        "nonzeros": totals["nonzeros"],
        "weights": totals["weights"],
        "epochs": result.epochs,
        "prune_seconds": round(result.seconds, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    if ratios is not None:
        record["ratios"] = ratios
    marks = {"hard prune": 0 if args.method == "magnitude" else args.reweight_epochs}
    reporting.write_report(out, record, rep, result.history, marks)
    print(
        f"\nClean {metrics['accuracy']:.4f}, PGD {metrics['robust_accuracy']:.4f} "
        f"(dense {dense_metrics['accuracy']:.4f} / "
        f"{dense_metrics['robust_accuracy']:.4f}) at {rep.rate:.1f}x. "
        f"Report: {out / 'report.md'}"
    )
    return record


def mrs(args) -> dict:
    """``tf-reweight mrs``: writes ``mrs.json``, ``mrs.png``, ``ratios.json``."""
    from tf_reweight.cli.common import initial_model, load_data
    from tf_reweight.robust.allocation import mrs_ratios
    from tf_reweight.robust.sensitivity import module_robustness_sensitivity

    out = checks.check_out_dir(args.out)
    model = initial_model(args)
    train, _ = load_data(args)
    out.mkdir(parents=True, exist_ok=True)
    dense = robust_dense(args, train, out, model)
    x, y = train[0][: args.probe_size], train[1][: args.probe_size]
    table = module_robustness_sensitivity(
        dense, x, y, _probe_attack(args), mode=args.mode, **_mrs_options(args)
    )
    ratios = mrs_ratios(table, args.target, max_ratio=args.max_ratio)
    table.to_json(str(out / "mrs.json"))
    table.plot(str(out / "mrs.png"))
    (out / "ratios.json").write_text(json.dumps(ratios, indent=2))
    print(f"{'layer':<28}{'size':>10}{'MRS':>12}{'ratio':>10}")
    for name in table.ranking():
        print(
            f"{name:<28}{table.sizes[name]:>10}{table.scores[name]:>12.4g}"
            f"{ratios[name]:>10.4f}"
        )
    return {
        "target": args.target,
        "eps": args.eps,
        "mode": table.mode,
        "base_loss": table.base_loss,
        "scores": table.scores,
        "sizes": table.sizes,
        "ratios": ratios,
    }
