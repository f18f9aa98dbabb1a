"""Multi-worker training with Keras 3: a strategy that `model.fit` can use.

`model.fit` under a plain `tf.distribute.MultiWorkerMirroredStrategy` fails in
Keras 3 (seen with 3.15) before the first step, for two reasons in Keras's
TensorFlow trainer:

- To build the model it calls ``strategy.reduce("MEAN", batch, axis=None)`` on
  the whole ``(x, y)`` batch, a nested structure; the collective strategy only
  reduces one per-replica value ("Attempt to convert a value (PerReplica...)").
- It reduces each scalar log (the loss) with ``axis=0``, which a scalar does not
  have ("Invalid reduction dimension 0 for input with 0 dimensions").

`MultiWorkerMirroredStrategy` here is the TensorFlow strategy with a `reduce`
that reduces each value of a structure on its own and reduces scalars across
replicas only. Everything else, `TF_CONFIG` included, is TensorFlow's. Pruning
itself needs nothing more: every worker holds the same mirrored weights, so the
callbacks compute the same masks on every worker, and the chief can save the
model as usual.

This module needs the TensorFlow backend (it is not imported by
``tf_reweight``).

Example:

```python
from tf_reweight.training.distribute import MultiWorkerMirroredStrategy

strategy = MultiWorkerMirroredStrategy()  # reads TF_CONFIG
with strategy.scope():
    pruned = tfr.apply(model, "unstructured", 0.8)
    pruned.compile("adam", loss)
pruned.fit(x, y, callbacks=[tfr.Reweight(), tfr.HardPrune(2)])
if strategy.cluster_resolver.task_id == 0:
    pruned.save("pruned.keras")
```
"""

import tensorflow as tf


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`tf.distribute.MultiWorkerMirroredStrategy` that Keras 3 `fit` can use.

    Takes the same arguments as the TensorFlow strategy. Only `reduce`
    differs; see the module docstring.
    """

    def reduce(self, reduce_op, value, axis):
        """Reduces every per-replica value of ``value`` across replicas.

        Args:
            reduce_op: ``"SUM"``, ``"MEAN"`` or a `tf.distribute.ReduceOp`.
            value: A per-replica value or a nested structure of them.
            axis: The axis to reduce within each replica as well, or None.
                Scalars are reduced across replicas only.

        Returns:
            The reduced value, with the structure of ``value``.
        """

        def reduce_one(v):
            local = self.experimental_local_results(v)[0]
            rank = getattr(getattr(local, "shape", None), "rank", None)
            one_axis = None if rank == 0 else axis
            return super(MultiWorkerMirroredStrategy, self).reduce(
                reduce_op, v, one_axis
            )

        return tf.nest.map_structure(reduce_one, value)
