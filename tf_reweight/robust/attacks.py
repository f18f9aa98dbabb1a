"""Validated adversarial attacks built on `cleverhans.tf2.attacks`.

`craft` runs a `tf_reweight.robust.attack.Attack` over cleverhans; `pgd`
(Madry et al.) and `fgsm` (Goodfellow et al., optionally with the random
start of Wong et al.) are its functional forms. They fix cleverhans' sharp
edges:

- PGD starts from a uniformly random point of the eps-ball (cleverhans'
  ``rand_init=None`` default silently runs BIM instead);
- labels are always the true labels, never the model's own predictions;
- cleverhans' ``sanity_checks`` (broken under NumPy 2) are replaced by
  `ValueError` checks made before any work is done.

The functions are TensorFlow ops: they run eagerly or trace inside a
`tf.function` (such as a Keras ``train_step``). ``model_fn`` must return
logits. Two cleverhans constraints apply: its gradient helper is one shared
`tf.function`, so pass the same callable on every call (the model itself is
fine; a new lambda per call retraces), and call a model once before attacking
it (a model whose variables are created lazily inside the attack fails with
"Creating variables on a non-first call").
"""

from __future__ import annotations

from tf_reweight.core.backend_support import require

require(__name__, "cleverhans")

from collections.abc import Callable

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.attacks.projected_gradient_descent import (
    projected_gradient_descent,
)
from cleverhans.tf2.utils import clip_eta, random_lp_vector

from tf_reweight.robust.attack import Attack

Clip = tuple[float, float] | None


def craft(attack: Attack, model_fn: Callable, x, y, loss_fn: Callable | None = None):
    """Runs ``attack`` on a batch: the adversarial examples it finds.

    Args:
        attack: The `Attack` (kind, epsilon, steps, step size, norm, clip,
            random start).
        model_fn: Callable mapping a batch of inputs to logits, e.g. a model.
        x: Float inputs, shape ``(batch, ...)``.
        y: True labels: integer class ids of shape ``(batch,)``. With a custom
            ``loss_fn``, any tensor whose first axis is the batch.
        loss_fn: Loss to maximize, called as ``loss_fn(labels=y, logits=...)``
            and returning one value per example. Defaults to the softmax cross
            entropy with integer labels.

    Returns:
        The adversarial examples, a float32 tensor shaped like ``x``.

    Raises:
        ValueError: If ``attack`` is not an `Attack`, or ``x`` or ``y`` is not
            a batch of float inputs and one integer label per example.

    Example:

    ```python
    x_adv = craft(Attack(kind="pgd", epsilon=0.3, steps=40), model, x, y)
    robust_acc = np.mean(np.argmax(model(x_adv), -1) == y)
    ```
    """
    if not isinstance(attack, Attack):
        raise ValueError(f"`attack` must be an `Attack`. Received: attack={attack!r}")
    x, y, loss_fn = _prepare(x, y, loss_fn)
    run = _pgd if attack.kind == "pgd" else _fgsm
    return run(attack, model_fn, x, y, loss_fn)


def pgd(
    model_fn: Callable,
    x,
    y,
    eps: float,
    step_size: float | None = None,
    steps: int = 10,
    norm: float | str = np.inf,
    rand_init: bool = True,
    clip: Clip = (0.0, 1.0),
    loss_fn: Callable | None = None,
) -> tf.Tensor:
    """Projected gradient descent (PGD) attack, untargeted.

    Starting from a random point of the eps-ball around ``x`` (or from ``x``
    itself when ``rand_init=False``, i.e. BIM), takes ``steps`` steepest-ascent
    steps of size ``step_size`` on the loss, projecting back onto the eps-ball
    and into ``clip`` after each step. The same as `craft` with
    ``Attack(kind="pgd", ...)``.

    Args:
        model_fn: Callable mapping a batch of inputs to logits, e.g. a model.
        x: Float inputs, shape ``(batch, ...)``.
        y: True labels (see `craft`).
        eps: Radius of the perturbation ball, ``>= 0``.
        step_size: Size of one step, at most ``eps``. Defaults to
            ``min(eps, 2.5 * eps / steps)`` (Madry et al.).
        steps: Number of steps, ``>= 1``.
        norm: ``np.inf`` (or ``"inf"``) or ``2``.
        rand_init: Start from a uniform random point of the eps-ball.
        clip: ``(min, max)`` range of valid inputs, or None for no clipping.
        loss_fn: Loss to maximize (see `craft`).

    Returns:
        The adversarial examples, a float32 tensor shaped like ``x``.

    Raises:
        ValueError: If ``eps < 0``, ``steps < 1``, ``step_size`` is negative
            or larger than ``eps``, ``norm`` or ``clip`` is invalid, or ``y``
            is not one integer label per example of ``x``.

    Example:

    ```python
    x_adv = pgd(model, x, y, eps=0.3, steps=40, step_size=0.01)
    ```

    References:
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial
        Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083.
    """
    attack = Attack(
        kind="pgd",
        epsilon=eps,
        steps=steps,
        step_size=step_size,
        norm=norm,
        clip=clip,
        random_start=rand_init,
    )
    return craft(attack, model_fn, x, y, loss_fn)


