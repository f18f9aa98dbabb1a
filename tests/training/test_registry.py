"""The public method registry and its use by `recipes.prune`."""

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.training import recipes, registry


def _mlp() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu", name="a"),
            keras.layers.Dense(3, name="b"),
        ]
    )


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 3, 64)


def test_builtin_methods_are_registered_with_their_defaults():
    assert list(tfr.registry.METHODS)[:4] == [
        "reweighted",
        "admm",
        "group_lasso",
        "magnitude",
    ]
    assert tfr.get_method("admm").default_penalty == 1e-3
    assert tfr.get_method("magnitude").one_shot
    assert tfr.get_method("reweighted").apply_options == (
        "eps",
        "squared",
        "bounded",
        "spare_scale_free",
    )
    assert recipes.DEFAULT_PENALTY["reweighted"] == "auto"
    assert recipes.DEFAULT_OPTIONS["admm"]["every"] == 100
    assert "magnitude" in recipes.METHODS


def test_registry_views_are_read_only():
    with pytest.raises(TypeError):
        recipes.DEFAULT_PENALTY["admm"] = 1.0
    with pytest.raises(TypeError):
        recipes.DEFAULT_OPTIONS["admm"]["every"] = 1
    with pytest.raises(Exception):  # noqa: B017 - frozen dataclass
        tfr.get_method("admm").default_penalty = 1.0


def test_unknown_method_lists_the_registered_names():
    with pytest.raises(
        ValueError, match=r"Expected one of \['reweighted', 'admm'.*method='nope'"
    ):
        tfr.get_method("nope")
    with pytest.raises(ValueError, match="method='nope'"):
        recipes.prune(_mlp(), _data(), method="nope")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "has space"}, "name='has space'"),
        ({"penalty": 3}, "penalty=3"),
        ({"default_penalty": -1.0}, "default_penalty=-1.0"),
        ({"apply_options": "eps"}, "apply_options='eps'"),
        ({"one_shot": 1}, "one_shot=1"),
    ],
)
def test_bad_method_entries_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfr.Method(**{"name": "x", "penalty": lambda value: None, **kwargs})


def test_register_refuses_non_methods_and_taken_names():
    with pytest.raises(ValueError, match="Received: method='l1'"):
        tfr.register_method("l1")
    with pytest.raises(ValueError, match="already registered"):
        tfr.register_method(tfr.Method("admm", penalty=lambda value: None))
    assert tfr.get_method("admm").default_penalty == 1e-3


class _Counter(keras.callbacks.Callback):
    def __init__(self, every=1):
        super().__init__()
        self.every, self.epochs = every, 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1


@pytest.fixture
def lasso_method():
    seen = []

    def callbacks(**options):
        seen.append(_Counter(**options))
        return seen[-1:]

    method = tfr.register_method(
        tfr.Method(
            "test_lasso",
            penalty=lambda value: tfr.GroupLassoPenalty(value),
            callbacks=callbacks,
            default_penalty=1e-3,
            default_options={"every": 1},
        ),
        override=True,
    )
    yield method, seen
    registry._REGISTRY.pop("test_lasso")


def test_a_registered_method_runs_through_prune(lasso_method):
    _, seen = lasso_method
    assert "test_lasso" in recipes.METHODS
    assert recipes.DEFAULT_PENALTY["test_lasso"] == 1e-3
    keras.utils.set_random_seed(0)
    result = recipes.prune(
        _mlp(),
        _data(),
        method="test_lasso",
        target=0.75,
        phase1_epochs=1,
        retrain_epochs=1,
        batch_size=32,
        verbose=0,
        method_options={"every": 2},
    )
    assert (result.method, result.penalty, result.epochs) == ("test_lasso", 1e-3, 2)
    assert [(c.every, c.epochs) for c in seen] == [(2, 2)]
    layer = result.model.get_layer("a")
    assert isinstance(layer.method, tfr.GroupLassoPenalty)
    assert layer.is_pruned
    assert tfr.report(result.model).sparsity == pytest.approx(0.75, abs=0.01)
    with pytest.raises(ValueError, match=r"\['eps'\] configure other methods"):
        recipes.prune(_mlp(), _data(), method="test_lasso", eps=1e-3)


def test_magnitude_adds_no_loss_term_and_prunes_at_epoch_0():
    x, y = _data()
    keras.utils.set_random_seed(0)
    result = recipes.prune(
        _mlp(),
        (x, y),
        method="magnitude",
        target=0.75,
        phase1_epochs=1,
        retrain_epochs=1,
        batch_size=32,
        verbose=0,
    )
    model = result.model
    model(x[:4])
    assert model.losses == []
    assert all(w.method is None for w in tfr.pruning.wrappers(model))
    # Pruned at the start of epoch 0: the first epoch already ends sparse.
    final = tfr.report(model)
    assert final.sparsity == pytest.approx(0.75, abs=0.01)
    assert result.history["sparsity_a"][0] == final.rows[0].sparsity > 0.5
    assert result.penalty == 0.0
    with pytest.raises(ValueError, match="Magnitude pruning uses no penalty"):
        recipes.prune(_mlp(), (x, y), method="magnitude", penalty=1e-4)
    with pytest.raises(ValueError, match="no phase-1 callback"):
        recipes.prune(_mlp(), (x, y), method="magnitude", method_options={"a": 1})
