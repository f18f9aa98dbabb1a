"""Accuracy vs compression of LeNet-5 on MNIST: reweighting and its baselines.

Methods (see `tf_reweight.recipes.prune`): ``reweighted`` (reweighted group
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
epochs) is already there is skipped, so an interrupted run resumes.

Tuning (200x, the first 30,000 training images, 4 + 4 epochs, accuracy on
the full test set): ADMM with one Z/U step per epoch and ``rho`` x1.5 per
step reached 84-95% for initial ``rho`` from 1e-1 down to 1e-4; a Z/U step
every 50 steps with ``rho`` x1.2 per step did much better (``rho`` 1e-5:
96.0%, 1e-4: 97.7%, 1e-3: 98.2%, 3e-3: 97.4%, 1e-2: 94.3%), hence the
defaults ``rho`` 1e-3, x1.2 up to 1, every 100 steps on the full set (the
same 4.7 Z/U steps per epoch as in the tuning). Group lasso ``lambda``:
1e-6: 80.2%, 1e-5: 94.0%, 1e-4: 98.1%, 1e-3: 98.2%, 1e-2: 95.2%.
Reweighting ``lambda`` 1e-4: 97.6%, 1e-3: 96.7%; one-shot magnitude: 85.1%.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
METHODS = ("reweighted", "admm", "tfmot", "group_lasso", "magnitude")
# Opt-in (--methods): tfmot with per-layer targets from a global magnitude
# ranking of the dense weights (the allocation the other methods start from)
# instead of tfmot's one sparsity for every layer.
EXTRA_METHODS = ("tfmot_global",)
# tfmot prunes single weights only; the others take any tf_reweight structure.
STRUCTURED_METHODS = tuple(m for m in METHODS if m != "tfmot")
QUICK = {
    "methods": "reweighted,admm,tfmot",
    "rates": "50,200,630",
    "epochs": (2, 2),
    "structures": "",
    "sweep": "",
}


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _names(text: str, allowed=None) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(names) - set(allowed)) if allowed else []
    if unknown:
        raise SystemExit(f"Unknown names {unknown}; expected some of {list(allowed)}")
    return names


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="LeNet-5/MNIST accuracy vs compression for five methods."
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
    p.add_argument("--dense-epochs", type=int, default=5)
    p.add_argument("--penalty", type=float, default=1e-4, help="reweighting lambda")
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
    return p


@dataclass(frozen=True)
class Job:
    """One measurement: a method at a target rate (and penalty)."""

    method: str
    structure: str
    target_rate: float
    penalty: float | None

    def key(self, epochs: int) -> tuple:
        return (self.method, self.structure, self.target_rate, self.penalty, epochs)


def record_key(record: dict) -> tuple:
    """The resume key of a stored record."""
    return (
        record["method"],
        record["structure"],
        record.get("target_rate"),
        record.get("penalty"),
        record["epochs"],
    )


def main_penalties(args) -> dict:
    """The penalty of each penalized method on the frontier lines."""
    return {
        "reweighted": args.penalty,
        "admm": args.admm_rho,
        "group_lasso": args.lasso_penalty,
    }


def jobs(args) -> list[Job]:
    """Every measurement of the run, in order."""
    penalties = main_penalties(args)
    methods = _names(args.methods, METHODS + EXTRA_METHODS)
    found = [
        Job(m, "unstructured", rate, penalties.get(m))
        for rate in _floats(args.rates)
        for m in methods
    ]
    found += [
        Job(m, s, rate, penalties.get(m))
        for s in _names(args.structures)
        for rate in _floats(args.structured_rates)
        for m in _names(args.structured_methods, STRUCTURED_METHODS)
    ]
    found += [
        Job("reweighted", "unstructured", args.sweep_rate, lam)
        for lam in _floats(args.sweep)
    ]
    return list(dict.fromkeys(found))


def load_records(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def append_record(path: Path, record: dict) -> None:
    """Appends one record to the JSON list at ``path``.

    The rewrite is atomic and holds a lock, so runs in parallel processes can
    share one results file.
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = load_records(path) + [record]
        tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(records, indent=1) + "\n")
        tmp.replace(path)


