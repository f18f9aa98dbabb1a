"""What differs between the Keras backends (TensorFlow, JAX, PyTorch).

The core of `tf_reweight` runs on every backend. Two things differ:

- **Where masks apply.** On TensorFlow and PyTorch a `MaskConstraint` on
  each pruned kernel re-applies the mask after every optimizer step. Keras'
  JAX trainer runs that step in a stateless scope that maps only the
  trainable and optimizer variables, so the mask (a non-trainable weight of
  the wrapper) cannot be read there. On JAX the wrapper therefore applies
  the mask in the forward pass (`masked_call`): the loss sees
  ``kernel * mask`` and the gradient at pruned positions is exactly zero.
  Optimizer momentum may still move the *stored* pruned weights, so every
  eager read of a pruned kernel goes through `masked_value`, and the hard
  prune zeroes the stored weights again.
- **Eager access during `fit`.** The JAX trainer keeps the model's state
  outside the variables while an epoch runs. Eager operations that read or
  write weights mid-epoch call `sync_state` first; the trainer then reads
  the variables again at the next step, so eager writes take effect.

The modules built on TensorFlow (attacks, adversarial training, robustness
and sensitivity, MRPF, the data loaders and the TFLite export) call
`require` at import, which explains what to do on another backend.
"""

from __future__ import annotations

import importlib.util

import keras
import numpy as np

_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


def masks_in_forward_pass() -> bool:
    """Whether pruning masks are applied in the forward pass (JAX).

    Returns:
        True on the JAX backend, where `MaskConstraint` cannot read the mask
        inside the optimizer step; False where the constraint applies it.
    """
    return keras.backend.backend() == "jax"


def call_with_values(wrapper: keras.layers.Layer, values, *args, **kwargs):
    """Calls ``wrapper.layer`` with some of its variables replaced by values.

    The wrapped layer runs inside a `keras.StatelessScope` that maps *all* its
    variables: the given ones to their replacement values, the others to their
    current values (read through an enclosing stateless scope, such as the JAX
    trainer's, when one is active: a nested scope does not fall back to the
    enclosing one). Updates the layer makes to the other variables are passed
    on by ``assign`` (which an enclosing stateless scope records), and its
    losses by ``wrapper.add_loss``.

    Args:
        wrapper: The calling wrapper layer (its ``layer`` and ``add_loss``).
        values: ``(variable, value)`` pairs, variables of ``wrapper.layer``.
        *args: Positional arguments of the wrapped layer's call.
        **kwargs: Keyword arguments of the wrapped layer's call.

    Returns:
        The wrapped layer's outputs.

    Example:
    >>> outputs = call_with_values(self, [(kernel, kernel * mask)], inputs)
    """
    replaced = {id(variable): value for variable, value in values}
    variables = wrapper.layer.variables
    mapping = [(v, replaced.get(id(v), v.value)) for v in variables]
    with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
        before = [scope.get_current_value(v) for v in variables]
        outputs = wrapper.layer(*args, **kwargs)
    for variable, old in zip(variables, before, strict=True):
        new = scope.get_current_value(variable)
        if id(variable) not in replaced and new is not old:
            variable.assign(new)
    if scope.losses:
        wrapper.add_loss(scope.losses)
    return outputs


def masked_call(wrapper: keras.layers.Layer, *args, **kwargs):
    """Calls ``wrapper.layer`` with each pruned kernel replaced by ``kernel * mask``.

    The JAX forward pass of `tf_reweight.PruningWrapper` (see
    `call_with_values`); gradients at pruned positions are exactly zero.

    Args:
        wrapper: A built `tf_reweight.PruningWrapper` (its ``layer`` and
            ``pruned_kernels``).
        *args: Positional arguments of the wrapped layer's call.
        **kwargs: Keyword arguments of the wrapped layer's call.

    Returns:
        The wrapped layer's outputs.

    Example:
    >>> outputs = masked_call(wrapper, inputs)  # in PruningWrapper.call on JAX
    """
    values = [
        (
            pk.variable,
            keras.ops.where(
                keras.ops.not_equal(pk.mask, 0),
                pk.variable.value,
                keras.ops.zeros_like(pk.variable.value),
            ),
        )
        for pk in wrapper.pruned_kernels
    ]
    return call_with_values(wrapper, values, *args, **kwargs)


