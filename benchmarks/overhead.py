"""Training-time cost of each pruning method per epoch, side by side, as ratios.

The frontier (`benchmarks/frontier.py`) gives every method the same number of
epochs, so its ``seconds`` differ only by the per-epoch cost of each method
and by whatever else the machine was doing. This benchmark measures that
per-epoch cost alone, in one process and interleaved: each round trains one
epoch of every method in turn (plain dense training, reweighting with its
refresh, ADMM with its Z/U steps, static group lasso, masked magnitude
retraining), so load changes hit all methods alike, and reports each
method's fastest and median epoch time over the rounds divided by dense
training's (the fastest epoch is the one least disturbed by other work).

Each method's first epoch (tracing and compilation) is a warm-up and is not
counted. LeNet-5 on the first ``--train-limit`` MNIST training images, batch
128, the methods' default settings (`tf_reweight.training.registry`), target
50x.

    python benchmarks/overhead.py            # 5 rounds on 20,000 images

Results: ``benchmarks/results/overhead.json``, one record per method. The
ratios need every method's epochs, so the records are stored when the last
round ends; a record replaces the stored one of the same method, model,
dataset, training images and target.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import records  # noqa: E402

HERE = Path(__file__).resolve().parent
METHODS = ("dense", "reweighted", "admm", "group_lasso", "magnitude")
# The fields that identify a record: a new run replaces the stored one.
KEY_FIELDS = ("method", "model", "dataset", "train_images", "target", "relative_to")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--rounds", type=int, default=5, help="timed epochs per method")
    p.add_argument("--train-limit", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--target", default="50x")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="default: TF_REWEIGHT_DATA_DIR")
    p.add_argument("--results", default=None, help="default: results/overhead.json")
    return p


def build(method: str, target: str):
    """A compiled LeNet-5 set up for ``method``, and its callbacks.

    The setup is `tf_reweight.training.recipes.prune`'s own
    (`recipes.method_setup`), so the per-epoch work is exactly what the
    frontier runs (magnitude: no penalty, pruned at epoch 0).
    """
    import tf_reweight as tfr
    from tf_reweight.training import models, recipes

    model, callbacks = models.lenet5(), []
    if method != "dense":
        setup = recipes.method_setup(method)
        model = tfr.apply(model, "unstructured", target, method=setup.penalty)
        callbacks = setup.callbacks
        if setup.prune_epoch is not None:
            callbacks.append(tfr.HardPrune(epoch=setup.prune_epoch))
    return recipes.compile_classifier(model, 1e-3), callbacks


def measure(args) -> list[dict]:
    """Interleaved epochs; returns one record per method."""
    import keras

    from tf_reweight.training import data

    (x, y), _ = data.load("mnist", args.data_dir)
    x, y = x[: args.train_limit], y[: args.train_limit]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    keras.utils.set_random_seed(args.seed)
    runs = {m: build(m, args.target) for m in methods}
    times: dict[str, list[float]] = {m: [] for m in methods}
    for round_ in range(args.rounds + 1):  # round 0 is the warm-up
        for m, (model, callbacks) in runs.items():
            start = time.perf_counter()
            model.fit(
                x,
                y,
                batch_size=args.batch_size,
                initial_epoch=round_,
                epochs=round_ + 1,
                callbacks=callbacks,
                verbose=0,
            )
            if round_:
                times[m].append(time.perf_counter() - start)
        print(
            f"round {round_}: "
            + ", ".join(f"{m} {times[m][-1]:.2f}s" for m in methods if times[m]),
            flush=True,
        )
    base = statistics.median(times[methods[0]])
    return [
        {
            "method": m,
            "model": "lenet5",
            "dataset": "mnist",
            "train_images": len(y),
            "target": args.target,
            "seconds_per_epoch": round(statistics.median(times[m]), 3),
            "epoch_seconds": [round(t, 3) for t in times[m]],
            "ratio": round(statistics.median(times[m]) / base, 3),
            "min_seconds": round(min(times[m]), 3),
            "min_ratio": round(min(times[m]) / min(times[methods[0]]), 3),
            "relative_to": methods[0],
        }
        for m in methods
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    if args.rounds < 1:
        raise SystemExit(f"Expected --rounds >= 1. Received: --rounds={args.rounds}")
    path = Path(args.results) if args.results else HERE / "results" / "overhead.json"
    store = records.Store(path, KEY_FIELDS)
    command = records.command("overhead", argv)
    for r in measure(args):
        r.update(versions=records.tf_versions(), command=command)
        store.add(r, replace=True)
        print(
            f"{r['method']:>12}: median {r['seconds_per_epoch']:.2f} s/epoch "
            f"({r['ratio']:.2f}x {r['relative_to']}), fastest {r['min_seconds']:.2f} s "
            f"({r['min_ratio']:.2f}x)",
            flush=True,
        )
    print(f"Command: {command}\nResults: {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
