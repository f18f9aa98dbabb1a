"""Zoo benchmark: every `keras.applications` architecture through tf_reweight.

Each cell is one (backend, model, structure): the model is built with random
weights (``weights=None``, ``classes=10``, the smallest input it accepts) and
goes through the library's public API, one check at a time
(`benchmarks.zoo_checks`: apply, identical outputs before pruning, a few fit
steps, the exact sparsity, strip, the `.keras` round trip, TFLite agreement
and, for filter and channel cells, shrink and its MAC ratio).

Every backend runs in its own subprocess (``KERAS_BACKEND``), one subprocess
per model, so a crash costs one model. Records are appended to
``benchmarks/results/zoo.json`` as soon as a cell is measured; cells already
there are skipped unless ``--force``; a cell that holds only an error (its
worker died: a timeout, a kill; or its model did not build) is measured
again by the next run.

Example:

```
python -m benchmarks.zoo --backends tensorflow,jax --models MobileNetV2,MHATransformer
python -m benchmarks.zoo --large            # also NASNetLarge, ConvNeXtXLarge, ...
python -m benchmarks.zoo --skip fit,tflite  # cheaper partial cells, redone by full runs
python -m benchmarks.zoo --table            # Markdown failure matrix of the records
```
"""

from __future__ import annotations

import argparse
import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from benchmarks import records  # noqa: E402
from benchmarks.zoo_checks import (  # noqa: E402
    CHECKS,
    STRUCTURES,
    TARGET,
    TFLITE_ATOL,
    error_text,
    measure,
)
from benchmarks.zoo_report import cell_code, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "zoo.json"
BACKENDS = ("tensorflow", "jax", "torch")
TRANSFORMER = "MHATransformer"
# Smallest square input each architecture accepts with weights=None (32 otherwise).
MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
# Over ~40M parameters at their smallest input: run only with --large or --models.
LARGE = {
    "ConvNeXtBase",
    "ConvNeXtLarge",
    "ConvNeXtSmall",
    "ConvNeXtXLarge",
    "EfficientNetB7",
    "EfficientNetV2L",
    "EfficientNetV2M",
    "NASNetLarge",
}


def transformer(input_shape=(32, 32, 3), classes: int = 10) -> keras.Model:
    """A small ViT-like Functional model made of stock Keras layers.

    A 4x4 Conv2D patch embedding (64 tokens of width 32), two pre-norm blocks
    of `keras.layers.MultiHeadAttention` (2 heads) and a GELU MLP with
    residual adds, a final LayerNormalization, token averaging and a softmax
    classifier.

    Args:
        input_shape: Image shape ``(height, width, channels)``; height and
            width must be multiples of 4.
        classes: Number of output classes.

    Returns:
        An uncompiled `keras.Model`.

    Example:
    >>> model = transformer((32, 32, 3), classes=10)
    """
    dim = 32
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(dim, 4, strides=4, name="patch_embed")(inputs)
    x = keras.layers.Reshape((-1, dim), name="tokens")(x)
    for i in range(2):
        h = keras.layers.LayerNormalization(name=f"block{i}_norm1")(x)
        h = keras.layers.MultiHeadAttention(2, dim // 2, name=f"block{i}_mha")(h, h)
        x = keras.layers.Add(name=f"block{i}_add1")([x, h])
        h = keras.layers.LayerNormalization(name=f"block{i}_norm2")(x)
        h = keras.layers.Dense(2 * dim, activation="gelu", name=f"block{i}_mlp1")(h)
        h = keras.layers.Dense(dim, name=f"block{i}_mlp2")(h)
        x = keras.layers.Add(name=f"block{i}_add2")([x, h])
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="mha_transformer")


def architectures() -> dict:
    """Every `keras.applications` constructor by name, plus the transformer."""
    found = {
        name: fn
        for name, fn in inspect.getmembers(keras.applications, inspect.isfunction)
        if name[0].isupper()
    }
    return {**dict(sorted(found.items())), TRANSFORMER: transformer}


def build(name: str) -> keras.Model:
    """Builds one architecture with random weights at its smallest input."""
    size = MIN_SIZE.get(name, 32)
    fn = architectures()[name]
    kwargs = {"input_shape": (size, size, 3)}
    params = inspect.signature(fn).parameters
    if "weights" in params:
        kwargs["weights"] = None
    if "classes" in params:
        kwargs["classes"] = 10
    return fn(**kwargs)


# -- records ------------------------------------------------------------------------
KEY_FIELDS = ("backend", "model", "structure")


def store(path: Path) -> records.Store:
    """The results file, one record per (backend, model, structure) cell."""
    return records.Store(path, KEY_FIELDS)


def _command(backend: str, model: str, structure: str, quantization: str) -> str:
    argv = ["--backends", backend, "--models", model, "--structures", structure]
    if quantization != "none":
        argv += ["--quantization", quantization]
    return records.command("zoo", [*argv, "--force"], module=True)


