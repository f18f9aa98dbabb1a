"""Robust accuracy of a classifier under FGSM and multi-restart PGD."""

from __future__ import annotations

from tf_reweight.core.backend_support import require

require(__name__, "cleverhans attacks")

from collections.abc import Sequence

import keras
import numpy as np

from tf_reweight.robust import attacks as _attacks

ATTACKS = ("clean", "fgsm", "pgd")


def evaluate_robustness(
    model: keras.Model,
    x,
    y,
    eps: float,
    attacks: Sequence[str] = ATTACKS,
    pgd_steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    norm: float | str = np.inf,
    batch_size: int = 256,
    clip: tuple[float, float] | None = (0.0, 1.0),
    verbose: int = 1,
) -> dict[str, float]:
    """Accuracy of ``model`` on clean inputs and under white-box attacks.

    - ``"clean"``: accuracy on ``x``;
    - ``"fgsm"``: accuracy under FGSM (one step of size ``eps``, no random
      start);
    - ``"pgd"``: accuracy under PGD-``pgd_steps`` with a random start. With
      several ``restarts`` an example counts as robust only if the model
      classifies all of its restarts correctly (worst case over restarts).

    Args:
        model: A built classifier returning logits, run in inference mode.
        x: Float inputs in the ``clip`` range, shape ``(n, ...)``.
        y: Integer class ids, shape ``(n,)``.
        eps: Radius of the perturbation ball, ``>= 0``.
        attacks: Which accuracies to compute, a subset of
            ``("clean", "fgsm", "pgd")``.
        pgd_steps: PGD steps, ``>= 1``.
        step_size: PGD step size, at most ``eps``. Defaults to
            ``min(eps, 2.5 * eps / pgd_steps)``.
        restarts: PGD random restarts, ``>= 1``.
        norm: ``np.inf`` (or ``"inf"``) or ``2``.
        batch_size: Examples per attack batch.
        clip: ``(min, max)`` range of valid inputs, or None.
        verbose: 0 for silence, 1 for a progress bar.

    Returns:
        A dict mapping each requested attack name to an accuracy in [0, 1].

    Raises:
        ValueError: If an attack name is unknown or repeated, ``x`` and ``y``
            disagree, ``x`` leaves the ``clip`` range, or a budget parameter
            is out of range.

    Example:

    ```python
    evaluate_robustness(model, x_test, y_test, eps=0.3, pgd_steps=40,
                        step_size=0.01, restarts=5)
    # {'clean': 0.98, 'fgsm': 0.95, 'pgd': 0.91}
    ```

    References:
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial
        Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083.
    """
    names = _check_attack_names(attacks)
    step_size = _attacks.check_budget(eps, step_size, pgd_steps)
    norm = _attacks.check_norm(norm)
    _attacks.check_clip(clip)
    _attacks.check_positive_int(restarts, "restarts")
    _attacks.check_positive_int(batch_size, "batch_size")
    x = np.asarray(x, np.float32)
    y = np.asarray(y)
    _attacks.check_labels(x, y)
    if len(x) == 0:
        raise ValueError(
            f"`x` must hold at least one example. Received: x.shape={x.shape}"
        )
    if clip is not None and (x.min() < clip[0] or x.max() > clip[1]):
        raise ValueError(
            f"`x` must lie in the `clip` range {clip} (scale images first). "
            f"Received: x in [{x.min()}, {x.max()}]"
        )

    # The model itself is the attacked callable: cleverhans' shared gradient
    # tf.function then traces once per batch shape, across calls too.
    def correct(inputs, labels):
        return np.argmax(model(inputs, training=False), -1) == labels

    def fgsm_correct(inputs, labels):
        adv = _attacks.fgsm(model, inputs, labels, eps, norm=norm, clip=clip)
        return correct(adv, labels)

    def pgd_correct(inputs, labels):
        robust = np.ones(len(labels), bool)
        for _ in range(restarts):
            adv = _attacks.pgd(
                model, inputs, labels, eps, step_size, pgd_steps, norm, clip=clip
            )
            robust &= correct(adv, labels)
        return robust

    fns = {"clean": correct, "fgsm": fgsm_correct, "pgd": pgd_correct}
    hits = dict.fromkeys(names, 0)
    starts = range(0, len(x), batch_size)
    bar = keras.utils.Progbar(
        len(starts), verbose=verbose, stateful_metrics=names, unit_name="batch"
    )
    for i, start in enumerate(starts):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        for name in names:
            hits[name] += int(np.sum(fns[name](xb, yb)))
        seen = start + len(xb)
        bar.update(i + 1, [(n, hits[n] / seen) for n in names])
    return {n: hits[n] / len(x) for n in names}


def _check_attack_names(names: Sequence[str]) -> tuple[str, ...]:
    names = (names,) if isinstance(names, str) else tuple(names)
    if not names or len(set(names)) != len(names) or set(names) - set(ATTACKS):
        raise ValueError(
            f"`attacks` must be distinct names among {ATTACKS}. "
            f"Received: attacks={names!r}"
        )
    return names
