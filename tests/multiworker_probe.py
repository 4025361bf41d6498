"""Trains the loss tests' small model for a few steps and writes its per-step losses and final weights as JSON.

Run by tests/test_cross_replica.py once as two workers (``jobs.local.run_attempt`` sets ``TF_CONFIG``; each
replica gets its half of every global batch) and once as a single process with the whole batch: with in-batch
negatives gathered across replicas the two must agree step by step. ``python multiworker_probe.py OUT.json
PER_REPLICA_BATCH``; only the chief writes OUT.json.
"""

import copy
import json
import sys

from training.distributed import cluster_from_environment, replica_rows

cluster = cluster_from_environment()  # before any other TensorFlow op

import contextlib  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from tiny_artifacts import ITEMS, artifacts  # noqa: E402

from training.config import DEFAULTS  # noqa: E402
from training.model import build_model  # noqa: E402

STEPS = 4


def examples(count: int) -> dict:
    """Seeded batches with repeated popular targets, so accidental hits cross replica slices."""
    rng = np.random.default_rng(3)
    targets = rng.choice(ITEMS, size=count, p=np.r_[0.3, np.full(11, 0.7 / 11)])
    history = rng.choice(ITEMS + ["", ""], size=(count, 2))
    users = rng.choice(["u0", "u1", "u2", "u3", "new"], size=count)
    return {"user_id": users.astype(str), "history": history.astype(str), "target": targets.astype(str),
            "weight": rng.uniform(0.5, 1.5, size=count).astype(np.float32)}


def main(out: str, per_replica: int) -> None:
    workers = 1 if cluster is None else cluster.workers
    global_batch = per_replica * workers
    data = examples(STEPS * global_batch)
    config = copy.deepcopy(DEFAULTS)
    config["model"].update(embedding_dim=8, hidden_units=[16], id_dim=4, categorical_dim=2, text_projection_dim=4,
                           id_dropout=0.0, cold_user_dropout=0.0)   # masks differ per replica
    config["training"].update(item_frequency="streaming", logq_correction=True, remove_accidental_hits=True)
    tf_keras.utils.set_random_seed(1)
    with cluster.strategy.scope() if cluster else contextlib.nullcontext():
        model = build_model(config, artifacts())
        model.compile(optimizer=tf_keras.optimizers.SGD(0.5))
    if cluster is None:
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(global_batch)
    else:
        order = np.arange(len(data["target"]))

        def replica_dataset(context):
            rows = replica_rows(order, global_batch, context.num_replicas_in_sync, context.input_pipeline_id)
            return tf.data.Dataset.from_tensor_slices({k: v[rows] for k, v in data.items()}).batch(per_replica)

        dataset = cluster.strategy.distribute_datasets_from_function(replica_dataset)
    losses = []
    record = tf_keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: losses.append(logs["loss"]))
    model.fit(dataset, epochs=1, steps_per_epoch=STEPS, verbose=0, callbacks=[record])
    weights = {v.name: v.numpy().ravel().tolist() for v in model.trainable_variables}
    if cluster is None or cluster.is_chief:
        with open(out, "w", encoding="utf-8") as handle:
            json.dump({"losses": [float(x) for x in losses], "weights": weights, "workers": workers}, handle)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