def fgsm(
    model_fn: Callable,
    x,
    y,
    eps: float,
    rand_init: bool = False,
    step_size: float | None = None,
    norm: float | str = np.inf,
    clip: Clip = (0.0, 1.0),
    loss_fn: Callable | None = None,
) -> tf.Tensor:
    """Fast gradient sign method (FGSM), optionally with a random start.

    Without ``rand_init`` this is one gradient step of size ``eps``
    (Goodfellow et al.). With ``rand_init`` it is the "fast adversarial
    training" attack of Wong et al.: a uniform random start in the eps-ball,
    one step of size ``step_size`` (default ``1.25 * eps``), then projection
    back onto the eps-ball and into ``clip``. The same as `craft` with
    ``Attack(kind="fgsm", ...)``.

    Args:
        model_fn: Callable mapping a batch of inputs to logits, e.g. a model.
        x: Float inputs, shape ``(batch, ...)``.
        y: True labels (see `craft`).
        eps: Radius of the perturbation ball, ``>= 0``.
        rand_init: Start from a uniform random point of the eps-ball.
        step_size: Size of the gradient step. Defaults to ``eps``, or
            ``1.25 * eps`` with ``rand_init``. The result is always projected
            onto the eps-ball.
        norm: ``np.inf`` (or ``"inf"``) or ``2``.
        clip: ``(min, max)`` range of valid inputs, or None for no clipping.
        loss_fn: Loss to maximize (see `craft`).

    Returns:
        The adversarial examples, a float32 tensor shaped like ``x``.

    Raises:
        ValueError: If ``eps < 0``, ``step_size < 0``, ``norm`` or ``clip`` is
            invalid, or ``y`` is not one integer label per example of ``x``.

    Example:

    ```python
    x_adv = fgsm(model, x, y, eps=0.1, rand_init=True)  # Wong et al.
    ```

    References:
        Goodfellow et al., "Explaining and Harnessing Adversarial Examples",
        ICLR 2015, https://arxiv.org/abs/1412.6572.
        Wong et al., "Fast is better than free: Revisiting adversarial
        training", ICLR 2020, https://arxiv.org/abs/2001.03994.
    """
    attack = Attack(
        kind="fgsm",
        epsilon=eps,
        step_size=step_size,
        norm=norm,
        clip=clip,
        random_start=rand_init,
    )
    return craft(attack, model_fn, x, y, loss_fn)


def _pgd(attack: Attack, model_fn, x, y, loss_fn) -> tf.Tensor:
    clip_min, clip_max = attack.clip if attack.clip is not None else (None, None)
    return projected_gradient_descent(
        model_fn,
        x,
        attack.epsilon,
        attack.resolved_step_size,
        attack.steps,
        attack.ord,
        loss_fn=loss_fn,
        clip_min=clip_min,
        clip_max=clip_max,
        y=y,
        rand_init=attack.random_start,
        rand_minmax=attack.epsilon,
        sanity_checks=False,
    )


def _fgsm(attack: Attack, model_fn, x, y, loss_fn) -> tf.Tensor:
    clip, eps, norm = attack.clip, attack.epsilon, attack.ord
    clip_min, clip_max = clip if clip is not None else (None, None)
    start = x
    if attack.random_start:
        start = x + random_lp_vector(tf.shape(x), norm, eps, dtype=x.dtype)
        if clip is not None:
            start = tf.clip_by_value(start, clip_min, clip_max)
    x_adv = fast_gradient_method(
        model_fn,
        start,
        attack.resolved_step_size,
        norm,
        loss_fn=loss_fn,
        clip_min=clip_min,
        clip_max=clip_max,
        y=y,
        sanity_checks=False,
    )
    x_adv = x + clip_eta(x_adv - x, norm, eps)
    if clip is not None:
        x_adv = tf.clip_by_value(x_adv, clip_min, clip_max)
    return x_adv


def check_labels(x, y) -> None:
    """Raises `ValueError` unless ``y`` holds one integer class id per example.

    Args:
        x: The inputs, shape ``(batch, ...)``.
        y: The labels; must have integer dtype and shape ``(batch,)``.
    """
    y = tf.convert_to_tensor(y)
    if not y.dtype.is_integer or y.shape.rank != 1:
        raise ValueError(
            "`y` must hold integer class ids, shape (batch,). Received: "
            f"y with dtype={y.dtype.name} and shape={y.shape}"
        )
    _check_batch(tf.convert_to_tensor(x), y)


def _check_batch(x: tf.Tensor, y: tf.Tensor) -> None:
    batch, labels = x.shape[0], y.shape[0] if y.shape.rank else None
    if not y.shape.rank or (batch is not None and labels not in (None, batch)):
        raise ValueError(
            "`y` must have one entry per example of `x`. Received: "
            f"y with shape={y.shape} for x with shape={x.shape}"
        )


def _prepare(x, y, loss_fn):
    """Converts and checks inputs and labels; returns them and the loss."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating or x.shape.rank is None or x.shape.rank < 2:
        raise ValueError(
            "`x` must be a float tensor of shape (batch, ...). Received: "
            f"x with dtype={x.dtype.name} and shape={x.shape}"
        )
    x, y = tf.cast(x, tf.float32), tf.convert_to_tensor(y)
    if loss_fn is not None:
        _check_batch(x, y)
        return x, y, loss_fn
    check_labels(x, y)
    return x, tf.cast(y, tf.int64), tf.nn.sparse_softmax_cross_entropy_with_logits
