"""In-batch negatives from every replica: the candidates of the global batch, this replica's own first.

Why it exists: under data parallelism each replica sees only its slice of the global batch, and
``tfrs.tasks.Retrieval`` scores a replica's queries against that slice alone (its ``_cross_replica_concat``
helper is unused). N workers with batch b would then train with b negatives, not N·b, and the model would be a
different (weaker) one than a single worker with batch N·b. Here the candidate embeddings, their catalogue rows
(for accidental-hit removal) and their sampling probabilities (for logQ) are all-gathered, and rotated so that
this replica's slice comes first: Retrieval's labels are the identity ``eye(b, N·b)``, which then marks each
query's own candidate as its positive.

Gradients: ``ReplicaContext.all_gather`` back-propagates the sum over replicas of the upstream gradient and
keeps this replica's slice, so each candidate embedding receives the gradient of every replica's loss, on the
replica that computed it (the gather itself does not double count: the optimizer's cross-replica sum then adds
the replicas' parameter gradients once). With Retrieval's SUM-reduced loss, the summed gradient of N replicas
equals the gradient of one worker's loss over the whole N·b batch; ``tests/test_cross_replica.py`` checks both
the loss and the trained weights against that single worker.
"""

from __future__ import annotations

import tensorflow as tf


def gather_local_first(values: tf.Tensor, *companions: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """``values`` [b, ...] (differentiable) and ``companions`` [b, ...] (ids, probabilities: no gradient) from every
    replica, concatenated along axis 0 with this replica's rows first, then the other replicas' in replica order.

    Outside a multi-replica step it returns its inputs unchanged, so single-process training is untouched.
    Replicas may hold different batch sizes (the last step of an epoch): offsets come from the gathered sizes.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return (values, *companions)
    gathered = context.all_gather(values, axis=0)
    others = context.all_gather([tf.stop_gradient(c) for c in companions], axis=0) if companions else []
    sizes = context.all_gather(tf.shape(values, out_type=tf.int32)[:1], axis=0)
    offset = tf.reduce_sum(sizes[:context.replica_id_in_sync_group])
    rotate = lambda tensor: tf.roll(tensor, shift=-offset, axis=0)
    return (rotate(gathered), *[rotate(tensor) for tensor in others])
