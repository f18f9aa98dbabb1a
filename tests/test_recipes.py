"""A short real-data run: LeNet-300-100 on a slice of MNIST."""

import keras
import numpy as np

import tf_reweight as tfr
from tf_reweight import data, models, recipes


def test_lenet_300_100_reaches_90_percent_sparsity_at_95_percent_accuracy(data_dir):
    (x, y), (x_test, y_test) = data.load("mnist", data_dir)
    train = (x[:12000], y[:12000])
    keras.utils.set_random_seed(0)
    dense = recipes.compile_classifier(models.lenet_300_100())
    dense.fit(*train, batch_size=64, epochs=3, verbose=0)
    result = recipes.reweighted_prune(
        dense,
        train,
        target=0.9,
        penalty=1e-5,
        reweight_epochs=2,
        retrain_epochs=2,
        batch_size=64,
        verbose=0,
    )
    rep = tfr.report(result.model)
    accuracy = result.model.evaluate(x_test, y_test, verbose=0)[1]
    assert rep.sparsity >= 0.9 - 1e-6
    assert accuracy >= 0.95, accuracy
    assert np.isfinite(result.history["loss"]).all()


def test_two_phase_lr_is_constant_then_cosine():
    schedule = recipes.two_phase_lr(2, 3, lr=1e-3, final_lr=1e-5)
    np.testing.assert_allclose(
        [schedule(e) for e in range(5)], [1e-3, 1e-3, 1e-3, 5.05e-4, 1e-5], rtol=1e-6
    )
