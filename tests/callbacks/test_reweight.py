"""Milestone reweighting: which epochs refresh, resumed or not."""

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.callbacks.admm_update import ADMMUpdate
from tf_reweight.callbacks.reweight import Reweight

RNG = np.random.default_rng(0)
X = RNG.uniform(size=(32, 6)).astype("float32")
Y = RNG.integers(0, 3, size=32)


def _pruned():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(3, name="d")(inputs)
    pruned = tfr.apply(keras.Model(inputs, outputs), "unstructured", 0.5, penalty=1e-3)
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return pruned


class RefreshProbe(keras.callbacks.Callback):
    """Records the epochs at whose start alpha was (last) refreshed."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        penalty = tfr.pruning.wrappers(self.model)[0].pruned_kernels[0].penalty
        step = int(keras.ops.convert_to_numpy(penalty.refreshed_at))
        # One step per epoch (batch size = the data set), so step == epoch.
        if step == epoch:
            self.epochs.append(epoch)


def _refresh_epochs(reweight, epochs, model=None, initial_epoch=0):
    model = model or _pruned()
    probe = RefreshProbe()
    model.fit(
        X,
        Y,
        batch_size=len(X),
        epochs=epochs,
        initial_epoch=initial_epoch,
        verbose=0,
        callbacks=[reweight, probe],
    )
    return model, probe.epochs


# Hand-written: the start of training, then the start of each milestone.
@pytest.mark.parametrize(
    "milestones, epochs, expected",
    [
        ([3, 6], 8, [0, 3, 6]),
        ([1], 4, [0, 1]),
        ([2, 3, 7], 7, [0, 2, 3]),  # 7 is never started: no refresh there
        ([], 3, [0]),  # only the first refresh
        (None, 4, [0, 1, 2, 3]),  # every=1: every epoch, as before
    ],
)
def test_milestones_refresh_exactly_at_the_listed_epochs(milestones, epochs, expected):
    _, seen = _refresh_epochs(Reweight(milestones=milestones), epochs)
    assert seen == expected


def test_resume_in_the_middle_refreshes_as_the_unbroken_run():
    _, unbroken = _refresh_epochs(Reweight(milestones=[2, 4, 5]), 7)
    model, first = _refresh_epochs(Reweight(milestones=[2, 4, 5]), 3)
    # A fresh callback on the resumed model, as after loading a checkpoint.
    _, second = _refresh_epochs(Reweight(milestones=[2, 4, 5]), 7, model, 3)
    assert unbroken == [0, 2, 4, 5]
    assert first + second == unbroken


def test_a_refresh_the_checkpoint_missed_is_made_up_at_the_milestone():
    # The checkpoint after epoch 1 missed the refresh due at epoch 2.
    model, _ = _refresh_epochs(Reweight(milestones=[5]), 2)
    _, seen = _refresh_epochs(Reweight(milestones=[2, 5]), 6, model, 2)
    assert seen == [2, 5]  # made up at the start of epoch 2 (step 2)


def test_milestones_config_round_trip_and_admm_passes_them_on():
    for callback in [Reweight(milestones=[10, 20]), ADMMUpdate(milestones=(4,))]:
        config = callback.get_config()
        again = type(callback).from_config(config)
        assert again.get_config() == config
        assert again.milestones == callback.milestones
    assert Reweight().get_config() == {"every": 1, "unit": "epoch", "milestones": None}


@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"milestones": [0, 10]}, "milestones=[0, 10]"),
        ({"milestones": [10, 10]}, "milestones=[10, 10]"),
        ({"milestones": [20, 10]}, "milestones=[20, 10]"),
        ({"milestones": "10"}, "milestones='10'"),
        ({"milestones": [1.5]}, "milestones=[1.5]"),
        ({"milestones": [True]}, "milestones=[True]"),
        ({"milestones": [10], "every": 2}, "every=2"),
        ({"milestones": [10], "unit": "step"}, "unit='step'"),
    ],
)
def test_bad_milestones_are_refused(kwargs, received):
    with pytest.raises(ValueError, match="Received: .*" + received.replace("[", r"\[")):
        Reweight(**kwargs)
