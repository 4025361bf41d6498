"""The example job files in jobs/examples/ are valid jobs, as the README and docs/jobs.md hand them to users.

Each loads through the job schema with the training config it names; the Kubernetes one renders into a TFJob
that the training operator's schema accepts (and the Vertex AI body beside it) with what the file asks for.
Training a local job is what test_jobs.py proves on a tiny world, so here the local example is only resolved.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from jobs.kubernetes import write_manifests
from jobs.spec import load_job

EXAMPLES = Path(__file__).resolve().parents[1] / "jobs" / "examples"


def test_every_target_has_an_example():
    assert sorted(path.stem for path in EXAMPLES.glob("*.yaml")) == ["kubernetes", "local", "ray"]


@pytest.mark.parametrize("name", ["local", "ray", "kubernetes"])
def test_example_job_resolves_with_its_training_config(name):
    raw = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    spec = load_job(EXAMPLES / f"{name}.yaml")
    assert spec.workers == raw["workers"] and spec.max_restarts == raw["max_restarts"]
    assert Path(spec.run_dir).is_absolute()
    assert spec.config["model"]["encoder"] == "minilm"           # configs/default.yaml, the demo's model
    if name == "local":                                          # relative paths are against the job file
        assert spec.run_dir == str((EXAMPLES / raw["run_dir"]).resolve())


def test_kubernetes_example_renders_a_valid_tfjob(tmp_path):
    spec = load_job(EXAMPLES / "kubernetes.yaml")
    assert write_manifests(spec, tmp_path) == 0
    tfjob = yaml.safe_load((tmp_path / "tfjob.yaml").read_text())
    worker = tfjob["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 4 and tfjob["metadata"]["namespace"] == "ml"
    container = worker["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/twotower:0.1.0"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"   # a Kubernetes quantity
    vertex = json.loads((tmp_path / "vertex-customjob.json").read_text())
    assert vertex["displayName"] == "shop-weekly"
