"""Accuracy vs compression: reweighting and its baselines, two suites.

``--suite mnist`` (the default) measures LeNet-5 on MNIST, unstructured and
structured; ``--suite cifar10`` measures ResNet-20 filter pruning on CIFAR-10
(see "The CIFAR-10 suite" below).

Methods (see `tf_reweight.training.recipes.prune`): ``reweighted`` (reweighted group
regularization), ``admm`` (ADMM with a hard constraint), ``group_lasso``
(static group lasso / L1), ``magnitude`` (one-shot magnitude pruning, then
retraining) and ``tfmot`` (TensorFlow Model Optimization's gradual magnitude
pruning, run by ``benchmarks/tfmot_baseline.py`` in a process of its own
because it needs the legacy ``tf_keras``).

Fairness: every method starts from the same dense checkpoint, trained once
and cached outside the repository (``--cache-dir``, default
``~/.cache/tf_reweight/bench``), and gets the same total epoch budget
``--epochs P R``: ``P`` epochs of penalized training (tfmot: its sparsity
ramp; magnitude: retraining too) and ``R`` epochs of masked retraining, with
the same Adam learning rates (constant, then a cosine decay).

``rate`` is dense weights / nonzero weights over the pruned layers, which are
all four LeNet-5 kernels (conv1, conv2, fc1 and logits: 430,500 weights) for
unstructured sparsity and the first three (425,500 weights) for filter and
column structures: removing whole units of the logits layer would remove
classes, so structured runs leave it dense (``skip_last``). Biases are
excluded. The tf_reweight methods rank units globally across the
four kernels; tfmot gives every layer the same sparsity.

Runs (data from ``TF_REWEIGHT_DATA_DIR``, for example ``../shared/data``):

    python benchmarks/frontier.py            # full frontier (hours on 2 cores)
    python benchmarks/frontier.py --quick    # a subset in under 20 minutes
    python benchmarks/frontier.py --plot     # also draw frontier.png

The full run measures unstructured sparsity at ``--rates`` for every method,
``--structures`` (filter and column) at ``--structured-rates`` for
reweighting and ADMM, and a sweep of reweighting's ``lambda`` at
``--sweep-rate``. Records are appended one by one to
``benchmarks/results/frontier.json`` (``frontier_quick.json`` with
``--quick``); a record whose key (method, structure, target rate, penalty,
epochs, eps, seed, schedule) is already there is skipped, so an interrupted
run resumes. Records also hold the numbers of training and test images used.

``--seed N`` repeats a run with another seed (records without a ``seed``
ran with 0), and ``--schedule NAME`` trains the tf_reweight methods with a
named plan of `tf_reweight.PLANS` (refresh milestones with learning-rate
restarts, progressive stages; ``--epochs`` still sets the budget; records
without a ``schedule`` ran with ``"default"``). TFMOT keeps its two-phase
cosine. For example, the long-schedule point at 630x, two seeds:

    python benchmarks/frontier.py --methods reweighted --rates 630 \
        --structures "" --sweep "" --penalty auto --eps auto \
        --schedule paper --epochs 30 30 --seed 1

The CIFAR-10 suite (``--suite cifar10``): ResNet-20 (`tfr.models.resnet20`)
pruned by whole filters at 2, 4, 8 and 16x with reweighting and ADMM, and
tfmot at the same rates. tfmot has no filter pruning, so its rows are
*unstructured* (structure ``"unstructured"`` in the records, labelled so in
the plot): the same number of nonzero weights, not the same structure.

    python benchmarks/frontier.py --suite cifar10 --plot --verbose 2

Its defaults differ from MNIST's to fit about an hour of 2 CPU cores:
``--train-limit 10000`` (the first 10,000 training images, classes mixed),
``--dense-epochs 10``, ``--epochs 2 2``, accuracy on the whole 10,000-image
test set, no augmentation; jobs ``--methods tfmot --rates 2,4,8,16
--structures filter --structured-methods reweighted,admm --structured-rates
2,4,8,16`` and no lambda sweep (``--sweep ""``); ADMM's Z/U step every 16
steps (``--admm-every 16``: 79 steps per epoch at 10,000 images, so about 5
Z/U steps per epoch as in the MNIST tuning). Every flag overrides them. The
penalties are not tuned for ResNet-20: reweighting ``lambda`` 1e-4 (the
library default; a filter's norm is far larger than a single weight's, so
the per-weight MNIST value 1e-5 would barely press filters) and ADMM
``rho`` 1e-3. Records go to ``benchmarks/results/frontier_cifar10.json``
(``frontier_cifar10.png``; ``--quick``: 5,000 images, 5 dense epochs, 2 + 2
epochs, rates 4 and 16, ADMM every 8 steps, ``frontier_cifar10_quick.json``).
tfmot trains in ``tf_keras``, the other methods in Keras 3 with pruning
wrappers, so ``seconds`` compares frameworks as much as methods (step times
in BENCHMARKS.md).

BatchNorm: after a hard prune, a pruned filter's output is zero but its
BatchNorm layer's moving statistics still describe the old channel, so in
inference mode the channel emits a large constant instead of its shift
``beta`` and the network falls to chance (BENCHMARKS.md). The suite therefore
recomputes the moving statistics of every tf_reweight model on its 10,000
training images after training (``--recalibrate-bn 10000``,
`tf_reweight.recalibrate_batchnorm`, no weight changes) and records the
accuracy before it too (``accuracy_before_recalibration``). tfmot's
unstructured models zero no whole channels and are not recalibrated.

The dense ResNet-20 trains with Adam ``--lr`` decayed by a cosine to 1e-5
over its epochs (LeNet-5's dense training keeps the rate constant): with a
constant rate the dense model ended below the pruned ones (BENCHMARKS.md).

Fairness is as on MNIST: one cached dense checkpoint (its own file in
``--cache-dir``, named after the suite, training images, test images, dense
epochs and seed), the same ``P + R`` epochs, batch size and learning-rate
schedule (constant Adam ``--lr``, then the cosine decay) for every method.

Layer accounting on CIFAR-10: the stem convolution ``conv1`` (432 weights)
and the ``logits`` Dense layer (640) stay dense for every method and
structure (``skip_first`` and ``skip_last``) and are not counted. ``rate`` is
dense / nonzero weights over the 20 other convolution kernels, the 18 3x3
convolutions of the three residual stages and their two 1x1 projection
shortcuts (269,824 weights); ``weights`` in each record is that count.
Biases and BatchNorm are excluded; a pruned filter's BatchNorm shift stays.
tfmot prunes exactly these 20 kernels (``tfmot_baseline.py --layers``) to
one uniform sparsity ``1 - 1/rate``, and counts its nonzeros over them;
reweighting and ADMM rank filters globally across them.

Defaults: ADMM's ``rho`` 1e-3 (x1.2 per Z/U step up to 1, a step every 100
steps), group lasso's ``lambda`` 1e-3, reweighting's ``--penalty 1e-5`` for
MNIST and ``--structured-penalty`` 1e-3 (a unit's pull is
``lambda / ||W_g||``, and a filter's or column's norm is far larger than a
single weight's) come from the tuning runs and the lambda sweep recorded in
BENCHMARKS.md ("Tuning of the frontier's defaults").

This module is the command line (the parser, `measure` and `main`); the
suites, methods and jobs are in `benchmarks/frontier_jobs.py`, the runner of
the jobs (`Bench`) in `frontier_bench.py`, and the lines, figure and table in
`frontier_report.py`.
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
from benchmarks.frontier_bench import OPTIONAL_FIELDS, Bench  # noqa: E402
from benchmarks.frontier_jobs import (  # noqa: E402
    KEY_FIELDS,
    METHODS,
    SUITES,
    Job,
    jobs,
    main_configs,
)
from benchmarks.frontier_report import plot, table  # noqa: E402

HERE = Path(__file__).resolve().parent


def _parser(suite: str = "mnist") -> argparse.ArgumentParser:
    """The parser, with the defaults of ``suite``."""
    p = argparse.ArgumentParser(
        description="Accuracy vs compression: LeNet-5/MNIST or ResNet-20/CIFAR-10."
    )
    p.add_argument(
        "--suite",
        default="mnist",
        choices=sorted(SUITES),
        help="mnist: LeNet-5, every structure; cifar10: ResNet-20 filters "
        "(its own defaults, see the module docstring)",
    )
    p.add_argument("--quick", action="store_true", help="a subset, < 20 min")
    p.add_argument("--plot", action="store_true", help="write the figure too")
    p.add_argument("--plot-only", action="store_true", help="only draw the figure")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--rates", default="10,50,100,200,400,630,1000")
    p.add_argument("--structures", default="filter,column")
    p.add_argument("--structured-methods", default="reweighted,admm")
    p.add_argument("--structured-rates", default="2,4,8")
    p.add_argument("--sweep", default="1e-6,1e-5,1e-4,1e-3", help="lambdas")
    p.add_argument("--sweep-rate", type=float, default=200.0)
    p.add_argument(
        "--epochs",
        type=int,
        nargs=2,
        default=(4, 4),
        metavar=("PHASE1", "RETRAIN"),
        help="penalized (or ramp) epochs, then masked retraining epochs",
    )
    p.add_argument(
        "--schedule",
        default="default",
        help="the plan (tf_reweight.PLANS: refresh milestones, learning rate, "
        "progressive stages) of the tf_reweight methods; TFMOT keeps its own",
    )
    p.add_argument("--dense-epochs", type=int, default=5)
    p.add_argument(
        "--penalty",
        type=records.number_or_auto,
        default=1e-4,
        help="reweighting lambda, or auto",
    )
    p.add_argument(
        "--eps",
        type=records.number_or_auto,
        default=None,
        help="reweighting eps of alpha = 1 / (||W_g|| + eps), or auto (default: 1e-3)",
    )
    p.add_argument(
        "--recalibrate-bn",
        type=int,
        default=None,
        metavar="N",
        help="recompute BatchNorm statistics on N training images (a fixed "
        "random sample) after pruning, before the test (tf_reweight methods)",
    )
    p.add_argument(
        "--structured-penalty",
        type=records.number_or_auto,
        default=None,
        help="reweighting lambda of the structured jobs (default: --penalty)",
    )
    p.add_argument("--admm-rho", type=float, default=1e-3, help="initial rho")
    p.add_argument("--admm-rho-factor", type=float, default=1.2)
    p.add_argument("--admm-rho-max", type=float, default=1.0)
    p.add_argument("--admm-every", type=int, default=100, help="Z/U update period")
    p.add_argument("--admm-unit", default="step", choices=["epoch", "step"])
    p.add_argument("--lasso-penalty", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-limit", type=int, default=None, help="first N images")
    p.add_argument("--test-limit", type=int, default=None, help="first N images")
    p.add_argument("--data-dir", default=None, help="default: TF_REWEIGHT_DATA_DIR")
    p.add_argument(
        "--cache-dir",
        default=str(Path("~/.cache/tf_reweight/bench").expanduser()),
        help="where the dense checkpoint and the tfmot inputs are cached",
    )
    p.add_argument("--results", default=None, help="the JSON list of records")
    p.add_argument("--verbose", type=int, default=0, choices=[0, 1, 2])
    p.set_defaults(**dict(SUITES[suite].defaults))
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parses ``argv`` with the defaults of its ``--suite``, then ``--quick``'s."""
    suite = _parser().parse_known_args(argv)[0].suite
    parser = _parser(suite)
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in SUITES[suite].quick:
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    import tf_reweight as tfr

    try:
        tfr.get_plan(args.schedule)
    except ValueError as error:  # before any training: one clear line, exit 2
        parser.error(str(error))
    return args


