"""``--target ray``: the job goes to a Ray cluster through the Ray Jobs API and trains under Ray Train.

Why it exists: teams that already run Ray should not need another cluster. The job is submitted to the
cluster's job server (``--address``, or ``RAY_ADDRESS``: the dashboard's http address) with the resolved job as
an environment variable, so what runs is exactly what was submitted and can be looked up again by its id
(``twotower submit --status/--logs/--stop JOB_ID``). Its entrypoint, ``python -m jobs.ray_target``, runs
``ray.train.tensorflow.TensorflowTrainer``: Ray starts one actor per worker, sets ``TF_CONFIG`` in each, and
each runs ``jobs.worker`` (the same code as the local target). Ray restarts the worker group after a failure
(``max_restarts``), and the restarted workers resume from the run directory's last finished epoch.

The cluster's nodes need this package installed (the same image or virtual environment) and the run directory
on a shared path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from jobs.local import free_loopback_ports
from jobs.spec import JOB_ENV, JobError, JobSpec

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@contextlib.contextmanager
def local_head(num_cpus: int = 4, start_timeout_s: float = 120.0) -> Iterator[str]:
    """A throwaway single-node Ray cluster on 127.0.0.1 (for trying the target, tests and benchmarks); yields its
    job server address and, on exit, stops every process it started.

    ``ray start --block`` runs in a session of its own, with its own temporary directory; Ray's workers outlive
    the head, and all of them are in that session, so terminating what is left of the session (then killing
    what still is) stops exactly this cluster and nothing else.
    """
    ray = Path(sys.executable).with_name("ray")
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's socket paths must stay short
    dashboard, gcs = free_loopback_ports(2)
    # Loopback only: without this Ray advertises the machine's network address instead of 127.0.0.1.
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen([str(ray), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                             "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port",
                             str(dashboard), "--num-cpus", str(num_cpus), "--object-store-memory", "100000000",
                             "--temp-dir", str(temp)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + start_timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except OSError:
                if head.poll() is not None or time.time() > deadline:
                    raise JobError(f"the local Ray head did not start (logs: {temp})") from None
                time.sleep(1)
        yield address
    finally:
        # The head and all it started. Most of Ray's processes exit within half a second of SIGTERM; the raylet
        # and `ray start --block` itself were still waiting 10 s later, so what is left after 3 s is killed.
        for sig, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            deadline = time.time() + wait_s
            left = _session(head.pid)
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            while left and time.time() < deadline:
                time.sleep(0.1)
                head.poll()   # reaps the head once it exits (a zombie of ours would count as running)
                left = _session(head.pid)
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def _session(sid: int) -> list[int]:
    """The processes still running in session ``sid``. A zombie has exited and only waits for its parent to
    read its status, which a container's init may never do: it is not counted."""
    found = subprocess.run(["pgrep", "-s", str(sid)], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found if not _zombie(int(pid))]


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited but was not yet reaped (Linux's /proc; elsewhere, never)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return Path("/proc/self/stat").exists()   # gone since pgrep listed it, where /proc exists at all
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _client(address: str | None):
    from ray.exceptions import RayError
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise JobError("--target ray needs the cluster's job server: --address http://HOST:8265 (or RAY_ADDRESS)")
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError, RayError) as err:
        # An address without a scheme is taken for the cluster's GCS, and an unreachable one ends in Ray's RpcError
        # after a ~45 s timeout: say which address failed and the form the job server's address takes.
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise JobError(f"cannot reach the Ray job server at {address} (expected http://HOST:8265): {first}") from None


def submit_ray(spec: JobSpec, address: str | None, wait: bool = True, poll_s: float = 2.0) -> int:
    """Submits ``spec``; with ``wait``, follows it to the end and returns 0 only if it succeeded."""
    client = _client(address)
    submission = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    env = {JOB_ENV: spec.to_json(), "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONUNBUFFERED": "1"}
    job_id = client.submit_job(entrypoint=f"{sys.executable} -m jobs.ray_target", submission_id=submission,
                               runtime_env={"env_vars": env},
                               metadata={"twotower_job": spec.name, "run_dir": spec.run_dir,
                                         "job_file": spec.source, "workers": str(spec.workers)})
    print(f"submitted {job_id} to the Ray cluster ({spec.workers} workers); follow it with "
          f"`twotower submit --status {job_id}` or `--logs {job_id}`")
    if not wait:
        return 0
    status = str(client.get_job_status(job_id))
    while status.split(".")[-1] not in TERMINAL:
        time.sleep(poll_s)
        status = str(client.get_job_status(job_id))
    status = status.split(".")[-1]
    print(f"job {job_id}: {status}")
    if status != "SUCCEEDED":
        print(client.get_job_logs(job_id)[-4000:], file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


def manage_ray(action: str, job_id: str, address: str | None) -> int:
    """``--status`` (prints it; exit 0), ``--logs`` (prints them) or ``--stop`` a submitted job."""
    client = _client(address)
    try:
        if action == "status":
            info = client.get_job_info(job_id)
            print(f"{job_id}: {str(info.status).split('.')[-1]}"
                  f"{f' ({info.message})' if info.message else ''}")
        elif action == "logs":
            print(client.get_job_logs(job_id), end="")
        else:
            stopped = client.stop_job(job_id)
            print(f"{job_id}: {'stop requested' if stopped else 'not running'}")
    except RuntimeError as err:
        raise JobError(f"Ray job {job_id}: {err}") from None
    return 0


def _train_loop(config: dict) -> None:
    """One Ray Train worker: Ray has set ``TF_CONFIG``; the rest is the local target's worker."""
    from jobs.worker import run_worker

    run_worker(JobSpec.from_json(config["job"]))


def main() -> int:
    """The job's entrypoint on the cluster: a TensorflowTrainer with one worker per job worker."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    spec = JobSpec.from_environment()
    ray.init()
    resources = spec.resources
    trainer = TensorflowTrainer(
        _train_loop, train_loop_config={"job": spec.to_json()},
        scaling_config=ScalingConfig(num_workers=spec.workers, use_gpu=resources["gpus_per_worker"] > 0,
                                     resources_per_worker={"CPU": resources["cpus_per_worker"],
                                                           **({"GPU": resources["gpus_per_worker"]}
                                                              if resources["gpus_per_worker"] else {})}),
        run_config=RunConfig(name=spec.name, storage_path=os.path.join(spec.run_dir, "ray"),
                             failure_config=FailureConfig(max_failures=spec.max_restarts)))
    trainer.fit()
    print(f"job {spec.name}: {spec.workers} Ray Train workers finished; run in {spec.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
