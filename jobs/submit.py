"""``twotower submit``: one job file, three targets.

Why it exists: the command line should not know how each engine starts workers. This module checks the job
once (the file, its training config, and that its run directory does not hold a run with another config) and
hands it to the target: ``local`` processes, a ``ray`` cluster, or ``kubernetes`` manifests.
"""

from __future__ import annotations

from pathlib import Path

from jobs.spec import JobSpec, load_job

TARGETS = ("local", "ray", "kubernetes")


def check_run_dir(spec: JobSpec) -> None:
    """Refuses a run directory that holds a run started with a different config (resuming is fine)."""
    from training.run import RunDir
    from training.trainer import start_or_resume

    run = RunDir(spec.run_dir)
    if run.exists():
        start_or_resume(spec.config, run)


def submit(job_file: str, target: str, workers: int | None = None, address: str | None = None,
           out: str | None = None, apply: bool = False, wait: bool = True) -> int:
    """Submits ``job_file`` to ``target``; returns the exit status to give the shell."""
    if target not in TARGETS:
        raise ValueError(f"--target {target!r}: choose one of {', '.join(TARGETS)}")
    spec = load_job(job_file, workers)
    if target == "local":
        from jobs.local import run_local

        check_run_dir(spec)
        status = run_local(spec)
        logs = Path(spec.run_dir) / "logs"
        print(f"job {spec.name}: {'finished' if status == 0 else f'failed (exit status {status})'}; "
              f"worker logs in {logs}")
        return status
    if target == "ray":
        from jobs.ray_target import submit_ray

        check_run_dir(spec)
        return submit_ray(spec, address, wait=wait)
    from jobs.kubernetes import write_manifests

    return write_manifests(spec, Path(out) if out else Path(spec.run_dir).parent / f"{spec.name}-manifests",
                           apply=apply)


def manage(action: str, job_id: str, address: str | None = None) -> int:
    """``--status``, ``--logs`` or ``--stop`` for a job submitted to Ray."""
    from jobs.ray_target import manage_ray

    return manage_ray(action, job_id, address)
