"""In-batch negatives across replicas: two local workers with batch b train like one worker with batch 2·b.

The probe (tests/multiworker_probe.py) trains the loss tests' model for a few SGD steps with logQ (streaming
frequencies), accidental-hit removal and popular targets repeated across the replicas' slices. Equal losses
step by step show the forward pass sees all 2·b candidates with the right ids and probabilities; equal weights
after the steps show the gradients through the all-gather, summed over replicas, are the single worker's.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from jobs.local import run_attempt

HERE = Path(__file__).resolve().parent
PER_REPLICA = 6


def _probe(tmp_path: Path, workers: int, batch: int) -> dict:
    out = tmp_path / f"probe-{workers}.json"
    attempt = run_attempt([sys.executable, str(HERE / "multiworker_probe.py"), str(out), str(batch)], workers,
                          tmp_path / f"logs-{workers}", number=1)
    logs = "\n".join(p.read_text()[-3000:] for p in (tmp_path / f"logs-{workers}").glob("*.log"))
    assert attempt.failed_worker is None, logs
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_workers_train_like_one_worker_with_the_doubled_batch(tmp_path):
    two = _probe(tmp_path, workers=2, batch=PER_REPLICA)
    one = _probe(tmp_path, workers=1, batch=2 * PER_REPLICA)
    small = _probe(tmp_path / "small", workers=1, batch=PER_REPLICA)  # what no gather would train like
    assert two["workers"] == 2 and len(two["losses"]) == len(one["losses"]) == 4
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    assert abs(small["losses"][0] - one["losses"][0]) > 1.0  # b negatives, not 2·b: a different loss
    for name, value in one["weights"].items():
        np.testing.assert_allclose(two["weights"][name], value, rtol=1e-4, atol=1e-4, err_msg=name)
