"""Zoo benchmark: every `keras.applications` architecture through tf_reweight.

Each cell is one (backend, model, structure): the model is built with random
weights (``weights=None``, ``classes=10``, the smallest input it accepts) and
goes through the library's public API, one check at a time, each in its own
``try``:

- ``apply``: `tf_reweight.apply(model, structure, 0.75)` (2:4 takes no
  target); the warnings it raises are stored.
- ``identical``: before any pruning the applied model gives the original's
  outputs (atol 1e-5).
- ``fit``: four Adam steps (two epochs of two batches of 2) on random data
  with `tf_reweight.Reweight`, finite loss.
- ``exact``: after `tf_reweight.hard_prune`, `tf_reweight.report` meets the
  expected sparsity (the target, or the structure's own for N:M) within one
  unit: the largest unit's weights (a filter's with the rows it frees) over
  the pruned kernels' weights.
- ``strip``: `tf_reweight.strip` gives the pruned model's outputs (atol 1e-5).
- ``roundtrip``: a `.keras` save and load gives the same outputs (atol 1e-5)
  and the same masks.
- ``tflite`` (TensorFlow only): `tflite_export.export` of the stripped model
  verified in LiteRT; largest output difference <= 1e-3 (1e-1 for dynamic
  range quantization), argmax agreement recorded.
- ``shrink`` (filter and channel only): `tflite_export.shrink` of the stripped
  model gives its outputs (atol 1e-4); MACs before and after
  (`tflite_export.count_macs`).

A check ends as ``pass``, ``fail`` (it ran, the result is wrong: ``detail``),
``error`` (it raised: ``error`` holds the type and first line), ``skip`` (a
check it needs did not pass) or ``n/a``. Every backend runs in its own
subprocess (``KERAS_BACKEND``), one subprocess per model, so a crash costs one
model. Records are appended to ``benchmarks/results/zoo.json`` as soon as a
cell is measured; cells already there are skipped unless ``--force``.

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
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_reweight as tfr  # noqa: E402
import tflite_export  # noqa: E402
from benchmarks import records  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "zoo.json"
STRUCTURES = ("unstructured", "filter", "channel", "2:4", "block:4x4", "pattern")
SHRINKABLE = ("filter", "channel")
BACKENDS = ("tensorflow", "jax", "torch")
CHECKS = (
    "apply",
    "identical",
    "fit",
    "exact",
    "strip",
    "roundtrip",
    "tflite",
    "shrink",
)
LETTERS = dict(zip(CHECKS, "AIFESRTK", strict=True))
TARGET = 0.75
ATOL = 1e-5
SHRINK_ATOL = 1e-4
TFLITE_ATOL = {"none": 1e-3, "dynamic": 1e-1}
BATCH = 4
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


def _error(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _where(exc: BaseException) -> str | None:
    """The innermost frame of the library (or Keras) that raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    for package in ("tf_reweight", "tflite_export", "keras"):
        inside = [f for f in frames if f"{os.sep}{package}{os.sep}" in f.filename]
        if inside:
            f = inside[-1]
            path = f.filename[f.filename.rindex(f"{os.sep}{package}{os.sep}") + 1 :]
            return f"{path}:{f.lineno} in {f.name}"
    return None


def _outputs(model, x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


def _diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def _compare(a, b, atol: float) -> dict:
    diff = _diff(a, b)
    ok = diff <= atol
    result = {"status": "pass" if ok else "fail", "max_abs_diff": diff}
    if not ok:
        result["detail"] = f"max abs diff {diff:.3g} > {atol:g}"
    return result


def _masks(model) -> dict:
    return {
        f"{w.name}/{pk.layout.attr}": np.asarray(keras.ops.convert_to_numpy(pk.mask))
        for w in tfr.pruning.wrappers(model)
        for pk in w.pruned_kernels
    }


def _exact(pruned) -> dict:
    rep = tfr.report(pruned)
    wrappers = tfr.pruning.wrappers(pruned)
    weights = sum(r.weights for r in rep.pruned_rows)
    if not weights:
        return {"status": "fail", "detail": "no pruned kernel in the report"}
    fixed = {w.structure.fixed_sparsity for w in wrappers} - {None}
    expected = fixed.pop() if fixed else TARGET
    unit = max(
        w.structure.unit_weights(pk.layout.canonical)
        for w in wrappers
        for pk in w.pruned_kernels
    )
    coupled = tfr.pruning.couplings(pruned)
    grouped = tfr.pruning.channel_groups(pruned)
    singles = [(p,) for ps, _, _ in coupled for p in ps if len(ps) == 1]
    for members in grouped + singles:
        # A joint unit: filter c of every kernel of a group, with the rows
        # of later kernels that read it (freed too).
        ids = {id(pk) for pk in members}
        size = sum(math.prod(pk.layout.canonical[:3]) for pk in members)
        for producers, consumer, repeat in coupled:
            if {id(pk) for pk in producers} <= ids:
                rows = consumer.layout.canonical
                size += rows[0] * rows[1] * rows[3] * repeat
        unit = max(unit, size)
    tolerance = unit / weights
    result = {
        "sparsity": rep.sparsity,
        "expected": expected,
        "tolerance": tolerance,
        "pruned_weights": weights,
        "pruned_kernels": len(rep.pruned_rows),
        "coverage": weights
        / sum(int(np.prod(v.shape)) for v in pruned.trainable_weights),
        "dense_kernels": len(rep.rows) - len(rep.pruned_rows),
    }
    ok = abs(rep.sparsity - expected) <= tolerance
    result["status"] = "pass" if ok else "fail"
    if not ok:
        result["detail"] = (
            f"sparsity {rep.sparsity:.6f}, expected {expected} +- {tolerance:.2g}"
        )
    return result


def _roundtrip(pruned, x, reference) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "pruned.keras")
        pruned.save(path)
        loaded = keras.saving.load_model(path)
    result = _compare(_outputs(loaded, x), reference, ATOL)
    before, after = _masks(pruned), _masks(loaded)
    same = before.keys() == after.keys() and all(
        np.array_equal(before[k], after[k]) for k in before
    )
    result["masks_equal"] = same
    if not same:
        result["status"] = "fail"
        result["detail"] = f"masks differ ({len(before)} saved, {len(after)} loaded)"
    return result


