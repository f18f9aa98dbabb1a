"""Adversarial training as a `keras.Model`: wrap a model, then `fit` as usual.

`AdversarialModel` replaces the clean minibatch loss by a robust objective
(Madry et al. adversarial training or TRADES) computed on examples crafted by
`tf_reweight.robust.attacks` inside the compiled ``train_step``. Everything else stays
Keras: the compiled loss and metrics, `model.losses` (weight regularizers such
as the pruning penalties of `tf_reweight`), the optimizer and its variable
constraints, callbacks and `.keras` files. `adversarial_pretrain` fits one
with a cosine learning rate. The TensorFlow backend is required.
"""

from __future__ import annotations

from tf_reweight.core.backend_support import require

require(__name__, "a tf.GradientTape training step and cleverhans")

import keras
import tensorflow as tf

from tf_reweight.core import checks
from tf_reweight.robust import attacks
from tf_reweight.robust.attack import Attack
from tf_reweight.training import recipes

_LOSS_TYPES = ("ce", "trades")


@keras.saving.register_keras_serializable(package="tf_reweight")
class AdversarialModel(keras.Model):
    """Trains a classifier on adversarial examples.

    Each training step crafts adversarial examples ``x_adv`` for the batch
    (true labels; the model in training mode, as in the update, unless
    ``attack_training=False``) and minimizes

    - ``loss_type="ce"``:
      ``clean_weight * L(x) + (1 - clean_weight) * L(x_adv) + R``;
    - ``loss_type="trades"``:
      ``L(x) + trades_beta * KL(p(x) || p(x_adv)) + R``, where the attack
      maximizes the KL divergence instead of the cross entropy;

    with ``L`` the compiled loss (typically sparse categorical cross entropy
    on logits) and ``R = sum(model.losses)`` the regularization penalties. The
    wrapped model must output logits and take integer labels of shape
    ``(batch,)``.

    Training and evaluation report the compiled metrics on clean inputs (in
    `fit`, the inference-mode predictions before the update) plus
    ``adv_loss`` (``L(x_adv) + R``) and ``adv_accuracy``. ``loss`` is the
    training objective in `fit` and ``L(x) + R`` in `evaluate`, which always
    attacks the cross entropy, also for TRADES.

    Either wrap a model (``AdversarialModel(model, ...)``) or subclass and
    define ``call`` (then pass no ``model``).

    Args:
        model: The classifier to train, or None in a subclass that defines
            ``call``.
        attack: The training attack, a `tf_reweight.robust.attack.Attack`;
            None for ``Attack(kind="pgd", epsilon=0.3, steps=10)``. Its
            config is saved with the model.
        clean_weight: Weight in ``[0, 1]`` of the clean loss (``"ce"`` only).
        loss_type: ``"ce"`` or ``"trades"``.
        trades_beta: Weight ``>= 0`` of the TRADES KL term.
        clip: ``(min, max)`` range of valid inputs, or None.
        attack_training: Craft the training examples with the model in
            training mode (BatchNormalization on batch statistics, dropout
            on), the function the update differentiates; its forward passes
            then also update the moving statistics, as in the reference
            code of Wong et al. False crafts them in inference mode: with stale
            moving statistics (a freshly pruned network, a short run) those
            examples attack another function, and training loses its
            robustness (see BENCHMARKS.md).
            Evaluation always attacks the inference mode.
        **kwargs: Passed to `keras.Model` (``name``, ``trainable``, ...).

    Example:

    ```python
    net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])
    model = AdversarialModel(net, Attack(kind="pgd", epsilon=0.1, steps=7))
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=5, validation_data=(x_test, y_test))
    # logs: loss, accuracy, adv_loss, adv_accuracy, val_... for each
    ```

    References:
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial
        Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083.
        Zhang et al., "Theoretically Principled Trade-off between Robustness
        and Accuracy" (TRADES), ICML 2019, https://arxiv.org/abs/1901.08573.
        Wong et al., "Fast is better than free: Revisiting adversarial
        training", ICLR 2020, https://arxiv.org/abs/2001.03994.
    """

    def __init__(
        self,
        model: keras.Model | None = None,
        attack: Attack | None = None,
        clean_weight: float = 0.0,
        loss_type: str = "ce",
        trades_beta: float = 6.0,
        attack_training: bool = True,
        **kwargs,
    ):
        if attack is None:
            attack = Attack(epsilon=0.3)
        if not isinstance(attack, Attack):
            raise ValueError(
                f"`attack` must be an `Attack` or None. Received: attack={attack!r}"
            )
        _check_options(clean_weight, loss_type, trades_beta)
        checks.check_bool("attack_training", attack_training)
        if model is not None and not isinstance(model, keras.Model):
            raise ValueError(
                "`model` must be a `keras.Model` (or None in a subclass that "
                f"defines `call`). Received: model={model!r}"
            )
        super().__init__(**kwargs)
        self.model = model
        self.attack = attack
        self.clean_weight = float(clean_weight)
        self.loss_type = loss_type
        self.trades_beta = float(trades_beta)
        self.attack_training = bool(attack_training)
        self.adv_loss_tracker = keras.metrics.Mean(name="adv_loss")
        self.adv_accuracy = keras.metrics.SparseCategoricalAccuracy(name="adv_accuracy")
        self._kl = keras.losses.KLDivergence()
        # One callable per mode: cleverhans retraces for each new one.
        self._logits_fns = {False: self._inference_logits, True: self._training_logits}

    def call(self, inputs, training=None):
        if self.model is None:
            raise NotImplementedError(
                "AdversarialModel without a wrapped `model` must be subclassed "
                "with a `call` method."
            )
        return self.model(inputs, training=training)

    def adversarial_examples(self, x, y, objective: str = "ce", training: bool = False):
        """Crafts adversarial examples for a batch with the configured attack.

        No gradient flows through the result.

        Args:
            x: A batch of inputs.
            y: Integer class ids, shape ``(batch,)``.
            objective: What the attack maximizes: ``"ce"``, the cross entropy
                with ``y``, or ``"kl"``, the KL divergence from the clean
                prediction (the TRADES attack).
            training: Run the model in training mode (batch statistics,
                dropout; BatchNormalization moving statistics are updated)
                instead of inference mode.

        Returns:
            The adversarial batch, a float32 tensor shaped like ``x``.

        Raises:
            ValueError: If ``objective`` is unknown or ``y`` has the wrong
                shape or dtype.
        """
        if objective not in ("ce", "kl"):
            raise ValueError(
                "Unknown attack objective. Expected 'ce' or 'kl'. "
                f"Received: objective={objective!r}"
            )
        attacks.check_labels(x, y)
        logits_fn = self._logits_fns[bool(training)]
        labels, loss_fn = y, None
        if objective == "kl":
            labels = tf.nn.softmax(logits_fn(x))
            loss_fn = _kl_per_example
        x_adv = attacks.craft(self.attack, logits_fn, x, labels, loss_fn)
        return tf.stop_gradient(x_adv)

    def train_step(self, data):
        self._check_loss()
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        # Clean predictions before the update (what metrics report). Calling the
        # model before the attack also creates lazily built variables outside
        # cleverhans' shared tf.function, which cannot create them.
        clean_pred = self(x, training=False)
        trades = self.loss_type == "trades"
        x_adv = self.adversarial_examples(
            x, y, "kl" if trades else "ce", training=self.attack_training
        )
        with tf.GradientTape() as tape:
            adv_logits = self(x_adv, training=True)
            adv_loss = self.compute_loss(x_adv, y, adv_logits, sample_weight)
            loss = adv_loss
            if trades or self.clean_weight > 0:
                clean_logits = self(x, training=True)
                clean_loss = self.compute_loss(x, y, clean_logits, sample_weight)
            if trades:
                loss = clean_loss + self.trades_beta * self._kl(
                    tf.nn.softmax(clean_logits),
                    tf.nn.softmax(adv_logits),
                    sample_weight=sample_weight,
                )
            elif self.clean_weight > 0:
                # Both terms include sum(self.losses): the convex mix counts it once.
                loss = (
                    self.clean_weight * clean_loss
                    + (1.0 - self.clean_weight) * adv_loss
                )
            scaled_loss = self.optimizer.scale_loss(loss)
        trainable = self.trainable_variables
        grads = tape.gradient(scaled_loss, trainable)
        self.optimizer.apply(grads, trainable)  # Also applies the constraints.
        self._update_adversarial_metrics(y, adv_logits, adv_loss, sample_weight)
        self._loss_metric().update_state(loss, sample_weight=tf.shape(x)[0])
        return self.compute_metrics(x, y, clean_pred, sample_weight)

    def test_step(self, data):
        self._check_loss()
        super().test_step(data)  # Clean loss and metrics; creates lazy variables.
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x_adv = self.adversarial_examples(x, y)
        adv_logits = self(x_adv, training=False)
        adv_loss = self.compute_loss(
            x_adv, y, adv_logits, sample_weight, training=False
        )
        self._update_adversarial_metrics(y, adv_logits, adv_loss, sample_weight)
        return self.get_metrics_result()

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            model=None
            if self.model is None
            else keras.saving.serialize_keras_object(self.model),
            attack=self.attack.get_config(),
            clean_weight=self.clean_weight,
            loss_type=self.loss_type,
            trades_beta=self.trades_beta,
            attack_training=self.attack_training,
        )
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> AdversarialModel:
        config = dict(config)
        if config.get("model") is not None:
            config["model"] = keras.saving.deserialize_keras_object(
                config["model"], custom_objects=custom_objects
            )
        if isinstance(config.get("attack"), dict):
            config["attack"] = Attack.from_config(config["attack"])
        else:
            config["attack"] = _attack_of_old_config(config)
        return cls(**config)

    def _check_loss(self) -> None:
        if self.loss is None:
            raise ValueError(
                "AdversarialModel needs the loss of its objective in `compile()`, "
                "e.g. keras.losses.SparseCategoricalCrossentropy(from_logits=True). "
                f"Received: loss={self.loss!r}"
            )

    def _inference_logits(self, x):
        return self(x, training=False)

    def _training_logits(self, x):
        return self(x, training=True)

    def _update_adversarial_metrics(self, y, adv_logits, adv_loss, sample_weight):
        batch = tf.shape(adv_logits)[0]
        self.adv_loss_tracker.update_state(adv_loss, sample_weight=batch)
        self.adv_accuracy.update_state(y, adv_logits, sample_weight=sample_weight)

    def _loss_metric(self) -> keras.metrics.Metric:
        """The metric that Keras reports as ``loss``."""
        return next(m for m in self.metrics if m.name == "loss")