def _schedule(args, job: Job) -> dict:
    """The record's ``schedule`` field: the plan of a tf_reweight method
    other than the default (the TFMOT baselines keep their own schedule)."""
    if args.schedule == "default" or job.method.startswith("tfmot"):
        return {}
    return {"schedule": args.schedule}


def measure(args, results: Path, command: str) -> int:
    """Runs every job not yet in ``results``; returns the number of failures."""
    todo = jobs(args)
    epochs = sum(args.epochs)
    bench = Bench(args)
    seed = {} if args.seed == 0 else {"seed": args.seed}
    common = {
        "model": bench.suite.model,
        "dataset": bench.suite.dataset,
        "command": command,
    }
    sizes = {"train_images": len(bench.train[0]), "test_images": len(bench.test[0])}
    store = records.Store(results, KEY_FIELDS)
    dense = {"method": "dense", "structure": "dense", "target_rate": 1.0}
    if not store.has({**dense, "epochs": args.dense_epochs, **seed}):
        record = {
            **dense,
            **seed,
            **common,
            "rate": 1.0,
            "accuracy": bench.dense_info["accuracy"],
            "epochs": args.dense_epochs,
            "seconds": bench.dense_info["seconds"],
            "seconds_per_epoch": bench.dense_info["seconds"] / args.dense_epochs,
            "nonzeros": None,
            **sizes,
            "versions": records.tf_versions(),
        }
        store.add(record)
        print(json.dumps(record), flush=True)
    failures = 0
    for i, job in enumerate(todo, 1):
        label = f"[{i}/{len(todo)}] {job.method} {job.structure} {job.target_rate:g}x"
        if job.penalty is not None:
            label += f" penalty={records.label(job.penalty)}"
        variant = {**seed, **_schedule(args, job)}
        if store.has({**job.key_fields(epochs), **variant}):
            print(f"{label}: already measured, skipped", flush=True)
            continue
        print(f"{label}: running", flush=True)
        try:
            out = bench.run(job)
        except Exception:  # keep measuring the other jobs, report at the end
            traceback.print_exc()
            failures += 1
            continue
        record = {
            "method": job.method,
            **{k: v for k, v in common.items() if k != "command"},
            "structure": job.structure,
            "target_rate": job.target_rate,
            "rate": out["weights"] / max(out["nonzeros"], 1),
            "accuracy": out["accuracy"],
            "epochs": out["epochs"],
            "seconds": out["seconds"],
            "seconds_per_epoch": round(out["seconds"] / max(out["epochs"], 1), 2),
            "nonzeros": out["nonzeros"],
            "weights": out["weights"],
            **({} if job.penalty is None else {"penalty": job.penalty}),
            **({} if job.eps is None else {"eps": job.eps}),
            **variant,
            **{k: out[k] for k in OPTIONAL_FIELDS if k in out},
            **sizes,
            "versions": out.get("versions") or records.tf_versions(),
            "command": command,
        }
        store.add(record)
        print(json.dumps(record), flush=True)
    return failures


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    suite = SUITES[args.suite]
    stem = "frontier" if suite.name == "mnist" else f"frontier_{suite.name}"
    default = f"{stem}_quick.json" if args.quick else f"{stem}.json"
    results = Path(args.results) if args.results else HERE / "results" / default
    command = records.command("frontier", argv)
    print(f"Command: {command}\nResults: {results}", flush=True)
    failures = 0
    if not args.plot_only:
        failures = measure(args, results, command)
    mains = main_configs(args)
    if args.plot or args.plot_only:
        plot(records.load(results), results.with_suffix(".png"), mains, suite)
    print(table(records.load(results), mains), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
