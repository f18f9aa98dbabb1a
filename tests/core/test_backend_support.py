"""Backend support: masks on every backend, JAX state sync, TF-only guards."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.core import backend_support

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parents[2]


def _data(n=128, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64")


def _pruned(target=0.75, optimizer="adam"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="relu", name="fc"),
            keras.layers.Dense(2, name="out"),
        ]
    )
    pruned = tfr.apply(model, "unstructured", target, penalty=1e-3)
    pruned.compile(
        optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return pruned


def _masked(model):
    return [
        backend_support.masked_value(pk)
        for w in tfr.pruning.wrappers(model)
        for pk in w.pruned_kernels
    ]


def test_masked_retraining_keeps_pruned_weights_at_zero():
    x, y = _data()
    model = _pruned()
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[tfr.HardPrune(1)])
    assert tfr.report(model).sparsity == pytest.approx(0.75, abs=1e-6)
    plain = tfr.strip(model)
    for wrapper in tfr.pruning.wrappers(model):
        (pk,) = wrapper.pruned_kernels
        value = backend_support.masked_value(pk)
        assert np.all(value[keras.ops.convert_to_numpy(pk.mask) == 0] == 0.0)
        stripped = plain.get_layer(wrapper.name).kernel
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(stripped), value)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(plain(x[:8])),
        keras.ops.convert_to_numpy(model(x[:8])),
        atol=1e-5,
    )


def test_where_masks_apply_on_this_backend():
    model = _pruned()
    constraint = model.get_layer("fc").layer.kernel.constraint
    assert isinstance(constraint, tfr.MaskConstraint)
    assert backend_support.masks_in_forward_pass() == (BACKEND == "jax")
    assert (constraint.mask is None) == (BACKEND == "jax")


def test_forward_pass_uses_masked_kernel_and_keeps_stored_value():
    x, _ = _data(8)
    model = _pruned()
    wrapper = model.get_layer("fc")
    pk = wrapper.pruned_kernels[0]
    mask = np.zeros(pk.mask.shape, "float32")
    mask[:6] = 1.0
    pk.mask.assign(mask)  # a mask whose pruned weights are still stored
    stored = keras.ops.convert_to_numpy(pk.variable)
    expected = np.maximum(x @ (stored * mask) + wrapper.layer.bias.numpy(), 0)
    if BACKEND == "jax":
        got = keras.ops.convert_to_numpy(wrapper(x))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(pk.variable), stored)
    np.testing.assert_array_equal(backend_support.masked_value(pk), stored * mask)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's stateless training step")
def test_jax_gradient_is_exactly_zero_at_pruned_positions():
    import jax

    x, _ = _data(16)
    model = _pruned()
    tfr.hard_prune(model)
    pk = model.get_layer("fc").pruned_kernels[0]
    index = [id(v) for v in model.trainable_variables].index(id(pk.variable))
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss(trainable):
        y, _ = model.stateless_call(trainable, non_trainable, x)
        return jax.numpy.sum(y**2)

    grads = jax.grad(loss)([v.value for v in model.trainable_variables])
    mask = keras.ops.convert_to_numpy(pk.mask)
    grad = np.asarray(grads[index])
    assert np.all(grad[mask == 0] == 0.0)
    assert np.any(grad[mask == 1] != 0.0)


class _ZeroKernelAt(keras.callbacks.Callback):
    """Writes a kernel mid-epoch the way the pruning callbacks do."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.step:
            backend_support.sync_state(self.model)
            kernel = self.model.get_layer("fc").layer.kernel
            kernel.assign(np.zeros(kernel.shape, "float32"))


def test_sync_state_lets_a_mid_epoch_write_take_effect():
    # Pins the JAX trainer's behaviour that `sync_state` relies on
    # (`jax_state_sync`, then the trainer re-reads the variables).
    x, y = _data(64)
    model = _pruned(optimizer=keras.optimizers.SGD(0.0))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[_ZeroKernelAt(1)])
    kernel = keras.ops.convert_to_numpy(model.get_layer("fc").layer.kernel)
    assert not np.any(kernel)