def adversarial_pretrain(
    model: keras.Model,
    train,
    epochs: int,
    *,
    batch_size: int = 128,
    lr: float = 1e-3,
    verbose: int = 1,
    attack: Attack | None = None,
    **options,
) -> dict:
    """Trains ``model`` in place with `AdversarialModel`, cosine learning rate.

    Args:
        model: A classifier returning logits (clean-pretrained or fresh).
        train: ``(x, y)`` training arrays, inputs in [0, 1].
        epochs: Adversarial training epochs (>= 0).
        batch_size: Batch size.
        lr: Initial Adam learning rate, decayed by a cosine to ``1e-5``.
        verbose: Keras verbosity.
        attack: The training `Attack`; None for `AdversarialModel`'s default.
        **options: More `AdversarialModel` options (``loss_type``, ...).

    Returns:
        The Keras history dict (clean and adversarial training accuracy).

    Example:
    >>> fgsm_rs = Attack(kind="fgsm", epsilon=8 / 255)
    >>> adversarial_pretrain(model, (x, y), 5, attack=fgsm_rs)
    """
    checks.check_int("epochs", epochs, low=0)
    trainer = AdversarialModel(model, attack, **options)
    recipes.compile_classifier(trainer, lr)
    schedule = recipes.two_phase_lr(0, epochs, lr)
    history = trainer.fit(
        *train,
        epochs=epochs,
        batch_size=batch_size,
        verbose=verbose,
        callbacks=[keras.callbacks.LearningRateScheduler(schedule)],
    )
    return history.history


