"""What every worker of a job runs, whichever engine started it: ``python -m jobs.worker``.

Why it exists: the engines differ in how they start processes, but each worker must do the same four things in
the same order. Start ``MultiWorkerMirroredStrategy`` from ``TF_CONFIG`` before any other TensorFlow op; on the
chief, prepare the shared run directory once (data, artifacts, text vectors, config.yaml) unless it exists;
on the others, wait for it; then all train together (``training.trainer.train``), resuming after the last
finished epoch when the run already has some, which is how a restarted job carries on after a failure.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from jobs.spec import JobSpec

log = logging.getLogger("twotower.worker")
PREPARE_TIMEOUT_S = float(os.environ.get("TWOTOWER_PREPARE_TIMEOUT", "3600"))


def run_worker(spec: JobSpec, progress: bool = False) -> dict:
    """Trains this worker's part of ``spec``; returns the chief's metrics ({} on the other workers)."""
    from training.distributed import cluster_from_environment

    cluster = cluster_from_environment()  # first: the collective runtime starts before any other TF op
    from training.run import RunDir, setup_logging
    from training.trainer import prepare_run, train

    run = RunDir(spec.run_dir)
    chief = cluster is None or cluster.is_chief
    setup_logging(run.log if chief else None)
    index = 0 if cluster is None else cluster.index
    log.info("worker %d of %d (%s) for job %s", index, 1 if cluster is None else cluster.workers,
             "chief" if chief else "worker", spec.name)
    if chief:
        if not run.exists():
            prepare_run(spec.config, run, progress=progress)
    else:
        deadline = time.time() + PREPARE_TIMEOUT_S
        while not run.exists():
            if time.time() > deadline:
                raise TimeoutError(f"{run.path}: the chief did not prepare the run within {PREPARE_TIMEOUT_S:.0f} s")
            time.sleep(0.5)
    return train(spec.config, run, progress=progress, created=False, cluster=cluster)


def main() -> int:
    try:
        run_worker(JobSpec.from_environment())
    except Exception as err:
        if os.environ.get("TWOTOWER_DEBUG"):
            raise
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
