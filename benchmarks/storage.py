"""Storage of pruned, k-bit quantized LeNet-5 models (pruning + quantization).

The seed paper's "integrated framework", on MNIST:

1. a dense LeNet-5 start with the frontier's settings (5 epochs of Adam 1e-3,
   batch 128, seed 0), its weights cached under ``--cache-dir`` (default
   ``runs/storage/``) by those settings;
2. per rate of ``--rates`` and seed of ``--seeds``: `tfr.recipes.prune` with
   reweighting (``--penalty``, ``--eps``, ``--epochs P R``; all four kernels,
   unstructured), the pruned model cached, its float accuracy recorded
   (method ``"float"``, 32 bits);
3. per bits of ``--bits`` and method of ``--methods``: `tfr.quantize_model`
   of the cached pruned model (masks held), ``--finetune-epochs`` of Adam at
   ``--finetune-lr``, `tfr.qat.finalize`; recorded: test accuracy (before
   and after the fine-tuning), nonzeros, fillers, storage rates, and two
   checks: ``revived``, the pruned weights that came back (0 expected), and
   ``on_grid``, every output channel on the grid ``scale * {-L..L}``,
   ``L = 2**(bits - 1) - 1`` (``levels_max``: most distinct values in one
   channel, at most ``2**bits - 1``).

Storage (`tfr.quantization.compression_report`, relative indexing as in Han
et al.'s Deep Compression): each kernel is flattened in row-major order, each
stored entry takes ``bits`` for its value and ``index_bits`` for the zeros
skipped since the previous one, and a run of more than ``2**index_bits - 1``
zeros costs a filler entry. ``rate_kernels`` is 32 x kernel weights / kernel
bits, for each of ``--index-bits`` (the best: ``best_index_bits``) and, in
``per_kernel``, with each kernel's own best width from 1 to 16 bits (plus 4
bits per kernel for the width). ``rate_all`` is 32 x all parameters / (kernel
bits + 32 x (biases and other weights) + 32 x scales): biases dense in fp32,
and for quantized kernels one fp32 scale per output channel that keeps a
nonzero.

Records go to ``benchmarks/results/storage.json``, one per (rate, seed, bits,
method, penalty, eps, epochs, finetune_epochs), appended as measured; stored
ones are skipped. ``--table`` only prints the table. Data come from
``--data-dir`` or ``TF_REWEIGHT_DATA_DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks import records  # noqa: E402
from benchmarks.storage_report import goal_line, table  # noqa: E402

HERE = Path(__file__).resolve().parent
KEY_FIELDS = tuple(
    "target_rate seed bits method penalty eps epochs finetune_epochs".split()
)
QUANT_METHODS = ("ste", "projection")
WIDTHS = range(1, 17)  # index widths of the per-kernel choice
WIDTH_HEADER = 4  # bits per kernel to store its index width (1 to 16)


def _list(kind, allowed=None):
    def parse(text: str) -> list:
        values = [kind(v) for v in text.split(",") if v.strip()]
        bad = [v for v in values if allowed is not None and v not in allowed]
        if not values or bad:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind.__name__}"
                + (f" from {list(allowed)}" if allowed else "")
                + f"; received: {text!r}"
            )
        return values

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parses the command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", type=_list(float), default=[630.0, 1000.0])
    p.add_argument("--seeds", type=_list(int), default=[0])
    p.add_argument("--bits", type=_list(int, range(2, 9)), default=[4, 3])
    p.add_argument("--methods", type=_list(str, QUANT_METHODS), default=["ste"])
    p.add_argument("--index-bits", type=_list(int, range(1, 17)), default=[3, 4, 5])
    p.add_argument("--penalty", type=float, default=1e-4, help="reweighting lambda")
    p.add_argument("--eps", type=float, default=1e-2, help="reweighting eps")
    p.add_argument(
        "--epochs",
        type=int,
        nargs=2,
        default=(4, 4),
        metavar=("PHASE1", "RETRAIN"),
        help="reweighted epochs, then masked retraining epochs",
    )
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--finetune-lr", type=float, default=1e-4)
    p.add_argument("--dense-epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-limit", type=int, default=None, help="first N images")
    p.add_argument("--test-limit", type=int, default=None, help="first N images")
    p.add_argument("--data-dir", default=None, help="default: TF_REWEIGHT_DATA_DIR")
    p.add_argument("--cache-dir", default=str(records.ROOT / "runs" / "storage"))
    p.add_argument("--results", default=str(HERE / "results" / "storage.json"))
    p.add_argument("--table", action="store_true", help="only print the table")
    p.add_argument("--verbose", type=int, default=0, choices=[0, 1, 2])
    args = p.parse_args(argv)
    if args.finetune_epochs < 0 or min(args.epochs) < 0 or args.dense_epochs < 1:
        p.error(
            "epochs must be >= 0 (dense epochs >= 1); received: "
            f"epochs={args.epochs}, finetune_epochs={args.finetune_epochs}, "
            f"dense_epochs={args.dense_epochs}"
        )
    return args


def cell(args, rate: float, seed: int, bits: int, method: str) -> dict:
    """The key fields of one record."""
    return {
        "target_rate": rate,
        "seed": seed,
        "bits": bits,
        "method": method,
        "penalty": args.penalty,
        "eps": args.eps,
        "epochs": sum(args.epochs),
        "finetune_epochs": 0 if method == "float" else args.finetune_epochs,
    }


def cells(args, rate: float, seed: int) -> list[dict]:
    """The records of one pruned model: its float one, then every quantized one."""
    return [cell(args, rate, seed, 32, "float")] + [
        cell(args, rate, seed, bits, method)
        for bits in args.bits
        for method in args.methods
    ]


def kernels(model) -> dict[str, np.ndarray]:
    """The kernels of a plain model, by variable path."""
    return {v.path: np.asarray(v.numpy()) for v in model.weights if v.name == "kernel"}


def grid_check(kernel: np.ndarray, bits: int) -> tuple[int, bool]:
    """Most distinct values in one output channel, and whether all are on the grid.

    A channel is on the grid when every value is an integer multiple, from
    ``-L`` to ``L``, of ``max|w| / L`` with ``L = 2**(bits - 1) - 1``.
    """
    columns = kernel.reshape(-1, kernel.shape[-1])
    levels = 2 ** (bits - 1) - 1
    peak = np.abs(columns).max(axis=0)
    steps = columns / np.where(peak > 0, peak / levels, 1.0)
    on_grid = bool(np.all(np.abs(steps - np.round(steps)) < 1e-3))
    count = max(len(np.unique(columns[:, j])) for j in range(columns.shape[1]))
    return count, on_grid


def checks(model, zeros: dict[str, np.ndarray], bits: int | None) -> dict:
    """Pruned weights that came back, and (``bits`` given) the grid check."""
    found = kernels(model)
    revived = sum(int(np.sum(found[k][z] != 0)) for k, z in zeros.items())
    if bits is None:  # float kernels lie on no grid
        return {"revived": revived, "levels_max": None, "on_grid": None}
    grid = [grid_check(k, bits) for k in found.values()]
    return {
        "revived": revived,
        "levels_max": max(count for count, _ in grid),
        "on_grid": all(ok for _, ok in grid),
    }


def storage(model, bits: int, index_bits: list[int], scaled: bool = True) -> dict:
    """Storage rates of a plain pruned model at ``bits`` (see the docstring).

    ``scaled``: whether each output channel that keeps a nonzero stores an
    fp32 scale (quantized kernels; float kernels need none).
    """
    import tf_reweight as tfr

    found = kernels(model)
    scales = 0
    if scaled:
        scales = sum(
            int(np.any(k.reshape(-1, k.shape[-1]), axis=0).sum())
            for k in found.values()
        )
    all_bits = 32 * model.count_params()
    kernel_total = sum(k.size for k in found.values())
    dense_rest = 32 * (model.count_params() - kernel_total + scales)

    def rates(sparse_bits: int) -> dict:
        return {
            "sparse_bits": sparse_bits,
            "rate_kernels": 32 * kernel_total / sparse_bits,
            "rate_all": all_bits / (sparse_bits + dense_rest),
        }

    reports = {w: tfr.quantization.compression_report(found, bits, w) for w in WIDTHS}
    by_index = {
        str(w): {"fillers": reports[w]["fillers"], **rates(reports[w]["sparse_bits"])}
        for w in index_bits
    }
    best = min(index_bits, key=lambda w: reports[w]["sparse_bits"])
    widths = {
        name: min(WIDTHS, key=lambda w: reports[w]["layers"][name]["sparse_bits"])
        for name in found
    }
    per_kernel = sum(
        reports[w]["layers"][name]["sparse_bits"] + WIDTH_HEADER
        for name, w in widths.items()
    )
    return {
        "nonzeros": reports[best]["nonzeros"],
        "kernel_weights": kernel_total,
        "parameters": model.count_params(),
        "scales": scales,
        "rate": kernel_total / max(reports[best]["nonzeros"], 1),
        "storage": by_index,
        "best_index_bits": best,
        "per_kernel": {"index_bits": widths, **rates(per_kernel)},
    }


class Bench:
    """The data, the dense start and the pruned models of one invocation."""

    def __init__(self, args):
        import keras

        import tf_reweight as tfr

        self.args, self.keras, self.tfr = args, keras, tfr
        (x, y), (xt, yt) = tfr.data.load("mnist", args.data_dir)
        self.train = (x[: args.train_limit], y[: args.train_limit])
        self.test = (xt[: args.test_limit], yt[: args.test_limit])
        self.cache = Path(args.cache_dir)
        self.cache.mkdir(parents=True, exist_ok=True)
        a = args
        self.stem = (
            f"lenet5_n{a.train_limit}_e{a.dense_epochs}_lr{a.lr:g}_b{a.batch_size}_s0"
        )

    def accuracy(self, model) -> float:
        self.tfr.recipes.compile_classifier(model)
        return float(model.evaluate(*self.test, batch_size=512, verbose=0)[1])

    def dense(self):
        """The dense start, trained once and cached (weights) by its settings."""
        path = self.cache / f"{self.stem}.weights.h5"
        model = self.tfr.models.lenet5()
        if path.exists():
            model.load_weights(path)
            return model
        a = self.args
        self.keras.utils.set_random_seed(0)
        self.tfr.recipes.compile_classifier(model, a.lr)
        model.fit(
            *self.train,
            batch_size=a.batch_size,
            epochs=a.dense_epochs,
            verbose=a.verbose,
        )
        model.save_weights(path)
        info = {"accuracy": self.accuracy(model), "epochs": a.dense_epochs}
        path.with_suffix(".json").write_text(json.dumps(info))
        print(f"Dense start: {info} -> {path}", flush=True)
        return model

    def pruned(self, rate: float, seed: int):
        """The pruned model (wrappers, masks) and its seconds, cached by its key."""
        a = self.args
        stem = "{}_r{:g}_s{}_p{:g}_eps{:g}_e{}-{}".format(
            self.stem, rate, seed, a.penalty, a.eps, *a.epochs
        )
        path = self.cache / f"{stem}.keras"
        info = path.with_suffix(".json")
        if path.exists() and info.exists():
            return self.keras.saving.load_model(path, compile=False), json.loads(
                info.read_text()
            )["seconds"]
        dense = self.dense()
        self.keras.utils.set_random_seed(seed)
        result = self.tfr.recipes.prune(
            dense,
            self.train,
            method="reweighted",
            target=f"{rate:g}x",
            penalty=a.penalty,
            eps=a.eps,
            phase1_epochs=a.epochs[0],
            retrain_epochs=a.epochs[1],
            batch_size=a.batch_size,
            lr=a.lr,
            verbose=a.verbose,
        )
        result.model.save(path)
        info.write_text(json.dumps({"seconds": round(result.seconds, 2)}))
        return result.model, round(result.seconds, 2)

    def quantized(self, pruned, seed: int, bits: int, method: str):
        """The finalized model after quantized fine-tuning, its seconds, and
        the test accuracy before the fine-tuning."""
        a = self.args
        self.keras.utils.set_random_seed(seed)
        model = self.tfr.quantize_model(pruned, bits, method)
        before = self.accuracy(model)
        self.tfr.recipes.compile_classifier(model, a.finetune_lr)
        start = time.perf_counter()
        if a.finetune_epochs:
            model.fit(
                *self.train,
                batch_size=a.batch_size,
                epochs=a.finetune_epochs,
                verbose=a.verbose,
            )
        seconds = round(time.perf_counter() - start, 2)
        return self.tfr.qat.finalize(model), seconds, before


def measure(args, command: str) -> list[dict]:
    """Measures every record not yet stored; returns the new ones."""
    store = records.Store(args.results, KEY_FIELDS)
    bench = Bench(args)  # loads the data first: a missing copy fails here
    sizes = {"train_images": len(bench.train[0]), "test_images": len(bench.test[0])}
    added = []
    for rate in args.rates:
        for seed in args.seeds:
            todo = [c for c in cells(args, rate, seed) if not store.has(c)]
            if not todo:
                print(f"{rate:g}x seed {seed}: already measured, skipped", flush=True)
                continue
            pruned, prune_seconds = bench.pruned(rate, seed)
            plain = bench.tfr.strip(pruned)
            zeros = {k: v == 0 for k, v in kernels(plain).items()}
            float_accuracy = bench.accuracy(plain)
            for key in todo:
                float_ = key["method"] == "float"
                final, seconds, before = plain, prune_seconds, float_accuracy
                if not float_:
                    final, seconds, before = bench.quantized(
                        pruned, seed, key["bits"], key["method"]
                    )
                record = {
                    **key,
                    "model": "lenet5",
                    "dataset": "mnist",
                    "accuracy": bench.accuracy(final),
                    "accuracy_before_finetune": before,
                    "float_accuracy": float_accuracy,
                    **storage(final, key["bits"], args.index_bits, not float_),
                    **checks(final, zeros, None if float_ else key["bits"]),
                    "finetune_lr": None if float_ else args.finetune_lr,
                    "seconds": seconds,
                    "prune_seconds": prune_seconds,
                    **sizes,
                    "versions": records.tf_versions(),
                    **records.stamp(),
                    "command": command,
                }
                store.add(record)
                added.append(record)
                print(json.dumps(record), flush=True)
    return added


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    command = records.command("storage", argv)
    print(f"Command: {command}\nResults: {args.results}", flush=True)
    if not args.table:
        measure(args, command)
    stored = records.load(args.results)
    print(table(stored), goal_line(stored), sep="\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
