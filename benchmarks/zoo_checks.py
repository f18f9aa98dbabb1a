"""The checks of one zoo cell: a built model through the library's public API.

`measure` runs them one at a time, each in its own ``try``:

- ``apply``: `tf_reweight.apply(model, structure, 0.75)` (2:4 takes no
  target); the warnings it raises are stored.
- ``identical``: before any pruning the applied model gives the original's
  outputs (atol 1e-5).
- ``fit``: four Adam steps (two epochs of two batches of 4) on random data
  with `tf_reweight.Reweight`, finite loss. Batches of 2 were too few: at the
  smallest inputs BatchNorm sees one pixel of two images in the last stages,
  and the dense EfficientNetV2S's gradients reach 1e16-1e18 (1e3-1e5 with
  batches of 4 or 8), past where Adam's squared gradient overflows float32.
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
check it needs did not pass) or ``n/a``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import keras
import numpy as np

import tf_reweight as tfr
import tflite_export

STRUCTURES = ("unstructured", "filter", "channel", "2:4", "block:4x4", "pattern")
SHRINKABLE = ("filter", "channel")
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
TARGET = 0.75
ATOL = 1e-5
SHRINK_ATOL = 1e-4
TFLITE_ATOL = {"none": 1e-3, "dynamic": 1e-1}
BATCH = 4
FIT_BATCH = 4
FIT_SAMPLES = 2 * FIT_BATCH


def error_text(exc: BaseException) -> str:
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
        result = {"status": "error", "error": error_text(exc), "where": _where(exc)}
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
    x_fit = rng.uniform(0.0, 1.0, (FIT_SAMPLES, *x.shape[1:])).astype("float32")
    y_fit = rng.integers(0, 10, FIT_SAMPLES)
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
            x_fit,
            y_fit,
            batch_size=FIT_BATCH,
            epochs=2,
            verbose=0,
            callbacks=[tfr.Reweight()],
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
