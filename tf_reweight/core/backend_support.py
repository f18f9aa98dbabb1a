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

**Native log lines.** TensorFlow's and LiteRT's C++ code writes INFO lines
(oneDNN, CUDA drivers, CPU features, XNNPACK) straight to file descriptor 2
when it loads. This module imports Keras (and with it TensorFlow) with
``TF_CPP_MIN_LOG_LEVEL`` defaulting to ``"2"`` and inside `quiet_native_logs`,
so ``import tf_reweight`` prints nothing; a value the user set wins, and
``TF_CPP_MIN_LOG_LEVEL=0`` shows every line.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# A native (absl) log line: severity, date, time, thread id, file:line].
_NATIVE_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
# Lines that are noise at any level above 0: absl's banner, the second line
# of the CPU-feature message, the CUDA probe on a machine without a GPU, the
# int8 calibrator's settings line, and LiteRT's own INFO lines.
_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "To enable the following instructions:",
    "failed call to cuInit",
    "fully_quantize: ",
)
_held_back: collections.deque[str] = collections.deque(maxlen=2000)  # the latest


def native_log_level() -> int:
    """The native log level in effect: ``TF_CPP_MIN_LOG_LEVEL`` (0 to 3).

    Returns:
        0 shows every native line; 1 hides INFO, 2 also WARNING, 3 also
        ERROR lines. An unreadable value counts as 0 (show everything).
    """
    value = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip()
    return min(int(value), 3) if value.isdigit() else 0


def _is_noise(line: str, level: int) -> bool:
    if level == 0:
        return False
    match = _NATIVE_LINE.match(line)
    if match and "IWEF".index(match[1]) < level:
        return True
    return line.startswith("INFO: ") or any(text in line for text in _NOISE)


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Holds back the native log lines that one call writes to fd 2.

    File descriptor 2 is redirected to a temporary file for the duration
    and restored afterwards. Then every captured line is written to
    ``sys.stderr`` again except the native lines below `native_log_level`
    and known noise (see the module docstring); those are kept for
    `show_native_logs`. If the call raises, all captured text is written
    back before the error propagates. Python's own writes to ``sys.stderr``
    in the block come out at its end. At level 0 nothing is redirected.

    Example:
    >>> with quiet_native_logs():
    ...     flatbuffer = converter.convert()
    """
    level = native_log_level()
    if level == 0:
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 to redirect
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = []
            for line in capture.read().decode(errors="replace").splitlines(True):
                noise = not failed and _is_noise(line, level)
                (_held_back if noise else kept).append(line)
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def show_native_logs() -> None:
    """Shows native log lines from now on, and those held back so far.

    Sets ``TF_CPP_MIN_LOG_LEVEL=0`` for the later `quiet_native_logs`
    calls of this process (TensorFlow's own threshold was read at import)
    and writes the lines held back until now to ``sys.stderr``. For a
    ``--verbose`` flag of a command-line tool.

    Example:
    >>> if args.verbose:
    ...     show_native_logs()
    """
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    sys.stderr.write("".join(_held_back))
    sys.stderr.flush()
    _held_back.clear()


with quiet_native_logs():
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe logs here, not later

import numpy as np  # noqa: E402

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