def _kl_per_example(labels, logits):
    """KL(labels || softmax(logits)) per example: the TRADES attack loss."""
    log_p = tf.nn.log_softmax(logits)
    return tf.reduce_sum(labels * (tf.math.log(labels + 1e-12) - log_p), axis=-1)


def _check_options(clean_weight, loss_type, trades_beta) -> None:
    checks.check_choice("loss_type", loss_type, _LOSS_TYPES)
    checks.check_number("clean_weight", clean_weight, 0.0)
    if clean_weight > 1.0:
        raise ValueError(
            "`clean_weight` must be a number in [0, 1]. "
            f"Received: clean_weight={clean_weight!r}"
        )
    if loss_type == "trades" and clean_weight != 0:
        raise ValueError(
            "`clean_weight` applies to loss_type='ce' only; TRADES weighs its "
            f"terms with `trades_beta`. Received: clean_weight={clean_weight!r}"
        )
    checks.check_number("trades_beta", trades_beta, 0.0)


def _attack_of_old_config(config: dict) -> Attack:
    """The `Attack` of a config saved before `Attack` existed.

    Such configs held ``attack`` (``"pgd"`` or ``"fgsm"``, FGSM always with a
    random start), ``eps``, ``steps``, ``step_size``, ``norm`` and ``clip``;
    they are taken out of ``config``.
    """
    kind = config.pop("attack", "pgd")
    old = {"eps": 0.3, "steps": 10, "step_size": None, "norm": "inf", "clip": (0, 1)}
    old.update({k: config.pop(k) for k in list(old) if k in config})
    return Attack(
        kind=kind,
        epsilon=old["eps"],
        steps=old["steps"] if kind == "pgd" else 1,
        step_size=old["step_size"],
        norm=old["norm"],
        clip=None if old["clip"] is None else tuple(old["clip"]),
        random_start=True,
    )
