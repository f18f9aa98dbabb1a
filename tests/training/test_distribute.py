"""Pruning under tf.distribute: MirroredStrategy on two logical CPU devices,
and MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1.

Devices and clusters must be configured before TensorFlow initializes, so the
runs happen in fresh interpreters.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

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


WORKER = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import numpy as np
    import keras
    import tf_reweight as tfr
    from tf_reweight.training.distribute import MultiWorkerMirroredStrategy

    strategy = MultiWorkerMirroredStrategy()  # the cluster comes from TF_CONFIG
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(128, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, size=128)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((6, 6, 2))
        h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
        h = keras.layers.Flatten()(h)
        outputs = keras.layers.Dense(3, name="dense")(h)
        pruned = tfr.apply(keras.Model(inputs, outputs), "unstructured", 0.8,
                           penalty=1e-3)
        pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
    pruned.fit(x, y, batch_size=32, epochs=3, verbose=0,
               callbacks=[tfr.Reweight(), tfr.HardPrune(1)])

    def digest(arrays):
        data = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
        return hashlib.sha256(data).hexdigest()

    def masks(model):
        return digest(pk.mask.numpy() for w in tfr.pruning.wrappers(model)
                      for pk in w.pruned_kernels)

    rep = tfr.report(pruned).to_dict()
    out = {"replicas": strategy.num_replicas_in_sync, "masks": masks(pruned),
           "weights": digest(v.numpy() for v in pruned.trainable_variables),
           "nonzeros": rep["nonzeros"], "total": rep["weights"]}
    if strategy.cluster_resolver.task_id == 0:  # only the chief saves
        path = os.path.join(sys.argv[1], "chief.keras")
        pruned.save(path)
        out["loaded_masks"] = masks(keras.saving.load_model(path))
    print("RESULT " + json.dumps(out), flush=True)
    """
)


def _free_loopback_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    except OSError as e:
        pytest.skip(f"Cannot open loopback ports for the workers: {e}")
    finally:
        for s in sockets:
            s.close()


def test_multi_worker_strategy_workers_agree_and_the_chief_saves(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_loopback_ports(2)]
    procs = []
    try:
        for index in range(2):
            config = {
                "cluster": {"worker": workers},
                "task": {"type": "worker", "index": index},
            }
            env = {**os.environ, "TF_CONFIG": json.dumps(config)}
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", WORKER, str(tmp_path)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = time.monotonic() + 240
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, err[-3000:]
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    chief, other = (
        json.loads(
            next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]
        )
        for out in outputs
    )
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["nonzeros"] == other["nonzeros"] == round(0.2 * chief["total"])
    assert chief["masks"] == other["masks"]
    assert chief["weights"] == other["weights"]  # mirrored: bit-identical
    assert chief["loaded_masks"] == chief["masks"]
    assert "loaded_masks" not in other
    assert [p.name for p in tmp_path.iterdir()] == ["chief.keras"]
