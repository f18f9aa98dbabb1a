"""The steps that every ``tf-reweight`` subcommand shares.

`initial_model` builds or loads the dense model, `check_pruning` tries the
pruning options on it, `load_data` loads the dataset and `dense_model`
compiles (and, unless loaded, pretrains) it. ``compress``
(`tf_reweight.cli.main`) and ``robust``/``mrs`` (`tf_reweight.cli.robust`)
both import them from here, so neither imports the other's internals.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tf_reweight.cli import checks


def initial_model(args: argparse.Namespace):
    """The dense model before any training: ``--checkpoint`` or a new ``--model``.

    Seeds Keras with ``--seed`` first. Loads nothing but the checkpoint.

    Args:
        args: Parsed arguments (``checkpoint``, ``model``, ``dataset``, ``seed``).

    Returns:
        The loaded checkpoint, or the freshly built model.

    Raises:
        ValueError: If the checkpoint is not a valid ``.keras`` file or does
            not take the dataset's images, or the model name is unknown.

    Example:
    >>> model = initial_model(args)
    """
    import keras

    from tf_reweight.training import data, models

    keras.utils.set_random_seed(args.seed)
    shape = data.image_shape(args.dataset)
    if not args.checkpoint:
        try:
            return models.get(args.model, input_shape=shape, num_classes=10)
        except ValueError as error:
            raise ValueError(f"argument --model: {error}") from error
    model = checks.load_keras(args.checkpoint, "--checkpoint")
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1 or tuple(inputs[0].shape[1:]) != shape:
        raise ValueError(
            f"argument --checkpoint: {args.checkpoint} takes inputs "
            f"{[tuple(i.shape) for i in inputs]}. Expected one input of shape "
            f"(batch, *{shape}), the images of --dataset {args.dataset}."
        )
    return model


def check_pruning(model, structure: str, target, **options) -> None:
    """Runs `tf_reweight.apply` once on ``model``: structure and target fit it.

    Its warnings (kernels left dense) are shown; a structure that fits no
    kernel at all is refused.

    Args:
        model: The dense model the run will prune (left unchanged).
        structure: ``--structure``.
        target: ``--target``.
        **options: Other `tf_reweight.apply` arguments.

    Raises:
        ValueError: Naming ``--structure`` and ``--target``, if they do not
            fit the model.

    Example:
    >>> check_pruning(model, "filter", "4x", penalty=1e-5)
    """
    import tf_reweight as tfr

    try:
        tfr.apply(model, structure, target, **options)
    except ValueError as error:
        raise ValueError(
            f"arguments --structure {structure} --target {target}: {error}"
        ) from error


def load_data(args: argparse.Namespace):
    """Loads ``--dataset``, keeps the first ``--train-limit`` training images.

    Then seeds Keras with ``--seed`` again, so that training does not depend
    on the checks that ran before.

    Args:
        args: Parsed arguments (``dataset``, ``data_dir``, ``train_limit``,
            ``seed``).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``.

    Raises:
        ValueError: If ``--data-dir`` is not a directory, or the dataset
            cannot be read.

    Example:
    >>> train, test = load_data(args)
    """
    import keras

    from tf_reweight.training import data

    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise ValueError(
            f"argument --data-dir: no such directory. Expected the directory of "
            f"the local dataset copies. Received: {args.data_dir}"
        )
    train, test = data.load(args.dataset, args.data_dir)
    if args.train_limit:
        train = (train[0][: args.train_limit], train[1][: args.train_limit])
    keras.utils.set_random_seed(args.seed)
    return train, test


def dense_model(args: argparse.Namespace, train, model=None):
    """Compiles ``model``, then pretrains it unless it is ``--checkpoint``.

    Args:
        args: Parsed arguments (``checkpoint``, ``model``, ``lr``,
            ``pretrain_epochs``, ``batch_size``, ``verbose``).
        train: ``(x, y)`` training arrays.
        model: The model from `initial_model`; None builds or loads it here.

    Returns:
        The compiled dense model.

    Example:
    >>> dense = dense_model(args, train, initial_model(args))
    """
    import keras

    from tf_reweight.training import recipes

    model = initial_model(args) if model is None else model
    recipes.compile_classifier(model, args.lr)
    if args.checkpoint:
        print(f"Loaded dense checkpoint {args.checkpoint}")
        return model
    print(
        f"Pretraining {args.model}: {args.pretrain_epochs} epochs, cosine learning rate"
    )
    schedule = recipes.two_phase_lr(0, args.pretrain_epochs, args.lr)
    model.fit(
        *train,
        batch_size=args.batch_size,
        epochs=args.pretrain_epochs,
        callbacks=[keras.callbacks.LearningRateScheduler(schedule)],
        verbose=args.verbose,
    )
    return model
