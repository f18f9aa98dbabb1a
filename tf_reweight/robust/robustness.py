"""Robust accuracy of a classifier under FGSM and multi-restart PGD.

`evaluate_robustness` reports clean, FGSM and PGD accuracies;
`measure_robustness` is the clean-plus-PGD summary of a run.
"""

from __future__ import annotations

from tf_reweight.core.backend_support import require

require(__name__, "cleverhans attacks")

from collections.abc import Sequence

import keras
import numpy as np

from tf_reweight.core import checks
from tf_reweight.robust import attacks as _attacks
from tf_reweight.robust.attack import Attack

ATTACKS = ("clean", "fgsm", "pgd")


def evaluate_robustness(
    model: keras.Model,
    x,
    y,
    attack: Attack,
    attacks: Sequence[str] = ATTACKS,
    restarts: int = 1,
    batch_size: int = 256,
    verbose: int = 1,
) -> dict[str, float]:
    """Accuracy of ``model`` on clean inputs and under white-box attacks.

    - ``"clean"``: accuracy on ``x``;
    - ``"fgsm"``: accuracy under FGSM at ``attack``'s epsilon, norm and clip
      (one step of size ``epsilon``, no random start);
    - ``"pgd"``: accuracy under ``attack`` (``attack.steps`` steps, its step
      size and random start). With several ``restarts`` an example counts as
      robust only if the model classifies all of its restarts correctly
      (worst case over restarts).

    Args:
        model: A built classifier returning logits, run in inference mode.
        x: Float inputs in the attack's ``clip`` range, shape ``(n, ...)``.
        y: Integer class ids, shape ``(n,)``.
        attack: The `Attack` of ``"pgd"``, e.g.
            ``Attack(kind="pgd", epsilon=0.3, steps=40, step_size=0.01)``;
            its epsilon, norm and clip also set ``"fgsm"``.
        attacks: Which accuracies to compute, a subset of
            ``("clean", "fgsm", "pgd")``.
        restarts: PGD random restarts, ``>= 1``.
        batch_size: Examples per attack batch.
        verbose: 0 for silence, 1 for a progress bar.

    Returns:
        A dict mapping each requested attack name to an accuracy in [0, 1].

    Raises:
        ValueError: If an attack name is unknown or repeated, ``attack`` is
            not a PGD `Attack`, ``x`` and ``y`` disagree, ``x`` leaves the
            ``clip`` range, or ``restarts`` or ``batch_size`` is below 1.

    Example:

    ```python
    pgd40 = Attack(kind="pgd", epsilon=0.3, steps=40, step_size=0.01)
    evaluate_robustness(model, x_test, y_test, pgd40, restarts=5)
    # {'clean': ..., 'fgsm': ..., 'pgd': ...}
    ```

    References:
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial
        Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083.
    """
    names = _check_attack_names(attacks)
    if not isinstance(attack, Attack) or attack.kind != "pgd":
        raise ValueError(
            f"`attack` must be an `Attack` of kind 'pgd'. Received: attack={attack!r}"
        )
    checks.check_int("restarts", restarts, low=1)
    checks.check_int("batch_size", batch_size, low=1)
    fgsm = Attack(
        kind="fgsm",
        epsilon=attack.epsilon,
        norm=attack.norm,
        clip=attack.clip,
        random_start=False,
    )
    clip = attack.clip
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
        return correct(_attacks.craft(fgsm, model, inputs, labels), labels)

    def pgd_correct(inputs, labels):
        robust = np.ones(len(labels), bool)
        for _ in range(restarts):
            robust &= correct(_attacks.craft(attack, model, inputs, labels), labels)
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


def measure_robustness(
    model: keras.Model,
    test,
    attack: Attack,
    restarts: int = 1,
    limit: int | None = None,
) -> dict:
    """Clean accuracy on all of ``test`` and PGD accuracy on its first ``limit``.

    Args:
        model: A classifier returning logits.
        test: ``(x, y)`` test arrays, inputs in the attack's ``clip`` range.
        attack: The PGD `Attack`.
        restarts: PGD random restarts (worst case counts).
        limit: Attack only the first ``limit`` test images (None: all).

    Returns:
        ``{"accuracy", "robust_accuracy", "eval_samples"}``.

    Raises:
        ValueError: As `evaluate_robustness`, or if ``limit`` is below 1.

    Example:

    ```python
    pgd40 = Attack(kind="pgd", epsilon=0.3, steps=40, step_size=0.01)
    measure_robustness(model, (x_test, y_test), pgd40, limit=2000)
    ```
    """
    if limit is not None:
        checks.check_int("limit", limit, low=1)
    x, y = test
    logits = model.predict(x, batch_size=512, verbose=0)
    x_attack, y_attack = x[:limit], y[:limit]
    robust = evaluate_robustness(
        model, x_attack, y_attack, attack, ("pgd",), restarts, verbose=0
    )
    return {
        "accuracy": float(np.mean(np.argmax(logits, -1) == np.asarray(y))),
        "robust_accuracy": robust["pgd"],
        "eval_samples": len(x_attack),
    }


def _check_attack_names(names: Sequence[str]) -> tuple[str, ...]:
    names = (names,) if isinstance(names, str) else tuple(names)
    if not names or len(set(names)) != len(names) or set(names) - set(ATTACKS):
        raise ValueError(
            f"`attacks` must be distinct names among {ATTACKS}. "
            f"Received: attacks={names!r}"
        )
    return names
