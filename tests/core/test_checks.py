"""Tests for `tf_reweight.core.checks`: the one validator module."""

import math

import numpy as np
import pytest

from tf_reweight.core import checks


@pytest.mark.parametrize("value", [0.5, 1, np.float32(2.0)])
def test_check_number_accepts_finite_reals(value):
    assert checks.check_number("x", value, 0.0) == float(value)


@pytest.mark.parametrize("value", [True, "1", None, math.nan, math.inf, -1.0])
def test_check_number_refuses_with_the_received_value(value):
    with pytest.raises(ValueError, match=r"`x` must be .*Received: x="):
        checks.check_number("x", value, 0.0)


def test_check_number_strict_bound():
    with pytest.raises(ValueError, match="positive"):
        checks.check_number("x", 0.0, 0.0, strict=True)


@pytest.mark.parametrize("value", [1, np.int64(3)])
def test_check_int_accepts_integers(value):
    assert checks.check_int("n", value, 1) == int(value)


@pytest.mark.parametrize("value", [0, True, 1.0, "2"])
def test_check_int_refuses(value):
    with pytest.raises(ValueError, match=r"`n` must be a positive integer\. Received"):
        checks.check_int("n", value, 1)


def test_check_bool_refuses_strings():
    assert checks.check_bool("b", np.bool_(True)) is True
    with pytest.raises(ValueError, match="True or False"):
        checks.check_bool("b", "False")


def test_check_choice():
    assert checks.check_choice("kind", "pgd", ("pgd", "fgsm")) == "pgd"
    for bad in ("PGD", 1, None):
        with pytest.raises(ValueError, match=r"one of \['pgd', 'fgsm'\]"):
            checks.check_choice("kind", bad, ("pgd", "fgsm"))


def test_check_number_upper_bound_is_inclusive():
    assert checks.check_number("p", 1.0, 0.0, high=1.0) == 1.0
    with pytest.raises(ValueError, match=r"`p` must be a number in \[0, 1\]"):
        checks.check_number("p", 1.5, 0.0, high=1.0)


def test_the_wording_of_the_checks_is_public():
    assert checks.expected_int(1) == "a positive integer"
    assert checks.expected_number(0.0, strict=True) == "a positive finite number"
    with pytest.raises(ValueError, match=checks.expected_int(3)):
        checks.check_int("n", 2, 3)
