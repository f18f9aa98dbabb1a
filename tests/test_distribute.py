"""Pruning under tf.distribute.MirroredStrategy on two logical CPU devices.

Logical devices must be configured before TensorFlow initializes, so the run
happens in a fresh interpreter.
"""

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import tf_reweight as tfr

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(256, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, size=256)
    with strategy.scope():
        inputs = keras.Input((6, 6, 2))
        h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
        h = keras.layers.Flatten()(h)
        outputs = keras.layers.Dense(3, name="dense")(h)
        pruned = tfr.apply(keras.Model(inputs, outputs), "unstructured", 0.8,
                           penalty=1e-3)
        pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
    pruned.fit(x, y, batch_size=32, epochs=4, verbose=0,
               callbacks=[tfr.Reweight(), tfr.HardPrune(2)])
    masks_hold = all(
        bool(np.all(pk.variable.numpy()[pk.mask.numpy() == 0] == 0))
        for w in tfr.pruning.wrappers(pruned) for pk in w.pruned_kernels)
    rep = tfr.report(pruned).to_dict()
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "nonzeros": rep["nonzeros"], "weights": rep["weights"],
                      "masks_hold": masks_hold}))
    """
)


def test_mirrored_strategy_reaches_the_exact_sparsity():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["nonzeros"] == round(0.2 * result["weights"])
    assert result["masks_hold"]
