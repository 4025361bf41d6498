"""The worker's view of a multi-worker job: its strategy, its rank, and where it may write.

Why it exists: a job launcher (``jobs/``: local processes, Ray Train, a Kubeflow TFJob) describes the cluster to
each worker in ``TF_CONFIG``; the training loop needs three answers from it. Which strategy (``MultiWorker-
MirroredStrategy`` when there is more than one worker), which examples this replica trains on (its slice of
every global batch, so N workers with batch b see the same batches as one worker with batch N·b), and whether
this worker is the chief: only the chief writes checkpoints, TensorBoard, state.json and metrics.json into the
run directory that every worker shares. The others still take part in every save (a save can run collectives),
but into a scratch directory that is removed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from training.config import ConfigError

SCRATCH_ENV = "TWOTOWER_SCRATCH"  # where non-chief workers write what only the chief keeps


@dataclasses.dataclass
class Cluster:
    """One worker's place in a job of ``workers`` processes under ``strategy``."""

    strategy: tf.distribute.Strategy
    workers: int
    index: int
    _scratch: Path | None = None

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    def writable(self, path: Path) -> Path:
        """``path`` on the chief; on any other worker the same name under a private scratch directory."""
        if self.is_chief:
            return path
        if self._scratch is None:
            # A launcher names a scratch root it removes itself, so a killed worker leaves nothing behind.
            root = os.environ.get(SCRATCH_ENV)
            if root:
                Path(root).mkdir(parents=True, exist_ok=True)
            self._scratch = Path(tempfile.mkdtemp(prefix=f"twotower-worker-{self.index}-", dir=root or None))
        return self._scratch / path.name

    def close(self) -> None:
        """Removes a non-chief worker's scratch writes."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def task_from_environment() -> tuple[int, int]:
    """(number of workers, this worker's index) from ``TF_CONFIG``; (1, 0) when it is unset.

    The chief is worker 0. A ``chief`` task (Kubeflow's TFJob names one) counts as worker 0 and shifts the
    ``worker`` tasks up by one, the order ``MultiWorkerMirroredStrategy`` itself uses.
    """
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 1, 0
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        chiefs = len(cluster.get("chief", []))
        workers = chiefs + len(cluster.get("worker", []))
        index = int(task["index"]) + (chiefs if task["type"] == "worker" else 0)
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"TF_CONFIG is not a valid cluster description ({err}): {raw[:200]}") from err
    if task["type"] not in ("chief", "worker") or not 0 <= index < workers:
        raise ConfigError(f"TF_CONFIG task {task} is not one of the cluster's {workers} workers")
    return workers, index


def cluster_from_environment() -> Cluster | None:
    """A :class:`Cluster` when ``TF_CONFIG`` names more than one worker, else None (single-process training).

    Call it before any other TensorFlow op: ``MultiWorkerMirroredStrategy`` must start the collective runtime
    first.
    """
    workers, index = task_from_environment()
    if workers < 2:
        return None
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    _strings_stay_local(strategy.extended)
    return Cluster(strategy=strategy, workers=workers, index=index)


def _strings_stay_local(extended) -> None:
    """String variables (the catalogue's ids, categories and texts in ``FeatureTable``) keep their local initial
    value instead of the chief's broadcast one.

    ``MultiWorkerMirroredStrategy`` broadcasts every variable's initial value from the chief, and collective
    broadcast has no string kernel (``CollectiveBcastSend``: bool, float, half, double, int32, int64). These
    tables are identical on every worker anyway (each builds them from the same RUN/artifacts) and never
    trained; numeric variables still come from the chief.
    """
    broadcast = extended._get_variable_creator_initial_value

    def initial_value(replica_id, device, primary_var, **kwargs):
        value, dtype = kwargs["initial_value"], kwargs.get("dtype")
        strings = tf.as_dtype(dtype) == tf.string if dtype is not None else \
            (not callable(value) and np.asarray(value).dtype.kind in "OSU")
        if replica_id != 0 or not strings:
            return broadcast(replica_id, device, primary_var, **kwargs)

        def local():
            with tf.device(device):
                return tf.convert_to_tensor(value() if callable(value) else value, dtype=tf.string)

        return local

    extended._get_variable_creator_initial_value = initial_value


def replica_rows(order: np.ndarray, global_batch: int, replicas: int, replica: int) -> np.ndarray:
    """This replica's rows of every full global batch of ``order``, batch by batch.

    Global batch k is ``order[k·G:(k+1)·G]``, as a single worker with batch G would take it; replica r trains on
    its r-th slice of b = G / replicas rows. A last, partial global batch is dropped (every replica must step
    the same number of times); since ``order`` is reshuffled each epoch, different rows fall off each time.
    """
    if global_batch % replicas:
        raise ConfigError(f"the global batch {global_batch} does not split evenly over {replicas} replicas")
    per_replica = global_batch // replicas
    full = (len(order) // global_batch) * global_batch
    return order[:full].reshape(-1, replicas, per_replica)[:, replica, :].reshape(-1)
