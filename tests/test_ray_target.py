"""``--target ray``: a job submitted through the Ray Jobs API to a local head on 127.0.0.1, trained by Ray Train.

``jobs.ray_target.local_head`` runs the head in a session of its own and stops every process of that session
(Ray's workers too), so nothing is left running.
"""

import json
import sys
from pathlib import Path

import pytest
from helpers import cli, job_file

from jobs.ray_target import local_head


@pytest.fixture(scope="module")
def ray_head():
    if not Path(sys.executable).with_name("ray").exists():
        pytest.skip("ray is not installed in this environment")
    with local_head() as address:
        yield address


def test_ray_job_trains_with_two_workers_and_is_managed_by_id(ray_head, tmp_path, world_shards, settings):
    """Two Ray Train workers stream the session's shards (each reads its own files) for one epoch."""
    path = job_file(tmp_path, world_shards, settings, extra=("training.epochs=1", "data.format=prepared"))
    result = cli("submit", path, "--target", "ray", "--address", ray_head)
    job_id = result.stdout.split()[1]
    assert f"job {job_id}: SUCCEEDED" in result.stdout
    run = tmp_path / "run"
    state = json.loads((run / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1] and (run / "metrics.json").exists()
    assert "SUCCEEDED" in cli("submit", "--status", job_id, "--address", ray_head).stdout
    logs = cli("submit", "--logs", job_id, "--address", ray_head).stdout
    assert "worker 0 of 2 (chief)" in logs and "worker 1 of 2 (worker)" in logs
    assert "cluster_spec = {'worker': ['127.0.0.1:" in logs  # Ray's TF_CONFIG: loopback only
    assert "not running" in cli("submit", "--stop", job_id, "--address", ray_head).stdout
    missing = cli("submit", "--status", "no-such-job", "--address", ray_head, check=False)
    assert missing.returncode == 2 and "error: Ray job no-such-job" in missing.stderr


def test_an_unreachable_cluster_is_one_line_naming_the_address(monkeypatch):
    """Ray raises its own RpcError (not a ConnectionError) when an address without a scheme has no GCS behind it."""
    import ray.job_submission
    from ray.exceptions import RpcError

    from jobs.ray_target import manage_ray
    from jobs.spec import JobError

    def unreachable(address):
        raise RpcError("Timed out while waiting for GCS to become available.\nmore detail")

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", unreachable)
    with pytest.raises(JobError) as raised:
        manage_ray("status", "some-job", "127.0.0.1:1")
    assert str(raised.value) == ("cannot reach the Ray job server at 127.0.0.1:1 (expected http://HOST:8265): "
                                 "Timed out while waiting for GCS to become available.")