def test_per_step_callbacks_run_mid_epoch():
    x, y = _data()
    model = _pruned()
    schedule = tfr.PolynomialSparsity(0.75, begin_step=2, end_step=12)
    model.fit(
        x,
        y,
        epochs=2,
        batch_size=16,
        verbose=0,
        callbacks=[
            tfr.Reweight(every=3, unit="step"),
            tfr.ScheduledPruning(schedule, 2),
        ],
    )
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 16
    assert all(w.is_pruned for w in tfr.pruning.wrappers(model))
    assert tfr.report(model).sparsity == pytest.approx(0.75, abs=1e-6)


def test_keras_round_trip_keeps_masks(tmp_path):
    x, y = _data()
    model = _pruned()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[tfr.HardPrune(1)])
    path = tmp_path / "pruned.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x[:8])),
        keras.ops.convert_to_numpy(model(x[:8])),
        atol=1e-5,
    )
    assert tfr.report(loaded).sparsity == pytest.approx(0.75, abs=1e-6)
    for a, b in zip(_masked(model), _masked(loaded), strict=True):
        np.testing.assert_array_equal(a, b)
    for wrapper in tfr.pruning.wrappers(loaded):
        (pk,) = wrapper.pruned_kernels
        stored = keras.ops.convert_to_numpy(pk.variable)  # zeros on any backend
        np.testing.assert_array_equal(stored, backend_support.masked_value(pk))


def test_require_names_the_backend_and_the_fix():
    other = "jax" if BACKEND != "jax" else "torch"
    with pytest.raises(ImportError, match=f"the Keras backend is '{BACKEND}'") as info:
        backend_support.require("some.module", "cleverhans", backend=other)
    assert f"KERAS_BACKEND={other}" in str(info.value)
    with pytest.raises(ImportError, match="needs not_a_package_xyz"):
        backend_support.require(
            "some.module", "its reader", backend=None, package="not_a_package_xyz"
        )
    backend_support.require("some.module", "numpy", backend=BACKEND, package="numpy")


def test_lazy_attributes():
    assert "AdversarialModel" in dir(tfr)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tfr.nope  # noqa: B018
    if BACKEND == "tensorflow":
        assert tfr.AdversarialModel is tfr.adversarial.AdversarialModel
        assert tfr.evaluate_robustness is tfr.robustness.evaluate_robustness
    else:
        with pytest.raises(ImportError, match="KERAS_BACKEND=tensorflow"):
            tfr.AdversarialModel  # noqa: B018


NO_TENSORFLOW = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BLOCKED = ("tensorflow", "tensorflow_datasets", "cleverhans", "ai_edge_litert")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())

    import keras
    import numpy as np
    import tf_reweight as tfr

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 12)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8),
                              keras.layers.Dense(2)])
    pruned = tfr.apply(model, "unstructured", 0.5, penalty=1e-3)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    pruned.fit(x, y, epochs=2, batch_size=16, verbose=0,
               callbacks=[tfr.Reweight(), tfr.HardPrune(1)])
    assert abs(tfr.report(pruned).sparsity - 0.5) < 1e-6
    plain = tfr.strip(pruned)
    assert np.allclose(plain.predict(x, verbose=0), pruned.predict(x, verbose=0),
                       atol=1e-5)
    for name in ("AdversarialModel", "attacks", "data"):
        try:
            getattr(tfr, name)
        except ImportError as error:
            print(name, "->", error)
        else:
            raise AssertionError(name)
    assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
    print("OK")
    """
)


@pytest.mark.parametrize("backend", ["jax"])
def test_core_runs_without_tensorflow(backend):
    pytest.importorskip(backend)  # CI installs it; a plain test install may not.
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.strip().endswith("OK")
    assert (
        "AdversarialModel -> tf_reweight.robust.adversarial runs on the TensorFlow"
        in out
    )
    assert "the Keras backend is 'jax'. Set KERAS_BACKEND=tensorflow" in out
    assert "data -> tf_reweight.training.data needs tensorflow" in out