class Bench:
    """Data, the dense checkpoint and the runners of one invocation."""

    def __init__(self, args):
        import keras

        from tf_reweight import data

        self.args = args
        self.keras = keras
        (x, y), (x_test, y_test) = data.load("mnist", args.data_dir)
        self.train = (x[: args.train_limit], y[: args.train_limit])
        self.test = (x_test[: args.test_limit], y_test[: args.test_limit])
        self.cache = Path(args.cache_dir).expanduser()
        self.cache.mkdir(parents=True, exist_ok=True)
        limits = (args.train_limit, args.test_limit, args.dense_epochs, args.seed)
        self.stem = "lenet5_dense"
        if limits != (None, None, 5, 0):
            self.stem += "_n{}_t{}_e{}_s{}".format(*limits)
        self.dense_path = self.cache / f"{self.stem}.keras"
        self.dense_info = self._dense()

    def _dense(self) -> dict:
        """Trains (or loads) the shared dense checkpoint; returns its record."""
        from tf_reweight import models, recipes

        info_path = self.cache / f"{self.stem}.json"
        if self.dense_path.exists() and info_path.exists():
            print(f"Dense checkpoint: {self.dense_path} (cached)", flush=True)
            return json.loads(info_path.read_text())
        a = self.args
        self.keras.utils.set_random_seed(a.seed)
        model = recipes.compile_classifier(models.lenet5(), a.lr)
        start = time.perf_counter()
        model.fit(
            *self.train,
            batch_size=a.batch_size,
            epochs=a.dense_epochs,
            verbose=a.verbose,
        )
        seconds = time.perf_counter() - start
        info = {
            "accuracy": float(model.evaluate(*self.test, verbose=0)[1]),
            "seconds": round(seconds, 1),
        }
        model.save(self.dense_path)
        np.savez(self.cache / f"{self.stem}.npz", *model.get_weights())
        info_path.write_text(json.dumps(info))
        print(f"Dense checkpoint: {self.dense_path} (trained)", flush=True)
        return info

    def run(self, job: Job) -> dict:
        """Measures one job; returns the method-specific part of its record."""
        if job.method.startswith("tfmot"):
            return self._tfmot(job)
        from tf_reweight import api, recipes

        a = self.args
        self.keras.utils.set_random_seed(a.seed)
        dense = self.keras.saving.load_model(self.dense_path)
        options = None
        if job.method == "admm":
            options = {
                "every": a.admm_every,
                "unit": a.admm_unit,
                "rho_factor": a.admm_rho_factor,
                "rho_max": a.admm_rho_max,
            }
        result = recipes.prune(
            dense,
            self.train,
            method=job.method,
            structure=job.structure,
            target=f"{job.target_rate:g}x",
            penalty=job.penalty,
            phase1_epochs=a.epochs[0],
            retrain_epochs=a.epochs[1],
            batch_size=a.batch_size,
            lr=a.lr,
            verbose=a.verbose,
            method_options=options,
            skip_last=job.structure != "unstructured",
        )
        rep = api.report(result.model).to_dict()
        out = {
            "accuracy": float(result.model.evaluate(*self.test, verbose=0)[1]),
            "nonzeros": rep["nonzeros"],
            "weights": rep["weights"],
            "seconds": round(result.seconds, 2),
            "epochs": result.epochs,
        }
        if options:
            out["method_options"] = options
        return out

    def _tfmot_data(self) -> Path:
        path = self.cache / f"mnist_{self.stem}.npz"
        if not path.exists():
            (x, y), (x_test, y_test) = self.train, self.test
            np.savez(
                path,
                x_train=np.rint(x * 255).astype(np.uint8),
                y_train=y,
                x_test=np.rint(x_test * 255).astype(np.uint8),
                y_test=y_test,
            )
        return path

    def _global_allocation(self, job: Job) -> str:
        """Per-layer sparsities of a global magnitude ranking of the dense model."""
        from tf_reweight import budget, layouts, structures

        dense = self.keras.saving.load_model(self.dense_path)
        kernels = [
            np.reshape(getattr(layer, lo.attr).numpy(), lo.canonical)
            for layer in dense.layers
            for lo in layouts.kernel_layouts(layer)
        ]
        unstructured = [structures.get("unstructured")] * len(kernels)
        keep = budget.allocate(unstructured, kernels, 1.0 - 1.0 / job.target_rate)
        return ",".join(
            f"{1.0 - k / w.size:.6f}" for k, w in zip(keep, kernels, strict=True)
        )

    def _tfmot(self, job: Job) -> dict:
        from tf_reweight.recipes import two_phase_lr

        a = self.args
        schedule = two_phase_lr(a.epochs[0], a.epochs[1], a.lr)
        lrs = ",".join(f"{schedule(e):.6g}" for e in range(sum(a.epochs)))
        command = [
            sys.executable,
            str(HERE / "tfmot_baseline.py"),
            f"--weights={self.cache / f'{self.stem}.npz'}",
            f"--data={self._tfmot_data()}",
            f"--target={1.0 - 1.0 / job.target_rate!r}",
            "--epochs",
            *(str(e) for e in a.epochs),
            f"--batch-size={a.batch_size}",
            f"--lrs={lrs}",
            f"--seed={a.seed}",
        ]
        if job.method == "tfmot_global":
            command.append(f"--layer-sparsity={self._global_allocation(job)}")
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            raise RuntimeError(
                f"tfmot_baseline.py failed ({done.returncode}):\n{done.stderr[-3000:]}"
            )
        return json.loads(lines[-1])


