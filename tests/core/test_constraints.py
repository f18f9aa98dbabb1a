import keras
import numpy as np

from tf_reweight import MaskConstraint, QuantizeConstraint


def test_mask_constraint_zeroes_masked_weights_then_applies_the_next():
    mask = keras.Variable(np.array([[1.0, 0.0], [0.0, 1.0]], "float32"))
    w = np.array([[0.3, -0.7], [0.2, -1.0]], "float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(MaskConstraint(mask)(w)), w * mask.numpy()
    )
    chained = MaskConstraint(mask, then=keras.constraints.NonNeg())
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(chained(w)), np.maximum(w * mask.numpy(), 0)
    )


def test_mask_constraint_config_round_trip():
    c = MaskConstraint(then=QuantizeConstraint(4))
    again = MaskConstraint.from_config(c.get_config())
    assert (
        isinstance(again.then, QuantizeConstraint)
        and again.then.get_config() == c.then.get_config()
    )
    assert again.mask is None
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(MaskConstraint()(np.ones(3))), np.ones(3)
    )


def test_mask_constraint_writes_exact_zeros_over_nan_and_inf():
    mask = keras.Variable(np.array([1.0, 0.0, 0.0, 1.0], "float32"))
    w = np.array([np.nan, np.nan, np.inf, 0.5], "float32")
    out = keras.ops.convert_to_numpy(MaskConstraint(mask)(w))
    assert np.isnan(out[0]) and out[3] == 0.5  # kept weights are untouched
    np.testing.assert_array_equal(out[1:3], 0.0)  # w * 0 would be NaN
    assert out.dtype == np.float32
