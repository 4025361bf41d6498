"""``--target ray``: a job submitted through the Ray Jobs API to a local head on 127.0.0.1, trained by Ray Train.

The head runs in its own session with its own temporary directory; the fixture stops it and every process of
that session (Ray's workers too), so nothing is left running.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import cli
from test_jobs import _job

RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    if not RAY.exists():
        pytest.skip("ray is not installed in this environment")
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's socket paths must stay short
    dashboard = _free_port()
    # Loopback only: without this Ray advertises the machine's network address instead of 127.0.0.1.
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen([str(RAY), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                             "--port", str(_free_port()), "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(dashboard), "--num-cpus", "4",
                             "--object-store-memory", "100000000", "--temp-dir", str(temp)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except OSError:
                assert head.poll() is None and time.time() < deadline, "the Ray head did not start"
                time.sleep(1)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        # Ray's workers outlive the head by a few seconds; all of them are in the head's session.
        deadline = time.time() + 30
        while (left := subprocess.run(["pgrep", "-s", str(head.pid)], capture_output=True,
                                      text=True).stdout.split()) and time.time() < deadline:
            time.sleep(1)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_trains_with_two_workers_and_is_managed_by_id(ray_head, tmp_path, world, settings):
    path = _job(tmp_path, world, settings)
    text = path.read_text().replace("training.early_stopping_patience=10", "training.epochs=1")
    path.write_text(text)
    result = cli("submit", path, "--target", "ray", "--address", ray_head)
    job_id = result.stdout.split()[1]
    assert f"job {job_id}: SUCCEEDED" in result.stdout
    run = tmp_path / "run"
    state = json.loads((run / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1] and (run / "metrics.json").exists()
    assert "SUCCEEDED" in cli("submit", "--status", job_id, "--address", ray_head).stdout
    logs = cli("submit", "--logs", job_id, "--address", ray_head).stdout
    assert "worker 0 of 2 (chief)" in logs and "worker 1 of 2 (worker)" in logs
    assert "127.0.0.1" in logs and "192." not in logs.split("TF_CONFIG")[0]
    assert "not running" in cli("submit", "--stop", job_id, "--address", ray_head).stdout
    missing = cli("submit", "--status", "no-such-job", "--address", ray_head, check=False)
    assert missing.returncode == 2 and "error: Ray job no-such-job" in missing.stderr
