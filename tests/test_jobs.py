"""``twotower submit``: the job file's checks, and local multi-worker jobs as a user runs them.

The local jobs run two real worker processes under MultiWorkerMirroredStrategy on loopback ports, with the
smoke config on the session's generated world and text cache.
"""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import cli, job_file, kill_after_epochs, run_in_process

from jobs.spec import JobError, load_job


@pytest.mark.parametrize("change, message", [
    ({"workers": 0}, "workers: input should be greater than 0, got 0"),
    ({"run_dir": None}, "run_dir: input should be a valid string, got None"),
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"resources": {"cpu": 2}}, "unknown key 'resources.cpu' (known: cpus_per_worker, memory_gb, gpus_per_worker)"),
    ({"resources": {"memory_gb": "lots"}}, "resources.memory_gb: input should be a valid number, got 'lots'"),
    ({"max_restarts": True}, "max_restarts: input should be a valid integer, got True"),
    ({"set": ["training.epochs=0"]}, "training.epochs: input should be greater than 0, got 0"),
    ({"name": "Shop Job"}, "name: string should match pattern"),
    ({"data": {"table": "x"}}, "unknown key 'data.table' (known: path, items, interactions, users)"),
])
def test_job_file_errors_name_the_file_and_key(tmp_path, change, message):
    path = job_file(tmp_path, tmp_path, ["training.text_cache_dir=c"], **change)
    with pytest.raises(JobError, match=f"job.yaml: .*{re.escape(message)}"):
        load_job(path)


def test_job_file_resolves_paths_and_workers(tmp_path):
    spec = load_job(job_file(tmp_path, tmp_path / "shop", ["training.text_cache_dir=c"]), workers=3)
    assert spec.workers == 3 and spec.run_dir == str(tmp_path / "run")
    assert spec.config["data"]["path"] == str(tmp_path / "shop") and spec.resources["cpus_per_worker"] == 1
    code, _, err = run_in_process("submit", tmp_path / "missing.yaml")
    assert code == 2 and "error: job file not found" in err


def test_tf_config_ranks(monkeypatch):
    from training.distributed import replica_rows, task_from_environment

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert task_from_environment() == (1, 0)
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}   # Kubeflow / Vertex: a chief and workers
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert task_from_environment() == (3, 2)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "ps", "index": 0}}))
    with pytest.raises(ValueError, match="not one of the cluster's 3 workers"):
        task_from_environment()
    # global batch k of order is order[6k:6k+6]; replica 1 of 2 takes its second half; the partial batch drops
    assert replica_rows(np.arange(14), 6, 2, 1).tolist() == [3, 4, 5, 9, 10, 11]


def test_a_failing_worker_fails_the_job_and_keeps_its_logs(tmp_path, settings):
    path = job_file(tmp_path, tmp_path / "nowhere", settings)
    result = cli("submit", path, check=False)
    assert result.returncode == 2, result.stderr
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["logs"]  # nothing half-written beside the logs
    record = json.loads((run / "logs" / "job.json").read_text())
    assert record["attempts"][0]["failed_worker"] == 0 and len(record["attempts"]) == 1
    assert "nowhere" in (run / "logs" / "worker-0.log").read_text()
    assert (run / "logs" / "worker-1.log").exists()


def test_killed_worker_restarts_the_job_from_the_last_checkpoint(tmp_path, world, settings):
    """Two workers, two epochs; worker 1 is killed in epoch 2. The job restarts both, resumes after epoch 1
    and ends with epochs 1 and 2 once each, the chief's checkpoints only, and metrics.json."""
    path = job_file(tmp_path, world, settings, extra=("training.epochs=2",), max_restarts=1)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "twotower.cli", "-q", "submit", str(path), "--workers", "2"]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        kill_after_epochs(job, run, 1, victim=lambda: json.loads((run / "logs" / "job.json").read_text())
                          ["attempts"][0]["pids"][1])
        out, err = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 0, err
    attempts = json.loads((run / "logs" / "job.json").read_text())["attempts"]
    assert len(attempts) == 2 and attempts[0]["failed_worker"] == 1 and attempts[0]["exit_codes"][1] == -9
    assert attempts[1]["exit_codes"] == [0, 0]
    state = json.loads((run / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2] and state["finished"]
    assert "resuming" in (run / "logs" / "worker-0.log").read_text().split("=== attempt 2")[1]
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == [f"{name}.{ext}" for name in ("best", "epoch-0001", "epoch-0002")
                           for ext in ("data-00000-of-00001", "index")]
    assert json.loads((run / "metrics.json").read_text())["test"]["users"] > 0
    assert not (run / "logs" / "scratch").exists()  # the other worker's writes are gone
    assert len(list((run / "tensorboard").rglob("events.out.tfevents.*"))) >= 2  # chief: train + validation
