"""The command-line arguments of ``tf-reweight``.

`parser` builds the parser of ``compress``, ``robust`` and ``mrs``; the
``robust`` and ``mrs`` subcommands come from `add_robust_parsers`. Numeric
options are converted by the ``type=`` functions of `tf_reweight.cli.checks`
(which defer to `tf_reweight.core.checks`), so a bad value is refused before
anything runs.
"""

from __future__ import annotations

import argparse

from tf_reweight.cli import checks
from tf_reweight.training import plans

DEFAULT_TARGET = "50x"
ALLOCATIONS = ("global", "uniform", "mrs")
#: The ``compress`` epochs (reweighted, retraining) of the plans whose own the
#: command does not use: the default plan keeps the command's 6 + 6.
COMPRESS_EPOCHS = {"default": (6, 6)}


def compress_epochs(args: argparse.Namespace) -> tuple[int, int]:
    """The reweighted and retraining epochs of a ``compress`` run.

    ``--reweight-epochs`` and ``--retrain-epochs`` when given, else the
    plan's (`COMPRESS_EPOCHS` for ``--schedule default``: 6 + 6).

    Args:
        args: The parsed ``compress`` arguments.

    Returns:
        ``(reweight_epochs, retrain_epochs)``.

    Example:
    >>> compress_epochs(parser().parse_args(["compress", "--schedule", "paper"]))
    (150, 90)
    """
    plan = plans.get_plan(args.schedule)
    default = COMPRESS_EPOCHS.get(plan.name, (plan.phase1_epochs, plan.retrain_epochs))
    given = (args.reweight_epochs, args.retrain_epochs)
    return tuple(d if g is None else g for g, d in zip(given, default, strict=True))


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="lenet5", help="model name (tf_reweight.training.models)"
    )
    p.add_argument("--dataset", default="mnist", choices=["mnist", "cifar10"])
    p.add_argument(
        "--data-dir",
        default=None,
        help="local dataset copies (default: $TF_REWEIGHT_DATA_DIR or tfds)",
    )
    p.add_argument("--checkpoint", default=None, help="a trained dense .keras model")
    p.add_argument("--pretrain-epochs", type=checks.non_negative_int, default=8)
    p.add_argument("--batch-size", type=checks.positive_int, default=128)
    p.add_argument("--lr", type=checks.positive_float, default=1e-3)
    p.add_argument("--seed", type=checks.non_negative_int, default=0)
    p.add_argument(
        "--train-limit",
        type=checks.positive_int,
        default=None,
        help="use only the first N training images",
    )
    p.add_argument("--out", default="runs/compress", help="output directory")
    p.add_argument(
        "--verbose",
        type=int,
        default=1,
        choices=[0, 1, 2],
        help="Keras verbosity; 2 also shows TensorFlow's native log lines",
    )


def parser() -> argparse.ArgumentParser:
    """The parser of ``tf-reweight`` and its ``compress``, ``robust`` and ``mrs``.

    Returns:
        An `argparse.ArgumentParser`; every numeric option is checked by its
        ``type=`` (`tf_reweight.cli.checks`).

    Example:
    >>> args = parser().parse_args(["compress", "--target", "16x"])
    """
    top = argparse.ArgumentParser(
        prog="tf-reweight",
        description="Reweighted group-sparsity compression for Keras 3 models.",
    )
    sub = top.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="pretrain, reweight, prune, retrain, export")
    _add_common(c)
    c.add_argument("--structure", type=checks.structure, default="unstructured")
    c.add_argument(
        "--target",
        type=checks.target,
        default=None,
        help=f"sparsity (0.98) or rate ('100x'); default {DEFAULT_TARGET} (N:M: none)",
    )
    c.add_argument(
        "--penalty",
        type=checks.non_negative_float_or_auto,
        default="auto",
        help="lambda, or auto (the default: set from the first batch's loss)",
    )
    c.add_argument(
        "--reweight-eps",
        type=checks.positive_float_or_auto,
        default=None,
        help="eps of alpha = 1 / (||W_g|| + eps), or auto (the default)",
    )
    c.add_argument(
        "--bounded",
        action="store_true",
        help="exempt the groups the target keeps from the penalty (off by default)",
    )
    c.add_argument("--scope", default="global", choices=["global", "layer"])
    c.add_argument("--skip-first", action="store_true")
    c.add_argument("--skip-last", action="store_true")
    c.add_argument(
        "--schedule",
        default="default",
        choices=list(plans.PLANS),
        help="training plan (tf_reweight.training.plans): 'paper' runs 150 "
        "reweighted epochs, alpha refreshed and the learning rate restarted "
        "every 10, then 90 retraining epochs",
    )
    c.add_argument(
        "--reweight-epochs",
        type=checks.non_negative_int,
        default=None,
        help="reweighted epochs (default: the schedule's; 6 for 'default')",
    )
    c.add_argument(
        "--retrain-epochs",
        type=checks.non_negative_int,
        default=None,
        help="masked retraining epochs (default: the schedule's; 6 for 'default')",
    )
    c.add_argument("--no-export", action="store_true", help="skip the TFLite export")
    c.add_argument(
        "--per-tensor-dense",
        action="store_true",
        help="quantize Dense weights with one scale per tensor (smaller file: no "
        "scale and zero point per output unit)",
    )
    add_robust_parsers(sub)
    return top


