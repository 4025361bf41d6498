"""``--target kubernetes``: a TFJob manifest the training operator's schema accepts, a Vertex AI CustomJob, and
a clear error for ``--apply`` without a kubeconfig."""

import copy
import json

import pytest
import yaml
from helpers import ROOT, cli

from jobs.kubernetes import tfjob_manifest, validate_tfjob
from jobs.spec import JobError, JobSpec, load_job


def _job(tmp_path, **fields) -> str:
    job = {"name": "weekly", "config": str(ROOT / "configs" / "smoke.yaml"), "data": "/mnt/shared/world",
           "run_dir": "/mnt/shared/runs/weekly", "workers": 3, "max_restarts": 2,
           "image": "registry.example.com/twotower:0.1.0", "resources": {"cpus_per_worker": 2, "memory_gb": 6},
           "kubernetes": {"namespace": "ml", "volume_claim": "shared-runs", "mount_path": "/mnt/shared"}, **fields}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return str(path)


def test_manifests_for_the_job(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    result = cli("submit", _job(tmp_path), "--target", "kubernetes", "--out", tmp_path / "out")
    assert "validated against the training operator's TFJob schema" in result.stdout
    manifest = yaml.safe_load((tmp_path / "out" / "tfjob.yaml").read_text())
    worker = manifest["spec"]["tfReplicaSpecs"]["Worker"]
    container = worker["template"]["spec"]["containers"][0]
    assert worker["replicas"] == 3 and manifest["spec"]["runPolicy"]["backoffLimit"] == 2
    assert container["name"] == "tensorflow" and container["command"] == ["python", "-m", "jobs.worker"]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "6Gi"}
    assert container["volumeMounts"][0]["mountPath"] == "/mnt/shared"
    job = JobSpec.from_json(next(e["value"] for e in container["env"] if e["name"] == "TWOTOWER_JOB"))
    assert job.config["data"]["path"] == "/mnt/shared/world" and job.run_dir == "/mnt/shared/runs/weekly"
    vertex = json.loads((tmp_path / "out" / "vertex-customjob.json").read_text())
    pools = vertex["jobSpec"]["workerPoolSpecs"]
    assert [p["replicaCount"] for p in pools] == [1, 2] and pools[0]["machineSpec"]["machineType"] == "e2-standard-2"
    applied = cli("submit", _job(tmp_path), "--target", "kubernetes", "--out", tmp_path / "out", "--apply",
                  check=False)
    assert applied.returncode == 2 and "error: --apply: no usable kubeconfig" in applied.stderr


@pytest.mark.parametrize("breakage, message", [
    (lambda m: m["spec"]["tfReplicaSpecs"]["Worker"].update(restartPolicyy="Never"), "restartPolicyy"),
    (lambda m: m["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0].update(
        name="trainer"), "container named 'tensorflow'"),
    (lambda m: m["spec"]["tfReplicaSpecs"].update(Boss=m["spec"]["tfReplicaSpecs"]["Worker"]), "'Boss'"),
    (lambda m: m["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["env"].append(
        {"value": "x"}), "name"),
])
def test_schema_violations_are_named(tmp_path, breakage, message):
    manifest = copy.deepcopy(tfjob_manifest(load_job(_job(tmp_path))))
    validate_tfjob(manifest)
    breakage(manifest)
    with pytest.raises(JobError, match=message):
        validate_tfjob(manifest)


def test_kubernetes_job_needs_an_image_and_a_shared_run_dir(tmp_path):
    with pytest.raises(JobError, match="'image' is required"):
        tfjob_manifest(load_job(_job(tmp_path, image=None)))
    with pytest.raises(JobError, match="is not under kubernetes.mount_path"):
        tfjob_manifest(load_job(_job(tmp_path, run_dir="/elsewhere/run")))
