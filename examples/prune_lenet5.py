"""Unstructured reweighted pruning of LeNet-5 on MNIST, then TFLite export.

Run: TF_REWEIGHT_DATA_DIR=../shared/data python examples/prune_lenet5.py
"""

import keras

import tf_reweight as tfr
from tflite_export import export

(x, y), (x_test, y_test) = tfr.data.load("mnist")
dense = tfr.recipes.compile_classifier(tfr.models.lenet5())
dense.fit(x, y, batch_size=128, epochs=5, verbose=2)

pruned = tfr.apply(dense, structure="unstructured", target="50x", penalty=1e-5)
tfr.recipes.compile_classifier(pruned)
pruned.fit(
    x,
    y,
    batch_size=128,
    epochs=12,
    verbose=2,
    callbacks=[
        tfr.Reweight(every=1),
        tfr.HardPrune(epoch=6),
        keras.callbacks.LearningRateScheduler(tfr.recipes.two_phase_lr(6, 6)),
        tfr.SparsityMonitor(),
    ],
)
print(tfr.report(pruned))
print("test accuracy:", pruned.evaluate(x_test, y_test, verbose=0)[1])

plain = tfr.strip(pruned)
print(
    export(
        plain,
        "lenet5_int8.tflite",
        quantization="int8",
        representative_data=x[:512],
        sample=x_test[:1000],
    )
)