def _record(model_name: str, structure: str, quantization: str, **fields) -> dict:
    backend = keras.backend.backend()
    return {
        "backend": backend,
        "model": model_name,
        "structure": structure,
        "target": None if structure == "2:4" else TARGET,
        **fields,
        **records.stamp(),
        "command": _command(backend, model_name, structure, quantization),
    }


def run_worker(
    model_name: str, structures: list[str], path: Path, quantization: str, skip=()
):
    """Measures the cells of one model on this process's backend, one by one."""
    keras.utils.set_random_seed(0)
    try:
        model = build(model_name)
    except Exception as exc:  # noqa: BLE001
        for structure in structures:
            store(path).add(
                _record(
                    model_name,
                    structure,
                    quantization,
                    error=f"build: {error_text(exc)}",
                ),
                replace=True,
            )
        return
    for structure in structures:
        start = time.perf_counter()
        checks = measure(model, structure, quantization, tuple(skip))
        record = _record(
            model_name,
            structure,
            quantization,
            input_shape=list(model.input_shape[1:]),
            params=model.count_params(),
            checks=checks,
            partial=bool(skip),
            seconds=round(time.perf_counter() - start, 1),
        )
        store(path).add(record, replace=True)
        print(
            f"{record['backend']} {model_name} {structure}: {cell_code(record)}",
            flush=True,
        )


def _exit_text(returncode: int) -> str | None:
    """How a worker ended: None for success, else its exit code or signal."""
    if returncode == 0:
        return None
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            pass
    return f"exit code {returncode}"


def _spawn(backend, model_name, structures, path, quantization, timeout, skip):
    argv = [sys.executable, "-m", "benchmarks.zoo", "--worker", "--models", model_name]
    argv += ["--structures", ",".join(structures), "--results", str(path)]
    argv += ["--quantization", quantization]
    argv += ["--skip", ",".join(skip)] if skip else []
    env = {**os.environ, "KERAS_BACKEND": backend}
    try:
        done = subprocess.run(
            argv, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, timeout=timeout
        )
        failure = _exit_text(done.returncode)
        tail = [line for line in done.stderr.splitlines() if line.strip()][-1:]
    except subprocess.TimeoutExpired:
        failure, tail = f"timed out after {timeout} s", []
    if failure is None:
        return
    present = store(path).keys()
    message = f"worker {failure}" + (f": {tail[0][:240]}" if tail else "")
    print(f"{backend} {model_name}: {message}", flush=True)
    for structure in structures:
        if (backend, model_name, structure) not in present:
            record = {"backend": backend, "model": model_name, "structure": structure}
            record.update(error=message, commit=records.commit())
            store(path).add(record, replace=True)


# -- command line -----------------------------------------------------------------
def _names(value: str, allowed, flag: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ValueError(
            f"`{flag}` takes a comma-separated list of {', '.join(allowed)}. "
            f"Received: {flag}={value!r}"
        )
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", help="comma-separated; default: all but the large ones")
    p.add_argument("--structures", default=",".join(STRUCTURES))
    p.add_argument("--backends", default="tensorflow,jax")
    p.add_argument(
        "--large", action="store_true", help="include " + ", ".join(sorted(LARGE))
    )
    p.add_argument("--force", action="store_true", help="re-measure recorded cells")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--quantization", default="none", choices=sorted(TFLITE_ATOL))
    p.add_argument("--skip", help="checks not to run (such cells are partial)")
    p.add_argument(
        "--timeout", type=int, default=3600, help="seconds per model and backend"
    )
    p.add_argument(
        "--table", action="store_true", help="print the Markdown table and exit"
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the missing cells (or prints the table); returns the file's records."""
    args = parser().parse_args(argv)
    known = architectures()
    models = (
        _names(args.models, known, "--models")
        if args.models
        else [m for m in known if args.large or m not in LARGE]
    )
    structures = _names(args.structures, STRUCTURES, "--structures")
    backends = _names(args.backends, BACKENDS, "--backends")
    skip = _names(args.skip, CHECKS[1:], "--skip") if args.skip else []
    if args.table:
        print(table(records.load(args.results)))
        return records.load(args.results)
    if args.worker:
        run_worker(models[0], structures, args.results, args.quantization, skip)
        return records.load(args.results)
    print(records.command("zoo", argv if argv is not None else sys.argv[1:], True))
    for backend in backends:
        for model_name in models:
            # A partial cell (run with --skip) is done only for runs that skip too;
            # a cell with no checks (its worker died, or its model did not build)
            # is measured again.
            done = store(args.results).keys(
                lambda r: "checks" in r and (skip or not r.get("partial"))
            )
            todo = [
                s
                for s in structures
                if args.force or (backend, model_name, s) not in done
            ]
            if todo:
                _spawn(
                    backend,
                    model_name,
                    todo,
                    args.results,
                    args.quantization,
                    args.timeout,
                    skip,
                )
    return records.load(args.results)


if __name__ == "__main__":
    main()
