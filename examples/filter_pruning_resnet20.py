"""Filter pruning of ResNet-20 on CIFAR-10 with a progressive 2x-4x-8x-16x schedule.

Filters are pruned (structured sparsity), so the result can be physically shrunk
with `tflite_export.shrink` and runs faster, not only smaller.

Run: TF_REWEIGHT_DATA_DIR=../shared/data python examples/filter_pruning_resnet20.py
"""

import tf_reweight as tfr
from tflite_export import shrink, shrink_report

(x, y), (x_test, y_test) = tfr.data.load("cifar10")
dense = tfr.recipes.compile_classifier(tfr.models.resnet20())
dense.fit(x, y, batch_size=128, epochs=10, verbose=2)

pruned = tfr.apply(
    dense,
    structure="filter",
    target="16x",
    penalty=1e-4,
    skip_first=True,
    skip_last=True,
)
tfr.recipes.compile_classifier(pruned)
steps = len(x) // 128
schedule = tfr.ProgressiveSparsity((2, 4, 8, 16), steps_per_stage=2 * steps)
pruned.fit(
    x,
    y,
    batch_size=128,
    epochs=12,
    verbose=2,
    callbacks=[
        tfr.Reweight(every=1),  # presses the next stage's groups
        tfr.ScheduledPruning(schedule, frequency=steps),
        tfr.SparsityMonitor(),
    ],
)
print(tfr.report(pruned))
print("test accuracy:", pruned.evaluate(x_test, y_test, verbose=0)[1])

plain = tfr.strip(pruned)
small = shrink(plain)
print(shrink_report(plain, small))
