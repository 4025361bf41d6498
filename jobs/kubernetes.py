"""``--target kubernetes``: the job as a Kubeflow ``TFJob`` manifest (and a Vertex AI ``CustomJob`` spec).

Why it exists: on Kubernetes the training operator already starts TensorFlow workers, gives each its
``TF_CONFIG`` and restarts failed pods; the job only has to be described in its schema. The manifest is built
here, read back through the ``kubeflow-training`` SDK's ``KubeflowOrgV1TFJob`` model (the operator's OpenAPI
schema: a misspelt or misplaced field does not survive the round trip, and is reported), and checked against
the operator's own admission rules (replica types, the ``tensorflow`` container). ``--apply`` creates it with
the user's kubeconfig. The same job as a Vertex AI ``CustomJob`` (REST body for ``projects.locations.
customJobs.create``) is written beside it: Vertex also sets ``TF_CONFIG`` (its first pool is the chief).

Every pod runs ``python -m jobs.worker`` with the resolved job in ``TWOTOWER_JOB``; ``image`` must have this
package installed, and the run directory must be on a volume every pod mounts (``kubernetes.volume_claim`` at
``kubernetes.mount_path``).
"""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import yaml

from jobs.spec import JOB_ENV, JobError, JobSpec

CONTAINER = "tensorflow"                 # the operator requires this container name (its default port lives there)
REPLICA_TYPES = ("Chief", "Worker", "PS", "Evaluator", "Master")
COMMAND = ["python", "-m", "jobs.worker"]
VERTEX_MACHINES = (2, 4, 8, 16, 32)      # e2-standard-N: N vCPUs, 4 GB each


def _environment(spec: JobSpec) -> list[dict]:
    return [{"name": JOB_ENV, "value": spec.to_json()}, {"name": "TF_USE_LEGACY_KERAS", "value": "1"},
            {"name": "PYTHONUNBUFFERED", "value": "1"}]


def _check(spec: JobSpec) -> None:
    if not spec.image:
        raise JobError(f"{spec.source}: 'image' is required for --target kubernetes (a container image with "
                       f"twotower installed)")
    kube = spec.kubernetes
    if kube["volume_claim"] and not kube["mount_path"]:
        raise JobError(f"{spec.source}: 'kubernetes.mount_path' is required with 'kubernetes.volume_claim'")
    if kube["mount_path"] and not Path(spec.run_dir).is_relative_to(kube["mount_path"]):
        raise JobError(f"{spec.source}: run_dir {spec.run_dir} is not under kubernetes.mount_path "
                       f"{kube['mount_path']}, so the pods would not share it")


def tfjob_manifest(spec: JobSpec) -> dict:
    """The ``kubeflow.org/v1`` TFJob: ``spec.workers`` Worker replicas (worker 0 is the chief)."""
    _check(spec)
    resources = spec.resources
    amounts = {"cpu": str(resources["cpus_per_worker"]), "memory": f"{resources['memory_gb']:g}Gi",
               **({"nvidia.com/gpu": str(resources["gpus_per_worker"])} if resources["gpus_per_worker"] else {})}
    container = {"name": CONTAINER, "image": spec.image, "command": COMMAND, "env": _environment(spec),
                 "resources": {"requests": amounts, "limits": amounts}}
    pod: dict = {"containers": [container]}
    kube = spec.kubernetes
    if kube["volume_claim"]:
        container["volumeMounts"] = [{"name": "runs", "mountPath": kube["mount_path"]}]
        pod["volumes"] = [{"name": "runs", "persistentVolumeClaim": {"claimName": kube["volume_claim"]}}]
    if kube["service_account"]:
        pod["serviceAccountName"] = kube["service_account"]
    return {"apiVersion": "kubeflow.org/v1", "kind": "TFJob",
            "metadata": {"name": spec.name, "namespace": kube["namespace"],
                         "labels": {"app.kubernetes.io/name": "twotower", "twotower/job": spec.name}},
            "spec": {"runPolicy": {"backoffLimit": spec.max_restarts, "cleanPodPolicy": "None"},
                     "tfReplicaSpecs": {"Worker": {"replicas": spec.workers, "restartPolicy": "OnFailure",
                                                   "template": {"spec": pod}}}}}


