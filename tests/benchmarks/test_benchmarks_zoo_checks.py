"""Tests of `benchmarks/zoo_checks.py`: one cell's checks on a tiny model."""

import keras
import pytest

from benchmarks import zoo_checks


def _tiny() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs)


def test_run_records_errors_and_skips_what_needs_them():
    checks = {}

    def boom():
        raise TypeError("bad input\nsecond line")

    zoo_checks._run(checks, "apply", boom)
    zoo_checks._run(checks, "fit", lambda: {"status": "pass"}, "apply")
    assert checks["apply"]["status"] == "error"
    assert checks["apply"]["error"] == "TypeError: bad input"
    assert checks["fit"] == {"status": "skip", "reason": "apply did not run"}


@pytest.mark.parametrize("structure", ["unstructured", "filter"])
def test_measure_passes_every_check_on_a_tiny_model(structure):
    keras.utils.set_random_seed(0)
    model = _tiny()
    before = [w.copy() for w in model.get_weights()]
    checks = zoo_checks.measure(model, structure, skip=("tflite",))
    assert set(checks) == set(zoo_checks.CHECKS)
    statuses = {name: c["status"] for name, c in checks.items()}
    expected_shrink = "pass" if structure in zoo_checks.SHRINKABLE else "n/a"
    assert statuses == {
        **dict.fromkeys(zoo_checks.CHECKS, "pass"),
        "tflite": "skip" if keras.backend.backend() == "tensorflow" else "n/a",
        "shrink": expected_shrink,
    }
    assert abs(checks["exact"]["sparsity"] - 0.75) <= checks["exact"]["tolerance"]
    # The dense model is left unchanged.
    for old, new in zip(before, model.get_weights(), strict=True):
        assert (old == new).all()
