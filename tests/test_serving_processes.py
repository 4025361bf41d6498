"""``twotower serve --num_serving_processes 2``: two processes on the same gRPC and REST ports (SO_REUSEPORT), each
with the model loaded; a reload over gRPC is refused (it would reach one process only); one process dying stops
the group. Uses TF Serving's tiny TF2 test model (y = 3 * 2 * x)."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import tf_serving_models as models
from serving_process import ServerProcess
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    root = tmp_path_factory.mktemp("processes")
    models.tf2_module(root / "tf2" / "1")
    server = ServerProcess(root, "group", "--model_name", "tf2", "--model_base_path", str(root / "tf2"),
                           "--num_serving_processes", "2").wait()
    yield server
    server.stop()


def test_two_processes_answer_on_the_same_ports(group):
    workers = children(group.process.pid)
    assert len(workers) == 1, workers
    environ = Path(f"/proc/{workers[0]}/environ").read_bytes().split(b"\0")
    assert b"TWOTOWER_SERVING_PROCESS=1" in environ
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tf2"
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].dtype = 1
    for _ in range(8):   # new connections each time: the kernel spreads them over both processes
        with grpc.insecure_channel(group.target) as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        assert response.outputs["y"].float_val == [12.0]
        body = json.dumps({"instances": [2.0]}).encode()
        with urllib.request.urlopen(urllib.request.Request(f"{group.rest_url}/v1/models/tf2:predict", body),
                                    timeout=30) as answer:
            assert json.loads(answer.read()) == {"predictions": [12.0]}


def test_reload_over_grpc_is_refused(group):
    with grpc.insecure_channel(group.target) as channel:
        with pytest.raises(grpc.RpcError) as error:
            model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
                model_management_pb2.ReloadConfigRequest(), timeout=30)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--num_serving_processes" in error.value.details()


def test_a_dying_process_stops_the_group(group):
    (worker,) = children(group.process.pid)
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and group.process.poll() is None:
        time.sleep(0.2)
    assert group.process.returncode == 1
    assert "serving process 1 exited with status -9: stopping every serving process" in group.log.read_text()