def _tflite(stripped, x, quantization: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = tflite_export.export(
            stripped,
            str(Path(tmp, "model.tflite")),
            quantization=quantization,
            sample=x,
        )
    v = out.verification
    diff, atol = float(v.max_abs_diff), TFLITE_ATOL[quantization]
    result = {
        "status": "pass" if diff <= atol else "fail",
        "quantization": quantization,
        "max_abs_diff": diff,
        "argmax_agreement": float(v.argmax_agreement),
        "file_bytes": out.file_bytes,
        "delegate": v.delegate,
    }
    if diff > atol:
        result["detail"] = f"max abs diff {diff:.3g} > {atol:g}"
    return result


def _shrink(stripped, x, reference) -> dict:
    small = tflite_export.shrink(stripped)
    result = _compare(_outputs(small, x), reference, SHRINK_ATOL)
    before, after = tflite_export.count_macs(stripped), tflite_export.count_macs(small)
    result.update(
        macs_before=before, macs_after=after, mac_ratio=before / max(after, 1)
    )
    return result


def _run(checks: dict, name: str, fn, *needs: str) -> None:
    """Runs one check and stores its result (a skip if a need did not run)."""
    failed = [n for n in needs if checks[n]["status"] in ("error", "skip")]
    if failed:
        checks[name] = {"status": "skip", "reason": f"{failed[0]} did not run"}
        return
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - every failure is a result here
        result = {"status": "error", "error": _error(exc), "where": _where(exc)}
    result["seconds"] = round(time.perf_counter() - start, 2)
    checks[name] = result


def measure(
    model, structure: str, quantization: str = "none", skip: tuple = ()
) -> dict:
    """Runs every check of one cell on a built model.

    Args:
        model: The dense model (left unchanged).
        structure: One of `STRUCTURES`.
        quantization: TFLite quantization, ``"none"`` or ``"dynamic"``.
        skip: Checks not to run (recorded as skipped), to save time.

    Returns:
        A dict from check name to its result dict (``status`` and figures).
    """
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (BATCH, *model.input_shape[1:])).astype("float32")
    y = rng.integers(0, 10, BATCH)
    state: dict = {}
    checks: dict = {}

    def run(name, fn, *needs):
        if name in skip:
            checks[name] = {"status": "skip", "reason": "not run (--skip)"}
        else:
            _run(checks, name, fn, *needs)

    def apply():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            target = None if structure == "2:4" else TARGET
            state["pruned"] = tfr.apply(model, structure, target)
        messages = sorted({str(w.message).splitlines()[0][:200] for w in caught})
        return {"status": "pass", "warnings": messages}

    def identical():
        return _compare(_outputs(state["pruned"], x), _outputs(model, x), ATOL)

    def fit():
        pruned = state["pruned"]
        pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy())
        history = pruned.fit(
            x, y, batch_size=2, epochs=2, verbose=0, callbacks=[tfr.Reweight()]
        )
        loss = float(history.history["loss"][-1])
        if not np.isfinite(loss):
            return {"status": "fail", "loss": loss, "detail": f"loss {loss}"}
        return {"status": "pass", "loss": loss}

    def exact():
        tfr.hard_prune(state["pruned"])
        state["reference"] = _outputs(state["pruned"], x)
        return _exact(state["pruned"])

    def strip():
        state["stripped"] = tfr.strip(state["pruned"])
        return _compare(_outputs(state["stripped"], x), state["reference"], ATOL)

    run("apply", apply)
    run("identical", identical, "apply")
    run("fit", fit, "apply")
    run("exact", exact, "apply")
    run("strip", strip, "exact")
    run(
        "roundtrip",
        lambda: _roundtrip(state["pruned"], x, state["reference"]),
        "exact",
    )
    if keras.backend.backend() != "tensorflow":
        checks["tflite"] = {"status": "n/a", "reason": "TFLite needs TensorFlow"}
    else:
        run(
            "tflite",
            lambda: _tflite(state["stripped"], x, quantization),
            "strip",
        )
    if structure not in SHRINKABLE:
        checks["shrink"] = {"status": "n/a", "reason": "not a filter/channel structure"}
    else:
        run(
            "shrink",
            lambda: _shrink(state["stripped"], x, state["reference"]),
            "strip",
        )
    return checks


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
                    model_name, structure, quantization, error=f"build: {_error(exc)}"
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
        failure = None if done.returncode == 0 else f"exit code {done.returncode}"
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


