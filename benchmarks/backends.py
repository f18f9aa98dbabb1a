"""Per-epoch training cost of the same pruned model on each Keras backend.

LeNet-5 on the first ``--train-limit`` MNIST training images, unstructured
pruning at ``--target`` with the default reweighted penalty: ``--reweight``
epochs of reweighting (`tf_reweight.Reweight`), then the hard prune
(`tf_reweight.HardPrune`) and ``--masked`` epochs of masked retraining.

Each backend trains in its own worker process (the backend is fixed per
process). The workers are interleaved: each round, every worker trains one
epoch in turn, so load changes hit all backends alike. Each worker's first
epoch (tracing and compilation) is a warm-up and is not counted. For each
backend and phase the record holds the fastest and the median epoch time and
their ratios to TensorFlow's (the fastest epoch is the one least disturbed by
other work).

    python benchmarks/backends.py                 # tensorflow,jax,torch

Results: ``benchmarks/results/backends.json``, one record per backend and
phase, appended as soon as it is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import records  # noqa: E402

HERE = Path(__file__).resolve().parent
BACKENDS = ("tensorflow", "jax", "torch")
PHASES = ("reweighting", "masked")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--reweight", type=int, default=3, help="timed reweight epochs")
    p.add_argument("--masked", type=int, default=3, help="timed masked epochs")
    p.add_argument("--train-limit", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--target", default="50x")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="default: TF_REWEIGHT_DATA_DIR")
    p.add_argument("--results", default=None, help="default: results/backends.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def worker(args) -> None:
    """Trains one epoch per line read from stdin; prints its time as JSON."""
    import keras

    import tf_reweight as tfr

    (x, y), _ = tfr.data.load("mnist", args.data_dir)
    x, y = x[: args.train_limit], y[: args.train_limit]
    keras.utils.set_random_seed(args.seed)
    model = tfr.apply(tfr.models.lenet5(), "unstructured", args.target)
    model = tfr.recipes.compile_classifier(model, 1e-3)
    # Epoch 0 is the warm-up; the hard prune starts the masked phase.
    prune_epoch = 1 + args.reweight
    callbacks = [tfr.Reweight(), tfr.HardPrune(prune_epoch)]
    for epoch in range(prune_epoch + args.masked):
        sys.stdin.readline()
        start = time.perf_counter()
        model.fit(
            x,
            y,
            batch_size=args.batch_size,
            initial_epoch=epoch,
            epochs=epoch + 1,
            callbacks=callbacks,
            verbose=0,
        )
        seconds = time.perf_counter() - start
        phase = "warmup" if epoch == 0 else PHASES[int(epoch >= prune_epoch)]
        print("EPOCH " + json.dumps({"phase": phase, "seconds": seconds}), flush=True)
    rate = tfr.report(model).rate
    print("DONE " + json.dumps({"rate": rate}), flush=True)


def _start(backend: str, argv: list[str]) -> subprocess.Popen:
    # The workers import the tf_reweight of this checkout.
    path = os.pathsep.join(
        filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])
    )
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": path}
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _read(proc: subprocess.Popen, prefix: str) -> dict:
    for line in proc.stdout:
        if line.startswith(prefix + " "):
            return json.loads(line[len(prefix) + 1 :])
    raise RuntimeError(f"worker exited with code {proc.wait()}")


def measure(args, argv: list[str], command: str, results: Path) -> list[dict]:
    """Interleaved epochs of one worker per backend; appends the records."""
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    procs = {b: _start(b, argv) for b in backends}
    times = {b: {p: [] for p in PHASES} for b in backends}
    try:
        for round_ in range(1 + args.reweight + args.masked):
            last = {}
            for b, proc in procs.items():
                proc.stdin.write("\n")
                proc.stdin.flush()
                epoch = _read(proc, "EPOCH")
                last[b] = epoch["seconds"]
                if epoch["phase"] in PHASES:
                    times[b][epoch["phase"]].append(epoch["seconds"])
            print(
                f"round {round_} ({epoch['phase']}): "
                + ", ".join(f"{b} {t:.2f}s" for b, t in last.items()),
                flush=True,
            )
        rates = {b: _read(proc, "DONE")["rate"] for b, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()
    reference = backends[0]
    measured = []
    for phase in PHASES:
        ref = times[reference][phase]
        for b in backends:
            epochs = times[b][phase]
            record = {
                "backend": b,
                "phase": phase,
                "model": "lenet5",
                "dataset": "mnist",
                "train_images": args.train_limit,
                "batch_size": args.batch_size,
                "target": args.target,
                "final_rate": round(rates[b], 2),
                "epoch_seconds": [round(t, 3) for t in epochs],
                "min_seconds": round(min(epochs), 3),
                "median_seconds": round(statistics.median(epochs), 3),
                "min_ratio": round(min(epochs) / min(ref), 3),
                "median_ratio": round(
                    statistics.median(epochs) / statistics.median(ref), 3
                ),
                "relative_to": reference,
                "versions": records.versions(
                    "keras", "tensorflow", "jax", "torch", "numpy", "tf-reweight"
                ),
                "command": command,
            }
            records.append(results, record)
            measured.append(record)
    return measured


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.worker:
        worker(args)
        return
    command = records.command("backends", argv)
    print(command, flush=True)
    results = Path(args.results or HERE / "results" / "backends.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    for r in measure(args, argv, command, results):
        print(
            f"{r['backend']:<11}{r['phase']:<12}min {r['min_seconds']:.2f}s "
            f"({r['min_ratio']:.2f}x)  median {r['median_seconds']:.2f}s "
            f"({r['median_ratio']:.2f}x)"
        )
    print(f"Reproduce: {command}")


if __name__ == "__main__":
    main()
