"""Argument checks shared by the command-line tools.

The ``type=`` converters of `argparse` arguments (`positive_int`,
`non_negative_int`, `positive_float`, `non_negative_float`, `fraction`,
`target`, `structure`), the check of an output directory (`check_out_dir`),
and the one loader of ``.keras`` files (`load_keras`). Every check raises
before anything is loaded or written, with one line that names the argument,
says what is wrong and what is expected.

The converters only parse the text: what a valid number, integer, target or
structure is, and how it is worded, is decided by `tf_reweight.core`
(`checks`, `budget.parse_target`, `presets.check`).
"""

from __future__ import annotations

import argparse
import functools
import os
import zipfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import keras

from tf_reweight.core import budget, presets
from tf_reweight.core import checks as core_checks

# What loading a damaged or foreign `.keras` file raises.
_LOAD_ERRORS = (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile)


def _number(text: str) -> float:
    """A float given as ``0.03``, ``8/255`` or ``3e-2``; ValueError if not one."""
    try:
        return float(Fraction(text.strip()))
    except (ZeroDivisionError, OverflowError) as error:
        raise ValueError(f"not a finite number: {text!r}") from error


def _argument_type(parse: Callable, check: Callable, expected: str, name: str):
    """An argparse ``type=``: ``parse`` the text, then the core ``check``.

    `tf_reweight.core.checks` decides what is valid and words what it
    expects; this only turns the text into a value and the refusal into the
    one-line error that argparse prints after the argument's name.
    """

    def convert(text: str):
        try:
            return check(name, parse(text))
        except ValueError as error:
            raise argparse.ArgumentTypeError(
                f"expected {expected}. Received: {text!r}"
            ) from error

    convert.__name__ = name
    return convert


_EXAMPLES = " such as 0.03, 3e-2 or 8/255"

positive_int = _argument_type(
    int,
    functools.partial(core_checks.check_int, low=1),
    core_checks.expected_int(1),
    "positive_int",
)
non_negative_int = _argument_type(
    int,
    functools.partial(core_checks.check_int, low=0),
    core_checks.expected_int(0),
    "non_negative_int",
)
positive_float = _argument_type(
    _number,
    functools.partial(core_checks.check_number, low=0.0, strict=True),
    core_checks.expected_number(0.0, strict=True) + _EXAMPLES,
    "positive_float",
)
non_negative_float = _argument_type(
    _number,
    functools.partial(core_checks.check_number, low=0.0),
    core_checks.expected_number(0.0) + _EXAMPLES,
    "non_negative_float",
)


def _number_or_auto(text: str) -> float | str:
    """``auto``, or a number as `_number` reads it."""
    return "auto" if text.strip() == "auto" else _number(text)


non_negative_float_or_auto = _argument_type(
    _number_or_auto,
    functools.partial(core_checks.check_number_or_auto, low=0.0),
    core_checks.expected_number(0.0) + " or auto" + _EXAMPLES,
    "non_negative_float_or_auto",
)
positive_float_or_auto = _argument_type(
    _number_or_auto,
    functools.partial(core_checks.check_number_or_auto, low=0.0, strict=True),
    core_checks.expected_number(0.0, strict=True) + " or auto" + _EXAMPLES,
    "positive_float_or_auto",
)
fraction = _argument_type(
    _number,
    functools.partial(core_checks.check_number, low=0.0, high=1.0),
    core_checks.expected_number(0.0, high=1.0) + _EXAMPLES,
    "fraction",
)


def target(text: str) -> float | str:
    """An argparse type: a sparsity (``0.98``) as a float or a rate (``50x``) as is.

    Args:
        text: The command-line text.

    Returns:
        The float sparsity, or the rate string, valid for
        `tf_reweight.parse_target`.

    Example:
    >>> target("16x"), target("0.9375")
    ('16x', 0.9375)
    """
    value = text
    if not text.strip().lower().endswith("x"):
        try:
            value = _number(text)
        except ValueError:
            pass  # not a number: `parse_target` refuses the text itself
    try:
        budget.parse_target(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return value


def structure(text: str) -> str:
    """An argparse type: a structure name or a preset (`core.presets.check`).

    Args:
        text: The command-line text, such as ``"filter"``, ``"block:4x4"`` or
            ``"litert"``.

    Returns:
        ``text`` unchanged.

    Example:
    >>> structure("2:4")
    '2:4'
    """
    try:
        presets.check(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text


def check_out_dir(path: str, name: str = "--out") -> Path:
    """Checks that ``path`` is, or can be created as, a writable directory.

    Nothing is created: the caller makes the directory once every other
    check has passed, so that a refused run leaves nothing behind.

    Args:
        path: The output directory.
        name: The argument named in the error message.

    Returns:
        ``path`` as a `Path`.

    Raises:
        ValueError: If ``path`` (or the nearest existing folder above it) is
            not a directory, or is not writable.

    Example:
    >>> out = check_out_dir("runs/compress")
    """
    out = Path(path)
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "it" if existing == out else f"{existing}, a folder above it,"
        raise ValueError(
            f"argument {name}: {where} exists and is not a directory. Expected "
            f"a directory to write the run into (new or existing). Received: {path}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"argument {name}: the directory {existing} is not writable. Expected "
            f"a place where this user may write. Received: {path}"
        )
    return out


def load_keras(path: str, name: str, compile: bool = True) -> keras.Model:
    """Loads a ``.keras`` file, with a clear error when it is not one.

    Args:
        path: The ``.keras`` file.
        name: The argument named in the error message.
        compile: Whether to restore the training configuration.

    Returns:
        The loaded model (tf_reweight's layers are registered on import).

    Raises:
        ValueError: If the file is missing or is not a valid ``.keras``
            archive.

    Example:
    >>> model = load_keras("runs/compress/model.keras", "--checkpoint")
    """
    if not Path(path).is_file():
        raise ValueError(
            f"argument {name}: no such file. Expected a .keras file saved with "
            f"`model.save(...)`. Received: {path}"
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"argument {name}: {path} is not a valid .keras archive (not a zip "
            "file; truncated or another format?). Save the model again with "
            "`model.save('model.keras')`."
        )
    try:
        return keras.saving.load_model(path, compile=compile)
    except _LOAD_ERRORS as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"argument {name}: {path} is not a valid .keras archive ({why}). "
            "Save the model again with `model.save('model.keras')`."
        ) from e
