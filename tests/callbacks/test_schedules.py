import numpy as np
import pytest
import tensorflow as tf

from tf_reweight.callbacks.schedules import PolynomialSparsity, ProgressiveSparsity


def test_polynomial_matches_zhu_gupta_formula():
    s = PolynomialSparsity(0.9, begin_step=10, end_step=110, initial_sparsity=0.1)
    for step in [0, 10, 35, 60, 110, 500]:
        p = np.clip((step - 10) / 100, 0, 1)
        expected = 0.9 + (0.1 - 0.9) * (1 - p) ** 3
        assert float(s(step)) == pytest.approx(expected, abs=1e-6)


def test_progressive_stages():
    s = ProgressiveSparsity((2, 4, 8, 16), steps_per_stage=5)
    got = [float(s(t)) for t in [0, 4, 5, 12, 15, 99]]
    np.testing.assert_allclose(got, [0.5, 0.5, 0.75, 0.875, 0.9375, 0.9375])
    assert s.final == pytest.approx(0.9375) and s.end_step == 15


def test_schedules_trace_in_tf_function():
    for s in [PolynomialSparsity(0.8, 0, 10), ProgressiveSparsity((2, 4), 3)]:
        traced = tf.function(lambda step, s=s: s(step))
        assert float(traced(tf.constant(7))) == pytest.approx(float(s(7)))


def test_config_round_trip_and_errors():
    for s in [PolynomialSparsity("10x", 5, 50), ProgressiveSparsity((2, 8), 4, 1)]:
        assert type(s).from_config(s.get_config()).get_config() == s.get_config()
    with pytest.raises(ValueError, match="begin_step"):
        PolynomialSparsity(0.9, 10, 10)
    with pytest.raises(ValueError, match="rates"):
        ProgressiveSparsity((4, 2), 3)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: PolynomialSparsity(0.9, "0", 10), "begin_step"),
        (lambda: PolynomialSparsity(0.9, 0, 10.5), "end_step"),
        (lambda: PolynomialSparsity(0.9, True, 10), "begin_step"),
        (lambda: PolynomialSparsity(0.9, 0, 10, initial_sparsity="0.1"), "initial"),
        (lambda: PolynomialSparsity(0.9, 0, 10, power=float("nan")), "power"),
        (lambda: PolynomialSparsity(0.9, 0, 10, power=float("inf")), "power"),
        (lambda: ProgressiveSparsity((2, float("inf")), 5), "rates"),
        (lambda: ProgressiveSparsity("24", 5), "rates"),
        (lambda: ProgressiveSparsity((2, True), 5), "rates"),
        (lambda: ProgressiveSparsity((2, 4), True), "steps_per_stage"),
        (lambda: ProgressiveSparsity((2, 4), 2.5), "steps_per_stage"),
    ],
)
def test_schedules_refuse_strings_bools_nan_and_inf(build, name):
    with pytest.raises(ValueError, match=name):
        build()


def test_schedules_are_pure_functions_of_the_step():
    for s in [PolynomialSparsity(0.8, 2, 10), ProgressiveSparsity((2, 4, 8), 3)]:
        state = dict(vars(s))
        steps = [9, 0, 5, 9, 12, 0]
        values = [float(s(t)) for t in steps]
        again = [float(s(t)) for t in reversed(steps)][::-1]
        assert values == again
        assert values[0] == values[3] and values[1] == values[5]
        assert vars(s) == state
