"""The one validator module: argument checks shared by the whole library.

Every check raises a Keras-style `ValueError` (what is wrong, what was
expected, ``Received: name=value``) and refuses what Python would otherwise
coerce silently: booleans, strings, NaN and infinity.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np


def expected_number(
    low: float | None = None, strict: bool = False, high: float | None = None
) -> str:
    """What `check_number` accepts, in words, for error messages.

    Args:
        low: The lower bound, or None.
        strict: Whether the value must exceed ``low``.
        high: The (inclusive) upper bound, or None.

    Returns:
        A phrase such as ``"a positive finite number"``.

    Example:
    >>> expected_number(0.0, strict=True)
    'a positive finite number'
    """
    if high is not None:
        if low is None:
            return f"a finite number <= {high:g}"
        return f"a number in {'(' if strict else '['}{low:g}, {high:g}]"
    if low is None:
        return "a finite number"
    if low == 0:
        return "a positive finite number" if strict else "a non-negative finite number"
    return f"a finite number {'>' if strict else '>='} {low:g}"


def expected_int(low: int = 0) -> str:
    """What `check_int` accepts, in words, for error messages.

    Args:
        low: The smallest value allowed.

    Returns:
        A phrase such as ``"a positive integer"``.

    Example:
    >>> expected_int(0)
    'an integer >= 0'
    """
    return "a positive integer" if low == 1 else f"an integer >= {low}"


def check_number(
    name: str,
    value,
    low: float | None = None,
    *,
    strict: bool = False,
    high: float | None = None,
) -> float:
    """Returns ``value`` as a float if it is a finite real number above ``low``.

    Args:
        name: The argument's name, for the error message.
        value: The value to check.
        low: The lower bound, or None.
        strict: Whether ``value`` must exceed ``low`` (else equal is fine).
        high: The upper bound (``value`` may equal it), or None.

    Returns:
        ``float(value)``.

    Raises:
        ValueError: For a bool, a string, None, NaN, infinity or a number
            outside the bounds.

    Example:
    >>> check_number("eps", 1e-3, 0.0, strict=True)
    0.001
    """
    real = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    ok = real and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        raise ValueError(
            f"`{name}` must be {expected_number(low, strict, high)}. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def check_number_or_auto(
    name: str, value, low: float | None = None, *, strict: bool = False
) -> float | str:
    """Like `check_number`, but the string ``"auto"`` passes through.

    Args:
        name: The argument's name, for the error message.
        value: The value to check.
        low: The lower bound, or None.
        strict: Whether ``value`` must exceed ``low``.

    Returns:
        ``"auto"``, or ``float(value)``.

    Raises:
        ValueError: For anything `check_number` refuses, other than ``"auto"``.

    Example:
    >>> check_number_or_auto("eps", "auto", 0.0, strict=True)
    'auto'
    """
    if isinstance(value, str) and value == "auto":
        return value
    try:
        return check_number(name, value, low, strict=strict)
    except ValueError:
        raise ValueError(
            f"`{name}` must be {expected_number(low, strict)} or 'auto'. "
            f"Received: {name}={value!r}"
        ) from None


def check_int(name: str, value, low: int = 0) -> int:
    """Returns ``value`` as an int if it is an integer (not a bool) >= ``low``.

    Args:
        name: The argument's name, for the error message.
        value: The value to check.
        low: The smallest value allowed.

    Returns:
        ``int(value)``.

    Raises:
        ValueError: For a bool, a float, a string or an integer below ``low``.

    Example:
    >>> check_int("every", 2, low=1)
    2
    """
    integer = isinstance(value, numbers.Integral) and not isinstance(
        value, (bool, np.bool_)
    )
    if not (integer and value >= low):
        raise ValueError(
            f"`{name}` must be {expected_int(low)}. Received: {name}={value!r}"
        )
    return int(value)


def check_bool(name: str, value) -> bool:
    """Returns ``value`` if it is a bool (Python or NumPy).

    Args:
        name: The argument's name, for the error message.
        value: The value to check.

    Returns:
        ``bool(value)``.

    Raises:
        ValueError: For anything else, such as the string ``"False"``.

    Example:
    >>> check_bool("squared", False)
    False
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return bool(value)


def check_choice(name: str, value, choices) -> str:
    """Returns ``value`` if it is one of ``choices``.

    Args:
        name: The argument's name, for the error message.
        value: The value to check.
        choices: The values allowed (strings).

    Returns:
        ``value``.

    Raises:
        ValueError: For anything else.

    Example:
    >>> check_choice("kind", "pgd", ("pgd", "fgsm"))
    'pgd'
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"`{name}` must be one of {list(choices)}. Received: {name}={value!r}"
        )
    return value


def check_milestones(milestones, name: str = "milestones") -> tuple[int, ...] | None:
    """Validates refresh milestones: None, or increasing epoch numbers > 0.

    Args:
        milestones: None, or a list or tuple of epoch numbers (empty: no
            refresh after the first).
        name: The argument's name, for the error message.

    Returns:
        None, or the milestones as a tuple of ints.

    Raises:
        ValueError: For anything else, such as ``[10, 10]`` or ``[0, 5]``.

    Example:
    >>> check_milestones([10, 20])
    (10, 20)
    """
    if milestones is None:
        return None
    expected = (
        f"`{name}` must be None or a strictly increasing list of "
        f"epoch numbers > 0, such as [10, 20, 30]. Received: {name}={milestones!r}"
    )
    if isinstance(milestones, str) or not isinstance(milestones, Sequence):
        raise ValueError(expected)
    try:
        values = tuple(check_int(name, m, low=1) for m in milestones)
    except ValueError:
        raise ValueError(expected) from None
    if list(values) != sorted(set(values)):
        raise ValueError(expected)
    return values
