"""N worker processes on this machine, wired together with ``TF_CONFIG`` on loopback ports.

Why it exists: it is the smallest real multi-worker cluster (the same ``MultiWorkerMirroredStrategy`` and
collectives as on many machines), so a job can be tried, tested and benchmarked before it goes to Ray or
Kubernetes. It also shows what a job engine must do, and does it: every worker's output goes to
RUN/logs/worker-<i>.log; when one worker fails, the others are stopped (a collective would wait for it forever)
and, while ``max_restarts`` allows, the whole job starts again and resumes after the last finished epoch; the
job's exit status is the first failing worker's. RUN/logs/job.json records every attempt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from jobs.spec import JOB_ENV, JobSpec
from training.distributed import SCRATCH_ENV
from twotower.layout import write_atomic

log = logging.getLogger("twotower.jobs")
STOP_GRACE_S = 10.0


def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on 127.0.0.1 a moment ago (the OS picks them)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def tf_config(ports: Sequence[int], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` in a cluster of loopback workers (worker 0 is the chief)."""
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


@dataclasses.dataclass
class Attempt:
    """One start of all workers: their exit codes, and which worker failed first (None: none failed)."""

    number: int
    pids: list[int]
    exit_codes: list[int | None] | None = None  # None while the attempt runs
    failed_worker: int | None = None
    seconds: float = 0.0


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to every live worker's process group, SIGKILL to what is left after a grace period."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.time() + STOP_GRACE_S
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.time()))
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_attempt(command: Sequence[str], workers: int, logs: Path, number: int,
                env: dict[str, str] | None = None, poll_s: float = 0.2,
                on_start: Callable[[Attempt], None] | None = None) -> Attempt:
    """Starts ``workers`` copies of ``command`` (each with its own ``TF_CONFIG``) and waits for all of them;
    the first non-zero exit stops the rest. ``on_start`` sees the attempt (its pids) once all have started."""
    logs.mkdir(parents=True, exist_ok=True)
    ports = free_loopback_ports(workers)
    started = time.time()
    processes, files = [], []
    try:
        for index in range(workers):
            log_file = (logs / f"worker-{index}.log").open("a", encoding="utf-8")
            log_file.write(f"\n=== attempt {number}: worker {index} of {workers}, {time.ctime()} ===\n")
            log_file.flush()
            files.append(log_file)
            worker_env = {**os.environ, **(env or {}), "TF_CONFIG": tf_config(ports, index),
                          "PYTHONUNBUFFERED": "1"}
            processes.append(subprocess.Popen(list(command), env=worker_env, stdout=log_file,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        if on_start is not None:
            on_start(Attempt(number, [p.pid for p in processes]))
        failed = None
        while failed is None and any(p.poll() is None for p in processes):
            for index, process in enumerate(processes):
                if process.poll() not in (None, 0):
                    failed = index
                    break
            time.sleep(poll_s)
        if failed is None:  # the loop may end with every worker exited before a failure was noticed
            failed = next((i for i, p in enumerate(processes) if p.returncode not in (None, 0)), None)
    finally:
        _stop(processes)
        for log_file in files:
            log_file.close()
    return Attempt(number, [p.pid for p in processes], [p.returncode for p in processes], failed,
                   time.time() - started)


def exit_status(attempt: Attempt) -> int:
    """A job's exit status: 0, or the failing worker's (128 + N for a worker killed by signal N)."""
    if attempt.failed_worker is None:
        return 0
    code = attempt.exit_codes[attempt.failed_worker]
    return 128 - code if code is not None and code < 0 else (code or 1)


def run_local(spec: JobSpec, command: Sequence[str] | None = None) -> int:
    """Runs ``spec`` on ``spec.workers`` local processes, restarting the whole job up to ``spec.max_restarts``
    times after a failure. Returns the job's exit status."""
    run = Path(spec.run_dir)
    logs = run / "logs"
    scratch = logs / "scratch"
    command = list(command or [sys.executable, "-m", "jobs.worker"])
    env = {JOB_ENV: spec.to_json(), SCRATCH_ENV: str(scratch)}
    attempts: list[Attempt] = []
    try:
        for number in range(1, spec.max_restarts + 2):
            attempt = run_attempt(command, spec.workers, logs, number, env,
                                  on_start=lambda running: _record(logs, spec, [*attempts, running]))
            attempts.append(attempt)
            _record(logs, spec, attempts)
            if attempt.failed_worker is None:
                log.info("job %s: %d worker(s) finished (logs: %s)", spec.name, spec.workers, logs)
                return 0
            status = exit_status(attempt)
            log.warning("job %s: worker %d failed with exit status %d (log: %s)", spec.name, attempt.failed_worker,
                        status, logs / f"worker-{attempt.failed_worker}.log")
            if number <= spec.max_restarts:
                log.warning("job %s: restarting all workers from the last finished epoch (restart %d of %d)",
                            spec.name, number, spec.max_restarts)
        return exit_status(attempts[-1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _record(logs: Path, spec: JobSpec, attempts: list[Attempt]) -> None:
    record = {"job": spec.name, "workers": spec.workers, "max_restarts": spec.max_restarts,
              "attempts": [dataclasses.asdict(a) for a in attempts]}
    write_atomic(logs / "job.json", json.dumps(record, indent=2) + "\n")