def _differences(expected, actual, where: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        return [d for key in sorted(set(expected) | set(actual))
                for d in _differences(expected.get(key), actual.get(key), f"{where}.{key}" if where else key)]
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in _differences(e, a, f"{where}[{i}]")]
    return [] if expected == actual else [where]


def validate_tfjob(manifest: dict) -> None:
    """Reads ``manifest`` into the SDK's TFJob model and back; raises JobError naming every field that is not
    in the schema or has the wrong type, and breaches of the operator's admission rules."""
    from kubeflow.training import ApiClient

    client = ApiClient()
    try:
        model = client.deserialize(types.SimpleNamespace(data=json.dumps(manifest)), "KubeflowOrgV1TFJob")
    except (ValueError, TypeError) as err:
        raise JobError(f"TFJob manifest does not match the training operator's schema: {err}") from None
    lost = _differences(manifest, client.sanitize_for_serialization(model))
    if lost:
        raise JobError(f"TFJob manifest fields not in the training operator's schema: {', '.join(lost)}")
    replicas = manifest["spec"]["tfReplicaSpecs"]
    for kind, replica in replicas.items():
        if kind not in REPLICA_TYPES:
            raise JobError(f"TFJob replica type {kind!r} is not one of {', '.join(REPLICA_TYPES)}")
        if not any(c["name"] == CONTAINER for c in replica["template"]["spec"]["containers"]):
            raise JobError(f"TFJob {kind} replicas need a container named {CONTAINER!r}")


def vertex_custom_job(spec: JobSpec) -> dict:
    """The same job as a Vertex AI CustomJob: pool 0 is the chief, pool 1 the other workers."""
    _check(spec)
    resources = spec.resources
    cpus = max(resources["cpus_per_worker"], math.ceil(resources["memory_gb"] / 4))
    size = next((n for n in VERTEX_MACHINES if n >= cpus), None)
    if size is None:
        raise JobError(f"{spec.source}: no e2-standard machine has {cpus} vCPUs (the largest has 32)")
    machine = {"machineType": f"e2-standard-{size}"}
    if resources["gpus_per_worker"]:
        machine = {"machineType": f"n1-standard-{size}", "acceleratorType": "NVIDIA_TESLA_T4",
                   "acceleratorCount": resources["gpus_per_worker"]}
    container = {"imageUri": spec.image, "command": COMMAND, "env": _environment(spec)}
    pools = [{"machineSpec": machine, "replicaCount": 1, "containerSpec": container}]
    if spec.workers > 1:
        pools.append({"machineSpec": machine, "replicaCount": spec.workers - 1, "containerSpec": container})
    return {"displayName": spec.name, "jobSpec": {"workerPoolSpecs": pools,
                                                  "scheduling": {"restartJobOnWorkerRestart": True}}}


def write_manifests(spec: JobSpec, out: Path, apply: bool = False) -> int:
    """Writes OUT/tfjob.yaml and OUT/vertex-customjob.json; with ``apply``, creates the TFJob."""
    manifest = tfjob_manifest(spec)
    validate_tfjob(manifest)
    vertex = vertex_custom_job(spec)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tfjob.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    (out / "vertex-customjob.json").write_text(json.dumps(vertex, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out / 'tfjob.yaml'} (validated against the training operator's TFJob schema) and "
          f"{out / 'vertex-customjob.json'}")
    if apply:
        _apply(manifest)
    return 0


def _apply(manifest: dict) -> None:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_kube_config()
    except (ConfigException, FileNotFoundError, TypeError) as err:
        raise JobError(f"--apply: no usable kubeconfig ({err}); set KUBECONFIG or write ~/.kube/config, or apply "
                       f"the written tfjob.yaml with kubectl") from None
    namespace = manifest["metadata"]["namespace"]
    try:
        client.CustomObjectsApi().create_namespaced_custom_object("kubeflow.org", "v1", namespace, "tfjobs",
                                                                  manifest)
    except client.exceptions.ApiException as err:
        raise JobError(f"--apply: the cluster refused the TFJob ({err.status} {err.reason}): {err.body}") from None
    print(f"created TFJob {namespace}/{manifest['metadata']['name']}")
