"""The smallest LiteRT file of LeNet-5 at 99%: prune in the units LiteRT stores.

`structure="litert"` prunes Dense kernels in LiteRT's 1x16 sparse blocks and
convolutions weight by weight; `per_channel_dense=False` drops the per-unit
scales of the Dense weights. About 52x smaller than the dense float file.

Run: TF_REWEIGHT_DATA_DIR=../shared/data python examples/smallest_tflite_lenet5.py
"""

import keras

import tf_reweight as tfr
from tflite_export import evaluate_tflite, export

keras.utils.set_random_seed(0)
(x, y), (x_test, y_test) = tfr.data.load("mnist")
dense = tfr.recipes.compile_classifier(tfr.models.lenet5())
cosine = keras.callbacks.LearningRateScheduler(tfr.recipes.two_phase_lr(0, 8))
dense.fit(x, y, batch_size=128, epochs=8, callbacks=[cosine], verbose=2)
print("dense test accuracy:", dense.evaluate(x_test, y_test, verbose=0)[1])

result = tfr.recipes.reweighted_prune(
    dense, (x, y), structure="litert", target=0.965, reweight_epochs=6, retrain_epochs=6
)
print(tfr.report(result.model))

dense_file = export(dense, "lenet5_dense.tflite", sparse=False, verify=False)
small = export(
    result.model,
    "lenet5_litert.tflite",
    quantization="int8",
    sparse=True,
    representative_data=x[:512],
    sample=x_test[:1000],
    per_channel_dense=False,
)
print(small)
print(
    f"{dense_file.file_bytes / small.file_bytes:.1f}x smaller than the dense float "
    f"file; {evaluate_tflite(small.path, x_test, y_test):.2%} in LiteRT"
)
