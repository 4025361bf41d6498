"""The job file: which training config, which data, which run directory, how many workers and what each needs.

Why it exists: a job that runs on three engines (local processes, Ray, Kubernetes) must be described once, in a
file that can be kept and submitted again. It is read here, every field checked with an error that names the
file and the key, and resolved (relative paths against the job file, the training config loaded and validated
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
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from training.config import ConfigError, load_config

JOB_ENV = "TWOTOWER_JOB"  # the resolved job, as JSON, in every worker's environment
KNOWN = ("name", "config", "set", "data", "run_dir", "workers", "max_restarts", "resources", "image",
         "kubernetes")
RESOURCES = {"cpus_per_worker": 1, "memory_gb": 4, "gpus_per_worker": 0}
KUBERNETES = {"namespace": "default", "volume_claim": None, "mount_path": None, "service_account": None}
DATA_KEYS = ("path", "items", "interactions", "users")
NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")   # a Kubernetes object name (RFC 1123 label)


class JobError(ValueError):
    """A job file that cannot be submitted; the message names the file and the key."""


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
    def from_json(cls, text: str) -> "JobSpec":
        return cls(**json.loads(text))

    @classmethod
    def from_environment(cls) -> "JobSpec":
        text = os.environ.get(JOB_ENV)
        if not text:
            raise JobError(f"{JOB_ENV} is not set: a worker is started by `twotower submit`, which sets it")
        return cls.from_json(text)


def _positive(where: str, key: str, value, zero_ok: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero_ok else 1):
        kind = "a non-negative" if zero_ok else "a positive"
        raise JobError(f"{where}: '{key}' must be {kind} integer, got {value!r}")
    return value


def _block(where: str, key: str, value, defaults: dict) -> dict:
    if value is None:
        return dict(defaults)
    if not isinstance(value, Mapping):
        raise JobError(f"{where}: '{key}' must be a mapping of {', '.join(defaults)}")
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise JobError(f"{where}: unknown key '{key}.{unknown[0]}' (known: {', '.join(defaults)})")
    return {**defaults, **value}


def _data_overrides(where: str, data, base: Path) -> list[str]:
    """``data:`` as --set overrides of the config's data block, with paths made absolute."""
    if data is None:
        return []
    if isinstance(data, str):
        data = {"path": data}
    if not isinstance(data, Mapping):
        raise JobError(f"{where}: 'data' must be a directory or a mapping of {', '.join(DATA_KEYS)}")
    unknown = sorted(set(data) - set(DATA_KEYS))
    if unknown:
        raise JobError(f"{where}: unknown key 'data.{unknown[0]}' (known: {', '.join(DATA_KEYS)})")
    return [f"data.{key}={json.dumps(str((base / str(value)).resolve()))}" for key, value in data.items()
            if value is not None]


def load_job(path: str | os.PathLike, workers: int | None = None) -> JobSpec:
    """Reads and checks a job file; ``workers`` (``--workers``) overrides the file's."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise JobError(f"job file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise JobError(f"{where}: not valid YAML: {err}") from err
    if not isinstance(raw, Mapping):
        raise JobError(f"{where}: top level must be a mapping with keys {', '.join(KNOWN)}")
    unknown = sorted(set(raw) - set(KNOWN))
    if unknown:
        raise JobError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(KNOWN)})")
    for key in ("config", "run_dir"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise JobError(f"{where}: '{key}' is required (a path)")
    base = path.resolve().parent
    overrides = raw.get("set") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise JobError(f"{where}: 'set' must be a list of key=value strings")
    try:
        config = load_config(base / raw["config"], [*overrides, *_data_overrides(where, raw.get("data"), base)])
    except ConfigError as err:
        raise JobError(f"{where}: {err}") from err
    count = _positive(where, "workers", workers if workers is not None else raw.get("workers", 1))
    resources = _block(where, "resources", raw.get("resources"), RESOURCES)
    for key in ("cpus_per_worker", "gpus_per_worker"):
        _positive(where, f"resources.{key}", resources[key], zero_ok=key == "gpus_per_worker")
    if not isinstance(resources["memory_gb"], (int, float)) or resources["memory_gb"] <= 0:
        raise JobError(f"{where}: 'resources.memory_gb' must be a positive number, got {resources['memory_gb']!r}")
    image = raw.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise JobError(f"{where}: 'image' must be a container image name")
    name = str(raw.get("name") or path.stem)
    if not NAME.fullmatch(name) or len(name) > 40:
        raise JobError(f"{where}: 'name' {name!r} must be lowercase letters, digits and '-', starting with a letter "
                       f"(at most 40 characters: it names Kubernetes objects)")
    return JobSpec(name=name, config=config, run_dir=str((base / raw["run_dir"]).resolve()), workers=count,
                   max_restarts=_positive(where, "max_restarts", raw.get("max_restarts", 0), zero_ok=True),
                   resources=resources, image=image,
                   kubernetes=_block(where, "kubernetes", raw.get("kubernetes"), KUBERNETES), source=where)