def _versions() -> dict:
    import keras
    import tensorflow as tf

    import tf_reweight

    return {
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "tf_reweight": tf_reweight.__version__,
    }


def measure(args, results: Path, command: str) -> int:
    """Runs every job not yet in ``results``; returns the number of failures."""
    todo = jobs(args)
    epochs = sum(args.epochs)
    bench = Bench(args)
    common = {"model": "lenet5", "dataset": "mnist", "command": command}
    dense_key = ("dense", "dense", 1.0, None, args.dense_epochs)
    if dense_key not in {record_key(r) for r in load_records(results)}:
        dense = {"method": "dense", "structure": "dense", "target_rate": 1.0}
        record = {
            **dense,
            **common,
            "rate": 1.0,
            "accuracy": bench.dense_info["accuracy"],
            "epochs": args.dense_epochs,
            "seconds": bench.dense_info["seconds"],
            "seconds_per_epoch": bench.dense_info["seconds"] / args.dense_epochs,
            "nonzeros": None,
            "versions": _versions(),
        }
        append_record(results, record)
        print(json.dumps(record), flush=True)
    failures = 0
    for i, job in enumerate(todo, 1):
        done = {record_key(r) for r in load_records(results)}
        label = f"[{i}/{len(todo)}] {job.method} {job.structure} {job.target_rate:g}x"
        if job.penalty is not None:
            label += f" penalty={job.penalty:g}"
        if job.key(epochs) in done:
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
            **(
                {"method_options": out["method_options"]}
                if "method_options" in out
                else {}
            ),
            "versions": out.get("versions") or _versions(),
            "command": command,
        }
        append_record(results, record)
        print(json.dumps(record), flush=True)
    return failures


def plot(records: list[dict], path: Path, penalties: dict) -> None:
    """Accuracy vs compression rate (log x), one line per method and structure.

    The left panel shows the whole accuracy range, the right one zooms on
    95-100%. Sweep records (a penalty other than the line's) are crosses.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple, list] = {}
    sweep, dense = [], []
    for r in records:
        main = penalties.get(r["method"])
        if r["method"] == "dense":
            dense.append(r)
        elif r.get("penalty") not in (None, main) and main is not None:
            sweep.append(r)
        else:
            series.setdefault((r["method"], r["structure"]), []).append(r)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, bottom in zip(axes, (None, 95.0), strict=True):
        for r in dense:
            ax.axhline(100 * r["accuracy"], color="gray", lw=0.8, ls=":", label="dense")
        for (method, structure), rows in sorted(series.items()):
            rows.sort(key=lambda r: r["rate"])
            unstructured = structure == "unstructured"
            ax.plot(
                [r["rate"] for r in rows],
                [100 * r["accuracy"] for r in rows],
                "-o" if unstructured else "--s",
                ms=4,
                label=method if unstructured else f"{method} ({structure})",
            )
        for r in sweep:
            xy = (r["rate"], 100 * r["accuracy"])
            ax.plot(*xy, "kx")
            ax.annotate(f"λ={r['penalty']:g}", xy, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("compression rate (dense / nonzero weights, 4 kernels)")
        ax.set_ylabel("test accuracy (%)")
        if bottom is not None:
            ax.set_ylim(bottom, 100.0)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title("LeNet-5 on MNIST: same dense start and epoch budget")
    axes[1].set_title("zoom: 95-100%")
    axes[1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"Wrote {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            if getattr(args, name) == _parser().get_default(name):
                setattr(args, name, value)
    default = "frontier_quick.json" if args.quick else "frontier.json"
    results = Path(args.results) if args.results else HERE / "results" / default
    command = shlex.join(["python", "benchmarks/frontier.py", *argv])
    print(f"Command: {command}\nResults: {results}", flush=True)
    failures = 0
    if not args.plot_only:
        failures = measure(args, results, command)
    if args.plot or args.plot_only:
        plot(load_records(results), results.with_suffix(".png"), main_penalties(args))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