# -- table ------------------------------------------------------------------------
def cell_code(record: dict) -> str:
    """``passed/applicable`` plus the letters of the checks that failed or raised."""
    if "checks" not in record:
        return "build" if record["error"].startswith("build") else "crash"
    checks = record["checks"]
    counted = [
        c
        for c in CHECKS
        if checks[c]["status"] != "n/a"
        and checks[c].get("reason") != "not run (--skip)"
    ]
    passed = sum(checks[c]["status"] == "pass" for c in counted)
    bad = "".join(
        LETTERS[c] for c in counted if checks[c]["status"] in ("fail", "error")
    )
    partial = "*" if record.get("partial") else ""
    return f"{passed}/{len(counted)}{partial}" + (f" {bad}" if bad else "")


def table(records: list[dict]) -> str:
    """A Markdown failure matrix per backend, a legend and the failure list."""
    lines = []
    for backend in sorted({r["backend"] for r in records}):
        rows = [r for r in records if r["backend"] == backend]
        structures = [s for s in STRUCTURES if any(r["structure"] == s for r in rows)]
        cells = {(r["model"], r["structure"]): cell_code(r) for r in rows}
        lines += [f"**{backend}**", "", "| model | " + " | ".join(structures) + " |"]
        lines.append("|---" * (len(structures) + 1) + "|")
        for model in dict.fromkeys(r["model"] for r in rows):
            codes = [cells.get((model, s), "") for s in structures]
            lines.append(f"| {model} | " + " | ".join(codes) + " |")
        lines.append("")
    legend = ", ".join(f"{letter} {check}" for check, letter in LETTERS.items())
    lines += [
        f"Cells: checks passed / checks that apply; letters name the checks that "
        f"failed or raised ({legend}); build: the model did not build; crash: "
        f"the worker died; *: partial cell, checks not run (--skip) not counted. "
        f"Skipped checks (a check they need raised) count as not passed.",
        "",
        "Failures (check: message, cells):",
        "",
    ]
    failures: dict = {}
    for r in records:
        cell = f"{r['backend']} {r['model']} {r['structure']}"
        if "checks" not in r:
            failures.setdefault((cell_code(r), r["error"]), []).append(cell)
            continue
        for check in CHECKS:
            c = r["checks"][check]
            if c["status"] in ("fail", "error"):
                message = c.get("error") or c.get("detail", "")
                failures.setdefault((check, message), []).append(cell)
    for (check, message), where in sorted(failures.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"- {check}: `{message}` ({len(where)}): " + ", ".join(where))
    return "\n".join(lines + ["", shrink_table(records)])


def shrink_table(records: list[dict]) -> str:
    """MACs before and after `tflite_export.shrink` of the filter cells at 4x."""
    shrunk = {}
    for r in records:  # the latest record of a cell wins
        check = r.get("checks", {}).get("shrink", {})
        if r["structure"] == "filter" and check.get("status") == "pass":
            shrunk[(r["model"], r["backend"])] = (check, r.get("commit", ""))
    lines = [
        "Shrink of the filter cells (4x fewer weights): MACs before and after.",
        "",
        "| model | backend | MACs before | MACs after | MAC ratio | commit |",
        "|---|---|---|---|---|---|",
    ]
    for (model, backend), (check, commit) in shrunk.items():
        before, after = check["macs_before"], check["macs_after"]
        lines.append(
            f"| {model} | {backend} | {before:,} | {after:,} "
            f"| {check['mac_ratio']:.2f}x | {commit} |"
        )
    return "\n".join(lines)


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
            # A partial cell (run with --skip) is done only for runs that skip too.
            done = store(args.results).keys(lambda r: skip or not r.get("partial"))
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
