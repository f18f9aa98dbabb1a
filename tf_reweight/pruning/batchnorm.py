"""BatchNorm recalibration: recompute the moving statistics after pruning.

`keras.layers.BatchNormalization` normalizes with the statistics of the batch
in training mode and with its moving mean and variance at inference. Those
moving statistics are an exponential average over the last training steps, so
they go stale when the network changes under them: a hard prune that zeroes
whole filters, or adversarial training, where they were averaged over
adversarial inputs. The pruned network then scores far lower at inference
than in training mode (see BENCHMARKS.md for measurements).

`recalibrate_batchnorm` recomputes them as the exact statistics of the given
data, or of a fixed random sample of it, leaving every weight as it is.
`check_recalibrate` validates a recipe's ``recalibrate_bn`` option before
training, `require_batchnorm` that a model has layers to recalibrate.
"""

from __future__ import annotations

import keras
import numpy as np

from tf_reweight.core import walker
from tf_reweight.core.checks import check_int

#: Batch size of `recalibrate_batchnorm` with array inputs.
DEFAULT_BATCH_SIZE = 128


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The `BatchNormalization` layers of a model, nested models included.

    Layers inside nested models, inside the model an `AdversarialModel`
    wraps and inside custom layers are found; a layer used twice is listed
    once.

    Args:
        model: A Keras model.

    Returns:
        The layers, in the model's layer order.
    """
    return [
        layer
        for layer in walker.iter_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def recalibrate_batchnorm(
    model: keras.Model,
    x,
    batch_size: int = DEFAULT_BATCH_SIZE,
    steps: int | None = None,
    samples: int | None = None,
    seed: int = 0,
) -> int:
    """Recomputes the moving mean and variance of every BatchNorm layer on ``x``.

    The model runs forward in training mode over ``x`` (no gradient, no
    weight update) and each `BatchNormalization` layer's moving statistics
    are replaced by the mean and the (biased, as Keras uses) variance of its
    inputs over all of ``x``: the exact statistics of the data, pooled over
    batches of any sizes, not an exponential moving average. The layers'
    ``momentum`` is left as configured.

    Trainable weights, optimizer state and every other variable stay as they
    are, except the random state of layers that are random in training mode
    (Dropout runs as in training). As in training, each layer's input is
    normalized upstream with the batch's own statistics, so use batches that
    are not tiny. The pooled statistics weigh every example equally, which is
    exact for inputs of one shape without masking; a layer called more than
    once per forward pass gets the statistics of its last call.

    Layers with ``trainable=False`` normalize with their moving statistics in
    training mode too (Keras' frozen-BatchNorm behaviour) and are left alone,
    as are layers with ``renorm=True`` (rejected, see Raises).

    Args:
        model: A Keras model (nested models, `PruningWrapper` layers and an
            `AdversarialModel` or the model it wraps are all fine).
        x: Model inputs: a NumPy array or tensor (or a dict of them for a
            multi-input model), split into batches of ``batch_size``; or a
            `tf.data.Dataset` or other iterable of batches, each the inputs or
            an ``(inputs, targets[, sample_weights])`` tuple.
        batch_size: Batch size for array inputs; batches of a dataset or
            iterable are used as they come.
        steps: Use at most this many batches; None for all of ``x`` (an
            infinite dataset needs ``steps``).
        samples: Recalibrate on a fixed random sample of this many examples
            of array inputs ``x``, kept in their order (so that data sorted
            by class still give every class its share); None, or at least
            ``len(x)``, for all of them.
        seed: Seed of the sample.

    Returns:
        The number of BatchNorm layers recalibrated.

    Raises:
        ValueError: If the model has no trainable BatchNorm layer, has one
            with ``renorm=True`` or not built yet, or ``x``, ``batch_size``,
            ``steps``, ``samples`` or ``seed`` is invalid (``samples`` needs
            array inputs): all checked before anything changes. If
            ``x`` turns out to hold no batch, or the forward pass fails, the
            statistics are restored before the error propagates.

    Example:
    >>> pruned = tfr.recipes.prune(resnet20, (x, y), structure="filter").model
    >>> tfr.recalibrate_batchnorm(pruned, x[:10000])
    21
    >>> pruned.evaluate(x_test, y_test)

    References:
        Ioffe and Szegedy, "Batch Normalization: Accelerating Deep Network
        Training by Reducing Internal Covariate Shift", ICML 2015,
        https://arxiv.org/abs/1502.03167.
        Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
        Generalization", UAI 2018, https://arxiv.org/abs/1803.05407 (the
        recomputation of BatchNorm statistics after weight averaging).
        Li et al., "EagleEye: Fast Sub-net Evaluation for Efficient Neural
        Network Pruning", ECCV 2020, https://arxiv.org/abs/2007.02491
        (adaptive BatchNorm after pruning).
    """
    layers = require_batchnorm(model)
    batch_size = check_int("batch_size", batch_size, low=1)
    if steps is not None:
        steps = check_int("steps", steps, low=1)
    if samples is not None:
        x = _sample(x, check_int("samples", samples, low=1), check_int("seed", seed))
    batches = _batches(x, batch_size, steps)
    saved = [
        (
            layer.momentum,
            keras.ops.convert_to_numpy(layer.moving_mean),
            keras.ops.convert_to_numpy(layer.moving_variance),
        )
        for layer in layers
    ]
    try:
        # With momentum 0 a training-mode call leaves exactly the batch's
        # statistics in the moving variables; they are pooled here in float64.
        for layer in layers:
            layer.momentum = 0.0
            mean, variance = layer.moving_mean, layer.moving_variance
            mean.assign(np.zeros(mean.shape, mean.dtype))
            variance.assign(np.ones(variance.shape, variance.dtype))
        pooled = [_Moments() for _ in layers]
        for batch in batches:
            model(batch, training=True)
            size = _batch_size_of(batch)
            for layer, moments in zip(layers, pooled, strict=True):
                moments.add(
                    size,
                    keras.ops.convert_to_numpy(layer.moving_mean),
                    keras.ops.convert_to_numpy(layer.moving_variance),
                )
        if pooled[0].count == 0:
            raise ValueError(
                f"Expected at least one batch of inputs. Received: x={_describe(x)} "
                "with no batch"
            )
        for layer, moments in zip(layers, pooled, strict=True):
            layer.moving_mean.assign(moments.mean.astype(layer.moving_mean.dtype))
            layer.moving_variance.assign(
                moments.variance.astype(layer.moving_variance.dtype)
            )
    except BaseException:
        for layer, (_, mean, variance) in zip(layers, saved, strict=True):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        raise
    finally:
        for layer, (momentum, _, _) in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return len(layers)


class _Moments:
    """Pooled count, mean and sum of squared deviations (Chan et al.)."""

    def __init__(self):
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, count: int, mean: np.ndarray, variance: np.ndarray) -> None:
        mean = mean.astype(np.float64)
        total = self.count + count
        delta = mean - self.mean
        self.m2 = (
            self.m2
            + variance.astype(np.float64) * count
            + delta**2 * (self.count * count / total)
        )
        self.mean = self.mean + delta * (count / total)
        self.count = total

    @property
    def variance(self) -> np.ndarray:
        return self.m2 / self.count


def require_batchnorm(model) -> list[keras.layers.BatchNormalization]:
    """Returns the layers `recalibrate_batchnorm` would recalibrate.

    Args:
        model: A Keras model.

    Returns:
        Its trainable, built `BatchNormalization` layers (at least one).

    Raises:
        ValueError: If ``model`` is not a Keras model or has no trainable
            BatchNorm layer, or one with ``renorm=True`` or not built yet.

    Example:
    >>> len(require_batchnorm(resnet20))
    19
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model. Received: model={model!r}")
    found = batchnorm_layers(model)
    layers = [layer for layer in found if layer.trainable]
    if not layers:
        frozen = f" ({len(found)} frozen, trainable=False)" if found else ""
        raise ValueError(
            "The model has no BatchNormalization layer to recalibrate. Expected "
            "at least one trainable BatchNormalization layer. Received: "
            f"model={model.name!r}{frozen}"
        )
    renorm = [layer.name for layer in layers if layer.renorm]
    if renorm:
        raise ValueError(
            "Batch renormalization layers cannot be recalibrated. Expected "
            f"BatchNormalization layers with renorm=False. Received: {renorm}"
        )
    unbuilt = [layer.name for layer in layers if layer.moving_mean is None]
    if unbuilt:
        raise ValueError(
            "The model must be built (call it on data first). Expected built "
            f"BatchNormalization layers. Received: unbuilt layers {unbuilt}"
        )
    return layers