def _add_shared(p: argparse.ArgumentParser, out: str) -> None:
    _add_common(p)
    p.set_defaults(out=out, pretrain_epochs=1)
    p.add_argument(
        "--adv-epochs",
        type=checks.non_negative_int,
        default=3,
        help="adversarial pretraining epochs after the clean ones "
        "(--pretrain-epochs); ignored with --checkpoint",
    )
    p.add_argument(
        "--eps",
        type=checks.non_negative_float,
        default=None,
        help="L-inf radius, e.g. 0.3 or 8/255 (default: 0.3 MNIST, 8/255 CIFAR-10)",
    )
    p.add_argument("--attack", default="pgd", choices=["pgd", "fgsm"])
    p.add_argument(
        "--attack-steps",
        type=checks.positive_int,
        default=7,
        help="PGD training steps",
    )
    p.add_argument("--step-size", type=checks.positive_float, default=None)
    p.add_argument(
        "--target", type=checks.target, default="16x", help="sparsity (0.9375) or rate"
    )
    p.add_argument(
        "--max-ratio",
        type=checks.fraction,
        default=None,
        help="highest per-layer sparsity of the MRS allocation "
        "(default: 1 - (1 - target) / 4)",
    )
    p.add_argument(
        "--mode",
        default="prune",
        choices=["prune", "perturb"],
        help="MRS probe: magnitude-prune half a layer, or perturb its weights",
    )
    p.add_argument(
        "--probe-size", type=checks.positive_int, default=256, help="MRS probe images"
    )
    p.add_argument(
        "--probe-ratio",
        type=checks.fraction,
        default=0.5,
        help="fraction of each layer the MRS pruning probe zeroes",
    )


def add_robust_parsers(subparsers) -> None:
    """Adds the ``robust`` and ``mrs`` subcommands.

    Args:
        subparsers: The object returned by `argparse.ArgumentParser.add_subparsers`
            (with ``dest="command"``).

    Example:
    >>> parser = argparse.ArgumentParser(prog="tf-reweight")
    >>> add_robust_parsers(parser.add_subparsers(dest="command"))
    >>> tf_reweight.cli.robust.run(parser.parse_args(["mrs", "--target", "16x"]))
    """
    r = subparsers.add_parser(
        "robust",
        help="adversarial pretraining, robust pruning and retraining, PGD evaluation",
    )
    _add_shared(r, "runs/robust")
    r.add_argument(
        "--method", default="reweighted", help="reweighted, admm, group_lasso, ..."
    )
    r.add_argument("--allocation", default="global", choices=ALLOCATIONS)
    r.add_argument("--structure", type=checks.structure, default="unstructured")
    r.add_argument(
        "--penalty",
        type=checks.non_negative_float,
        default=None,
        help="default per method",
    )
    r.add_argument(
        "--bounded",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bounded reweighting (default: on for --method reweighted)",
    )
    r.add_argument(
        "--reweight-epochs",
        type=checks.non_negative_int,
        default=2,
        help="penalized epochs",
    )
    r.add_argument("--retrain-epochs", type=checks.non_negative_int, default=2)
    r.add_argument(
        "--eval-steps", type=checks.positive_int, default=None, help="PGD steps"
    )
    r.add_argument("--eval-step-size", type=checks.positive_float, default=None)
    r.add_argument("--eval-restarts", type=checks.positive_int, default=1)
    r.add_argument(
        "--recalibrate-bn",
        type=checks.positive_int,
        default=None,
        metavar="N",
        help="after retraining, recompute BatchNorm statistics on N clean "
        "training images (`tf_reweight.recalibrate_batchnorm`)",
    )
    r.add_argument(
        "--eval-limit",
        type=checks.positive_int,
        default=2000,
        help="attack only the first N test images (clean accuracy uses all)",
    )
    m = subparsers.add_parser(
        "mrs", help="Module Robustness Sensitivity table, plot and ratios"
    )
    _add_shared(m, "runs/mrs")
    m.add_argument(
        "--rho",
        type=checks.positive_float,
        default=0.05,
        help="relative perturbation",
    )
