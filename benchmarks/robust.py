"""Robust compression: accuracy and PGD accuracy of adversarially pruned models.

Three suites, each starting every method from the same adversarially trained
dense checkpoint (cached outside the repository under ``--cache-dir``,
default ``~/.cache/tf_reweight/bench``) with the same epoch budget
``--epochs P R`` (P penalized epochs, R masked retraining epochs, all of
them adversarial; `tf_reweight.robust.mrpf.adversarial_prune`):

- ``mnist``: LeNet-5, eps 0.3, PGD-7 adversarial training (step
  ``2.5 * eps / 7``), PGD-40 evaluation with step 0.01;
- ``cifar10``: ResNet-20, eps 8/255, FGSM-RS adversarial training (Wong et
  al., step ``1.25 * eps``), PGD-10 evaluation with step 2/255;
- ``cifar10-paper``: the paper scale, for one GPU: ResNet-18 (11.2M prunable
  weights) on all 50,000 training images, the attacks of ``cifar10``, 15
  dense FGSM-RS epochs, 3 + 3 epochs per method, PGD-10 on the first 2,000
  test images, batch 500 (50,000 = 100 x 500: no ragged last batch for XLA
  to compile again), mixed precision (``mixed_bfloat16``) and XLA-compiled
  steps; methods ``reweighted_auto`` against ``admm`` (global ranking) and
  ``mrs_reweighted_auto`` against ``uniform_reweighted_auto``. Records go
  to ``benchmarks/results/robust_paper.json``.

Time of ``cifar10-paper`` on one H200 (an estimate: the suite has not run on
a GPU yet): an FGSM-RS epoch of ResNet-18 on 50,000 images costs about 7
forward passes (0.56 GMAC each) per image, roughly 8-15 s in bfloat16 with
XLA (10 s planned); each `fit` adds about 30 s of XLA compilation; each pruning run
adds its NumPy work on the 11.2M weights (allocations at every refresh, the
penalty calibration, the hard prune: 7 s each on two busy CPU cores, about
2-3 s on an idle host, some 12 s a run), loading and evaluation (about 15 s,
PGD-10 on 2,000 images included). Dense: 15 x 10 + 30 = 180 s; each of the
four methods: 6 x 10 + 30 + 12 + 15 = about 120 s (the MRS probe adds
about 10 s); with start-up, about 12 minutes in all (10.5 at 8 s an epoch,
15 at 15 s). Records are appended one by one, so a run that stops resumes
where it stopped as long as ``--cache-dir`` (the dense checkpoint) is kept.

Speed switches: ``--mixed-precision [POLICY]`` (``mixed_bfloat16``,
``mixed_float16`` or ``off``) sets Keras' global dtype policy for the run
(`robust_train.speed`; on by default in ``cifar10-paper`` only). Steps are
XLA-compiled by Keras' own default (``jit_compile="auto"``: XLA on a GPU,
not on a CPU). The data path is Keras' own (in-memory arrays, shuffled and
batched by a prefetching `tf.data` pipeline).

Methods (`robust_train.VARIANTS`; adding one is one entry): ``reweighted``
(bounded, the default of adversarial pruning; ``reweighted_unbounded``
without) and ``admm`` rank units globally across layers (one budget for the
model); ``mrs_reweighted`` allocates per-layer ratios by Module Robustness
Sensitivity (MRPF, `tf_reweight.robust.mrpf.mrpf`; worst-case relative
weight perturbation probe), ``mrs_prune_reweighted`` by the
magnitude-pruning probe of MRS, and ``uniform_reweighted`` gives every layer
the same ratio, all at exactly the same number of kept weights; the
``_auto`` variants let reweighting choose its penalty and eps. ``rate`` is
dense / nonzero weights over all prunable kernels (biases and BatchNorm
excluded).

With ``--recalibrate-bn N`` each pruned model is evaluated twice: as
trained, and again after `tf_reweight.recalibrate_batchnorm` recomputed its
BatchNorm statistics on N clean training images (``recal_accuracy`` and
``recal_robust_accuracy``); adversarial training leaves statistics of
adversarial inputs behind.

Clean ``accuracy`` uses the whole test set (the first ``--test-limit``
images if given); ``robust_accuracy`` attacks its first ``eval_samples``
images (one random start). Records are appended to
``benchmarks/results/robust.json`` (``robust_paper.json`` for
``cifar10-paper``; ``_quick`` before ``.json`` with ``--quick``, alias
``--tiny``), each with the ``device`` it ran on (``"gpu"`` or ``"cpu"``);
a record whose key is already there is skipped, so a run resumes.
``--seed`` seeds the dense checkpoint and the pruning runs; ``--prune-seed``
reruns the pruning from the same dense checkpoint with another seed.
``--quick`` of ``cifar10-paper`` is a smoke run of the same code path (32
training images, one method, mixed precision, XLA only on a GPU): about 1.5
minutes on two busy CPU cores.

This module holds the command line, the suites and the measure loop; one
run's training is in `benchmarks/robust_train.py`, the table of the records
in `benchmarks/robust_report.py`.

    python benchmarks/robust.py --suite mnist
    python benchmarks/robust.py --suite cifar10 --quick
    python benchmarks/robust.py --suite cifar10-paper        # on one GPU
    python benchmarks/robust.py --suite cifar10-paper --quick  # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import records  # noqa: E402
from benchmarks.robust_report import table  # noqa: E402
from benchmarks.robust_train import (  # noqa: E402
    VARIANTS,
    Bench,
    device,
    speed,
    train_attack,
)

HERE = Path(__file__).resolve().parent


DEFAULT_METHODS = (
    "reweighted,admm,mrs_reweighted,mrs_prune_reweighted,uniform_reweighted"
)
# What a suite leaves unset. ``mixed_precision`` is a Keras dtype policy or
# "off"; ``results_name`` names the results file (``<name>.json``, or
# ``<name>_quick.json``).
DEFAULTS = {
    "methods": DEFAULT_METHODS,
    "batch_size": 128,
    "probe_size": 512,
    "mixed_precision": "off",
    "results_name": "robust",
}

SUITES = {
    "mnist": {
        "model": "lenet5",
        "dataset": "mnist",
        "eps": 0.3,
        "attack": "pgd",
        "attack_steps": 7,
        "pretrain_epochs": 1,
        "adv_epochs": 8,
        "epochs": (2, 2),
        "eval_steps": 40,
        "eval_step_size": 0.01,
        "eval_limit": 10000,
    },
    "cifar10": {
        "model": "resnet20",
        "dataset": "cifar10",
        "eps": 8 / 255,
        "attack": "fgsm",
        "attack_steps": 1,
        "pretrain_epochs": 0,
        "adv_epochs": 10,
        "epochs": (3, 3),
        "eval_steps": 10,
        "eval_step_size": 2 / 255,
        "eval_limit": 1000,
    },
}
# The paper scale (Fan et al., Bai et al.: ResNet-18, all 50,000 images), sized
# for about 12 minutes on one H200 (see the module docstring for the estimate).
SUITES["cifar10-paper"] = {
    **SUITES["cifar10"],
    "model": "resnet18",
    "adv_epochs": 15,
    "epochs": (3, 3),
    "eval_limit": 2000,
    # 50,000 = 100 x 500: no ragged last batch, which XLA compiles once more.
    "batch_size": 500,
    "methods": "reweighted_auto,admm,mrs_reweighted_auto,uniform_reweighted_auto",
    "mixed_precision": "mixed_bfloat16",
    "results_name": "robust_paper",
    # On top of QUICK: a smoke run of the same code path, about 1.5 minutes on
    # two busy CPU cores, mixed precision included.
    "quick": {
        "train_limit": 32,
        "test_limit": 64,
        "eval_limit": 16,
        "eval_steps": 2,
        "probe_size": 32,
        "epochs": (1, 1),
        "batch_size": 32,
        "methods": "reweighted_auto",
    },
}
QUICK = {
    "train_limit": 2048,
    "adv_epochs": 1,
    "epochs": (1, 1),
    "eval_limit": 200,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", default="mnist", choices=sorted(SUITES))
    p.add_argument("--quick", "--tiny", action="store_true", help="a tiny run")
    p.add_argument("--methods", default=None, help=f"of {list(VARIANTS)}")
    p.add_argument("--rate", type=float, default=16.0, help="target compression")
    p.add_argument("--structure", default="unstructured")
    p.add_argument("--epochs", type=int, nargs=2, default=None, metavar=("P", "R"))
    p.add_argument("--pretrain-epochs", type=int, default=None, help="clean epochs")
    p.add_argument("--adv-epochs", type=int, default=None, help="dense AT epochs")
    p.add_argument("--attack", default=None, choices=["pgd", "fgsm"])
    p.add_argument("--attack-steps", type=int, default=None)
    p.add_argument("--step-size", type=float, default=None, help="training attack")
    p.add_argument("--eval-steps", type=int, default=None)
    p.add_argument("--eval-limit", type=int, default=None, help="PGD test images")
    p.add_argument(
        "--test-limit", type=int, default=None, help="clean accuracy: first N images"
    )
    p.add_argument("--max-ratio", type=float, default=None, help="MRS allocation")
    p.add_argument("--probe-size", type=int, default=None, help="MRS probe images")
    p.add_argument(
        "--probe-ratio", type=float, default=0.5, help="MRS pruning probe ratio"
    )
    p.add_argument(
        "--recalibrate-bn",
        type=int,
        default=None,
        metavar="N",
        help="also evaluate after recomputing BatchNorm statistics on N images",
    )
    p.add_argument("--train-limit", type=int, default=None, help="first N images")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument(
        "--mixed-precision",
        nargs="?",
        const="mixed_bfloat16",
        default=None,
        choices=["mixed_bfloat16", "mixed_float16", "off"],
        help="a Keras dtype policy for the run (bare: mixed_bfloat16), or off",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0, help="dense training and pruning")
    p.add_argument(
        "--prune-seed",
        type=int,
        default=None,
        help="another seed for pruning only, from the same dense checkpoint",
    )
    p.add_argument("--data-dir", default=None, help="default: TF_REWEIGHT_DATA_DIR")
    p.add_argument(
        "--cache-dir", default=str(Path("~/.cache/tf_reweight/bench").expanduser())
    )
    p.add_argument("--results", default=None, help="the JSON list of records")
    p.add_argument("--verbose", type=int, default=0, choices=[0, 1, 2])
    return p


def _configure(argv: list[str]) -> argparse.Namespace:
    """Parses ``argv`` and fills unset options from the suite (and ``--quick``)."""
    args = _parser().parse_args(argv)
    settings = {**DEFAULTS, **SUITES[args.suite]}
    quick = settings.pop("quick", {})
    if args.quick:
        settings.update({**QUICK, **quick})
    for name, value in settings.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.epochs = tuple(args.epochs)
    args.checkpoint = None
    unknown = sorted(set(_names(args.methods)) - set(VARIANTS))
    if unknown:
        raise SystemExit(
            f"Unknown methods {unknown}; expected some of {list(VARIANTS)}"
        )
    return args


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


# The fields that identify a record: a run skips the methods already stored.
KEY_FIELDS = (
    "method",
    "model",
    "dataset",
    "structure",
    "target_rate",
    "epochs",
    "train_attack",
    "attack",
    "eval_samples",
    "train_samples",
    "test_samples",
    "recalibrate_bn",
    "precision",
    "max_ratio",
    "probe_ratio",
    "seed",
    "prune_seed",
)


def measure(args, results: Path, command: str) -> int:
    """Runs every method not yet in ``results``; returns the number of failures."""
    bench = Bench(args)
    common = {
        "model": args.model,
        "dataset": args.dataset,
        "eps": args.eps,
        "train_attack": train_attack(args),
        "attack": f"pgd-{args.eval_steps}",
        "eval_step_size": args.eval_step_size,
        "train_samples": len(bench.train[1]),
        **({} if args.test_limit is None else {"test_samples": len(bench.test[1])}),
        "dense_adv_epochs": args.adv_epochs,
        "batch_size": args.batch_size,
        "device": device(),
        **({"recalibrate_bn": args.recalibrate_bn} if args.recalibrate_bn else {}),
        **(
            {"precision": args.mixed_precision} if args.mixed_precision != "off" else {}
        ),
        **({"max_ratio": args.max_ratio} if args.max_ratio else {}),
        **({"probe_ratio": args.probe_ratio} if args.probe_ratio != 0.5 else {}),
        **({"seed": args.seed} if args.seed else {}),
        **({} if args.prune_seed is None else {"prune_seed": args.prune_seed}),
    }
    jobs = [("dense", None)] + [(m, VARIANTS[m]) for m in _names(args.methods)]
    store = records.Store(results, KEY_FIELDS)
    failures = 0
    for i, (name, variant) in enumerate(jobs):
        key_fields = {"method": name, "structure": args.structure, **common}
        if variant is None:
            key_fields.update(structure="dense", target_rate=1.0)
            # The same dense checkpoint whatever the pruning options.
            for option in ("prune_seed", "probe_ratio", "max_ratio"):
                key_fields.pop(option, None)
            key_fields["epochs"] = args.pretrain_epochs + args.adv_epochs
        else:
            key_fields.update(target_rate=args.rate, epochs=sum(args.epochs))
        key_fields["eval_samples"] = min(args.eval_limit, len(bench.test[1]))
        label = f"[{i}/{len(jobs) - 1}] {name} {args.rate:g}x"
        if store.has(key_fields):
            print(f"{label}: already measured, skipped", flush=True)
            continue
        print(f"{label}: running", flush=True)
        try:
            out = bench.dense_metrics() if variant is None else bench.run(variant)
        except Exception:  # keep measuring the other methods, report at the end
            traceback.print_exc()
            failures += 1
            continue
        if variant is None:
            out.update(rate=1.0, nonzeros=None)
        else:
            out["rate"] = out["weights"] / max(out["nonzeros"], 1)
        versions = records.tf_versions()
        record = {**key_fields, **out, "versions": versions, "command": command}
        store.add(record)
        print(json.dumps(record), flush=True)
    return failures


def results_path(args) -> Path:
    """``--results``, else the suite's file (``_quick`` with ``--quick``)."""
    if args.results:
        return Path(args.results)
    suffix = "_quick" if args.quick else ""
    return HERE / "results" / f"{args.results_name}{suffix}.json"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _configure(argv)
    results = results_path(args)
    command = records.command("robust", argv)
    print(f"Command: {command}\nResults: {results}", flush=True)
    with speed(args):
        failures = measure(args, results, command)
    print(table(records.load(results), args), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