#: ``recalibrate_bn="auto"``: recalibrate models with BatchNorm on this many
#: training inputs (a fixed random sample), leave other models alone.
AUTO = "auto"
AUTO_SAMPLES = 10_000


def check_recalibrate(recalibrate_bn, model: keras.Model, x) -> int | None:
    """Validates a recipe's ``recalibrate_bn`` option, before any training.

    Args:
        recalibrate_bn: None or False (off), True (all of ``x``), a
            positive number of examples, or ``"auto"``: `AUTO_SAMPLES`
            examples when the model has a trainable BatchNormalization
            layer, else off.
        model: The model whose BatchNorm layers will be recalibrated.
        x: The training inputs (an array).

    Returns:
        The ``samples`` to pass to `recalibrate_batchnorm` (at most
        ``len(x)``), or None for no recalibration.

    Raises:
        ValueError: If the option is invalid or the model has no BatchNorm
            layer to recalibrate (see `require_batchnorm`).

    Example:
    >>> samples = check_recalibrate(10000, model, x)
    >>> recalibrate_batchnorm(pruned, x, samples=samples)
    """
    if recalibrate_bn is None or recalibrate_bn is False:
        return None
    if recalibrate_bn == AUTO:
        if not any(layer.trainable for layer in batchnorm_layers(model)):
            return None
        recalibrate_bn = AUTO_SAMPLES
    if recalibrate_bn is not True and (
        not isinstance(recalibrate_bn, int | np.integer) or recalibrate_bn < 1
    ):
        raise ValueError(
            "`recalibrate_bn` must be None, a bool, a positive number of "
            f"examples or 'auto'. Received: recalibrate_bn={recalibrate_bn!r}"
        )
    require_batchnorm(model)
    return len(x) if recalibrate_bn is True else min(int(recalibrate_bn), len(x))


