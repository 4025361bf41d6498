"""The job file: which training config, which data, which run directory, how many workers and what each needs.

Why it exists: a job that runs on three engines (local processes, Ray, Kubernetes) must be described once, in a
file that can be kept and submitted again. Its keys are typed here (:class:`JobFile`, the same kind of schema as
the run configuration's, documented with it in docs/config.md), checked with errors that name the file and the
key, and resolved (relative paths against the job file, the training config loaded and validated
with its overrides) into a :class:`JobSpec` that travels to every worker as JSON (``TWOTOWER_JOB``).

```yaml
name: shop-weekly                 # optional; default: the job file's name
config: ../configs/smoke.yaml     # the training config (relative paths: against this file)
set: [training.epochs=3]          # optional --set overrides
data: ../worlds/smoke             # the data location: a directory (data.path) or {items, interactions, users, path}
run_dir: /mnt/shared/runs/weekly  # a path every worker sees
workers: 2                        # default for --workers
max_restarts: 2                   # restarts of the whole job after a worker fails (resume from the last epoch)
resources: {cpus_per_worker: 1, memory_gb: 4, gpus_per_worker: 0}
image: registry.example.com/twotower:0.1.0   # kubernetes only: the container with this package installed
kubernetes: {namespace: default, volume_claim: shared-runs, mount_path: /mnt/shared}
```
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from pydantic import Field, ValidationError, field_validator

from towers.config import Float, PositiveInt, Section
from training.config import ConfigError, load_config, read_mapping, validation_message

JOB_ENV = "TWOTOWER_JOB"  # the resolved job, as JSON, in every worker's environment
NAME = r"[a-z]([-a-z0-9]*[a-z0-9])?"   # a Kubernetes object name (RFC 1123 label)


class JobError(ConfigError):
    """A job file that cannot be submitted; the message names the file and the key."""


class Resources(Section):
    """``resources:``: what each worker needs."""

    cpus_per_worker: PositiveInt = Field(1, description="CPU cores per worker")
    memory_gb: Float = Field(4, gt=0, description="memory per worker, in GiB")
    gpus_per_worker: int = Field(0, ge=0, description="GPUs per worker")


class Kubernetes(Section):
    """``kubernetes:``: where the TFJob runs (``--target kubernetes``)."""

    namespace: str = Field("default", min_length=1, description="the namespace of the TFJob")
    volume_claim: str | None = Field(None, description="a PersistentVolumeClaim every worker mounts (shared run "
                                     "directory and data)")
    mount_path: str | None = Field(None, description="where the volume is mounted; run_dir must be under it")
    service_account: str | None = Field(None, description="the pods' service account")


class JobData(Section):
    """``data:`` as a mapping: the config's data paths, relative to the job file."""

    path: str | None = Field(None, description="data.path")
    items: str | None = Field(None, description="data.items")
    interactions: str | None = Field(None, description="data.interactions")
    users: str | None = Field(None, description="data.users")


class JobFile(Section):
    """A job file (``twotower submit JOB.yaml``)."""

    name: str | None = Field(None, pattern=f"^{NAME}$", max_length=40, description="the job's name (lowercase "
                             "letters, digits and '-', starting with a letter, at most 40: it names Kubernetes "
                             "objects); default: the job file's name")
    config: str = Field(min_length=1, description="the training config (relative paths: against the job file)")
    set: list[str] = Field([], description="--set overrides of the training config (`key=value` strings)")
    data: JobData | None = Field(None, description="the data: a directory (data.path) or a mapping of path, "
                                 "items, interactions, users")
    run_dir: str = Field(min_length=1, description="the run directory, a path every worker sees")
    workers: PositiveInt = Field(1, description="number of workers (--workers overrides it)")
    max_restarts: int = Field(0, ge=0, description="restarts of the whole job after a worker fails (each resumes "
                              "from the last finished epoch)")
    resources: Resources = Field(Resources(), description="what each worker needs")
    image: str | None = Field(None, min_length=1, description="kubernetes: the container image with this package "
                              "installed")
    kubernetes: Kubernetes = Field(Kubernetes(), description="kubernetes settings")

    @field_validator("data", mode="before")
    @classmethod
    def _directory(cls, value):
        return {"path": value} if isinstance(value, str) else value


@dataclasses.dataclass
class JobSpec:
    """A resolved job: absolute paths and the full training config, ready for any target."""

    name: str
    config: dict
    run_dir: str
    workers: int
    max_restarts: int
    resources: dict
    image: str | None
    kubernetes: dict
    source: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        return cls(**json.loads(text))

    @classmethod
    def from_environment(cls) -> JobSpec:
        text = os.environ.get(JOB_ENV)
        if not text:
            raise JobError(f"{JOB_ENV} is not set: a worker is started by `twotower submit`, which sets it")
        return cls.from_json(text)


def _data_overrides(data: JobData | None, base: Path) -> list[str]:
    """``data:`` as --set overrides of the config's data block, with paths made absolute."""
    paths = data.model_dump(exclude_none=True) if data is not None else {}
    return [f"data.{key}={json.dumps(str((base / value).resolve()))}" for key, value in paths.items()]


def load_job(path: str | os.PathLike, workers: int | None = None) -> JobSpec:
    """Reads and checks a job file; ``workers`` (``--workers``) overrides the file's."""
    path = Path(path)
    where = str(path)
    raw = read_mapping(path, list(JobFile.model_fields), "job", JobError)
    if workers is not None:
        raw["workers"] = workers
    try:
        job = JobFile.model_validate(raw)
    except ValidationError as err:
        raise JobError(f"{where}: {validation_message(err, JobFile)}") from None
    base = path.resolve().parent
    try:
        config = load_config(base / job.config, [*job.set, *_data_overrides(job.data, base)])
    except ConfigError as err:
        raise JobError(f"{where}: {err}") from err
    return JobSpec(name=job.name or path.stem, config=config, run_dir=str((base / job.run_dir).resolve()),
                   workers=job.workers, max_restarts=job.max_restarts, resources=job.resources.model_dump(),
                   image=job.image, kubernetes=job.kubernetes.model_dump(), source=where)