def masked_value(pruned_kernel) -> np.ndarray:
    """The effective value of a pruned kernel (the masked variable), as NumPy.

    Use this, not the variable, wherever a pruned kernel is read eagerly: on
    JAX the stored weights at pruned positions may be nonzero (see the
    module docstring); elsewhere the product equals the stored kernel.

    Args:
        pruned_kernel: A `tf_reweight.pruning.wrapper.PrunedKernel` (its ``variable``
            and ``mask``).

    Returns:
        The masked kernel in the kernel's own shape.

    Example:
    >>> np.count_nonzero(masked_value(wrapper.pruned_kernels[0]))
    """
    return masked(
        keras.ops.convert_to_numpy(pruned_kernel.variable),
        keras.ops.convert_to_numpy(pruned_kernel.mask),
    )


def masked(value: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``value`` with exact zeros where ``mask`` is 0 (over NaN or inf too)."""
    return np.where(np.asarray(mask) != 0, value, np.zeros_like(value))


def zero_pruned(wrapper: keras.layers.Layer) -> None:
    """Zeroes the stored pruned weights of a wrapper where they may have moved.

    On JAX (masks in the forward pass) optimizer momentum may move stored
    weights at pruned positions; `tf_reweight.PruningWrapper` calls this
    before saving, so that `.keras` files hold exact zeros and load the same
    on every backend. Elsewhere the stored weights are already zero.

    Args:
        wrapper: A built `tf_reweight.PruningWrapper`.

    Example:
    >>> zero_pruned(wrapper)  # in PruningWrapper.save_own_variables
    """
    if masks_in_forward_pass():
        for pk in wrapper.pruned_kernels:
            pk.variable.assign(masked_value(pk))


def sync_state(model: keras.Model) -> None:
    """Writes the training state back into the model's variables (JAX).

    Keras' JAX trainer holds the state outside the variables while an epoch
    runs and reattaches it at the end of the epoch. Call this before reading
    or writing weights (or the optimizer's step counter) in the middle of an
    epoch; the trainer reads the variables again at its next step. On the
    other backends it does nothing.

    Args:
        model: The model being trained (or any model).

    Example:
    >>> def on_train_batch_end(self, batch, logs=None):
    ...     sync_state(self.model)
    ...     hard_prune(self.model)
    """
    sync = getattr(model, "jax_state_sync", None)
    if callable(sync):
        sync()


def require(
    module: str,
    uses: str,
    *,
    backend: str | None = "tensorflow",
    package: str = "tensorflow",
) -> None:
    """Raises `ImportError` unless a TensorFlow-only module can run here.

    TF-only modules call this at import, before their own imports.

    Args:
        module: The importing module's name (for the message).
        uses: What the module needs (for the message), e.g. ``"cleverhans"``.
        backend: The Keras backend the module runs on, or None when it runs
            on any backend (it works on NumPy data).
        package: The package the module needs installed.

    Raises:
        ImportError: When the Keras backend is not ``backend``, or when
            ``package`` is not installed.

    Example:
    >>> require(__name__, "cleverhans")  # at the top of a TF-only module
    """
    current = keras.backend.backend()
    if backend is not None and current != backend:
        raise ImportError(
            f"{module} runs on the {_NAMES.get(backend, backend)} backend "
            f"({uses}); the Keras backend is {current!r}. Set "
            f"KERAS_BACKEND={backend}. The core of tf_reweight (apply, the "
            "callbacks, hard_prune, strip, report, ADMM) runs on every backend."
        )
    try:
        found = importlib.util.find_spec(package) is not None
    except ImportError:
        found = False
    if not found:
        raise ImportError(
            f"{module} needs {package} ({uses}), which is not installed. "
            f"Install it with `pip install {package.replace('_', '-')}`."
        )
