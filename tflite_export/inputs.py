"""The models and input batches that `export` and `verify` accept.

Both take a built Keras model with one input and one output, and batches of
finite inputs shaped like that input; `random_sample` draws such a batch when
the caller has none.
"""

from __future__ import annotations

import keras
import numpy as np


def random_sample(model: keras.Model, num_samples: int, seed: int = 0) -> np.ndarray:
    """Draws a uniform [0, 1) batch shaped like the model's single input.

    Args:
        model: A built Keras model with one input of known non-batch shape.
        num_samples: Batch size of the returned array.
        seed: Seed of the NumPy generator.

    Returns:
        A float32 array of shape `(num_samples, *input_shape)`.

    Example:

    ```python
    x = random_sample(model, 8)
    ```
    """
    validate_model(model)
    shape = tuple(model.inputs[0].shape[1:])
    if None in shape:
        raise ValueError(
            "Cannot draw a random sample for an input with unknown dimensions; "
            f"pass a sample instead. Received: input shape {(None, *shape)}"
        )
    rng = np.random.default_rng(seed)
    return rng.random((num_samples, *shape), dtype=np.float32)


def validate_model(model: keras.Model) -> None:
    """Checks that `model` is a built Keras model with one input and output.

    Args:
        model: The object to check.

    Raises:
        ValueError: If it is not.

    Example:

    ```python
    validate_model(model)
    ```
    """
    if not isinstance(model, keras.Model) or not model.built or not model.inputs:
        raise ValueError(
            "Expected a built Keras model with known inputs (call it on data or "
            f"build it from an `Input`). Received: model={model!r}"
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "Expected a model with one input and one output. Received: "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs"
        )


def validate_batch(x, name: str, model: keras.Model | None = None) -> np.ndarray:
    """Checks that `x` is a non-empty batch, shaped like `model`'s input if given.

    Args:
        x: Array-like batch of inputs.
        name: Argument name used in the error message.
        model: Optional model whose input shape `x` must match.

    Returns:
        `x` as a float32 array.

    Raises:
        ValueError: If `x` is empty, holds NaN or inf, or does not fit the
            model's input.

    Example:

    ```python
    x = validate_batch(x, "sample", model)
    ```
    """
    x = np.asarray(x)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(
            f"Expected `{name}` to be a non-empty batch of inputs. "
            f"Received: {name} with shape {x.shape}"
        )
    if np.issubdtype(x.dtype, np.number) and not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(
            f"Expected `{name}` to hold finite values. Received: {name} with "
            f"{bad} NaN or inf values of {x.size}"
        )
    if model is not None:
        expected = tuple(model.inputs[0].shape[1:])
        fits = len(expected) == x.ndim - 1 and all(
            e is None or e == d for e, d in zip(expected, x.shape[1:], strict=True)
        )
        if not fits:
            raise ValueError(
                f"Expected `{name}` of shape (batch, *{expected}). "
                f"Received: {name} with shape {x.shape}"
            )
    return x.astype(np.float32)