def _sample(x, samples: int, seed: int):
    """A fixed random sample of ``samples`` examples of array inputs, in order."""
    arrays = isinstance(x, dict) and x and all(_is_array(v) for v in x.values())
    if not (_is_array(x) or arrays):
        raise ValueError(
            "`samples` needs array inputs (a NumPy array or tensor, or a dict of "
            f"them). Expected samples=None for other inputs. Received: "
            f"x={_describe(x)}, samples={samples}"
        )
    size = int(keras.tree.flatten(x)[0].shape[0])
    if samples >= size:
        return x
    rows = np.sort(np.random.default_rng(seed).choice(size, samples, replace=False))
    return keras.tree.map_structure(lambda a: keras.ops.convert_to_numpy(a)[rows], x)


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or keras.ops.is_tensor(x)


def _describe(x) -> str:
    if _is_array(x):
        return f"array of shape {tuple(x.shape)}"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in x.items()) + "}"
    return type(x).__name__


def _batches(x, batch_size: int, steps: int | None):
    """Validates ``x`` and returns an iterator over its batches of inputs."""
    if _is_array(x) or (
        isinstance(x, dict) and x and all(_is_array(v) for v in x.values())
    ):
        sizes = {int(a.shape[0]) if a.shape else 0 for a in keras.tree.flatten(x)}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(
                "Expected inputs with at least one example (arrays of one "
                f"length along axis 0). Received: x={_describe(x)}"
            )
        (size,) = sizes
        count = -(-size // batch_size)
        if steps is not None:
            count = min(count, steps)
        return (
            keras.tree.map_structure(
                lambda a, i=i: a[i * batch_size : (i + 1) * batch_size], x
            )
            for i in range(count)
        )
    if x is None or isinstance(x, str | bytes | dict) or not hasattr(x, "__iter__"):
        raise ValueError(
            "Expected a NumPy array or tensor (or a dict of them), a "
            f"tf.data.Dataset or an iterable of batches. Received: x={_describe(x)}"
        )

    def generate():
        for i, batch in enumerate(x):
            if steps is not None and i >= steps:
                return
            yield keras.utils.unpack_x_y_sample_weight(batch)[0]

    return generate()


def _batch_size_of(batch) -> int:
    return int(keras.tree.flatten(batch)[0].shape[0])
