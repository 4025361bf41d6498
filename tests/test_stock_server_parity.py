"""Where stock ``tensorflow_model_server`` is installed, it must load the brute-force export and answer exactly as
our server does: an old-style request (the optional inputs left out, filled from the SignatureDef's defaults by
both servers) and one with them. It cannot be installed on this project's machines, so here the test says so and
skips."""

import shutil
import subprocess
import time

import numpy as np
import pytest
from helpers import cli
from serving_process import ServerProcess, free_port

STOCK = shutil.which("tensorflow_model_server")
pytestmark = pytest.mark.skipif(STOCK is None, reason="tensorflow_model_server is not on PATH (it cannot be "
                                                     "installed here); the brute-force parity check runs where it is")


def test_stock_tf_serving_answers_like_ours(trained, tmp_path):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    base = tmp_path / "models" / "shop"
    cli("export", "--run-dir", trained[0], "--base-path", base, "--k", 10, "--index", "brute-force")
    items = [line.split("\t")[0] for line in (base / "1" / "assets" / "items.tsv").read_text().splitlines()[1:]]
    port = free_port()
    stock = subprocess.Popen([STOCK, f"--port={port}", "--model_name=shop", f"--model_base_path={base}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ours = ServerProcess(tmp_path, "ours", "--model_name", "shop", "--model_base_path", str(base)).wait()
    try:
        plain = {"user_id": ["U00001", "nobody"], "history": [items[:3], ["", items[7], "unknown"]],
                 "user_text": ["", "camping tent"]}
        optional = {**plain, "diversity": np.array([0.5, 0.0], np.float32), "exclude": [[items[10]], [""]],
                    "max_per_category": np.array([2, 0], np.int32)}
        answers = []
        for inputs, target in ((plain, f"127.0.0.1:{port}"), (plain, ours.target), (optional, f"127.0.0.1:{port}"),
                               (optional, ours.target)):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "shop"
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
            deadline = time.monotonic() + 120
            while True:
                try:
                    answers.append(stub.Predict(request, timeout=10))
                    break
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
        for stock_answer, our_answer in (answers[:2], answers[2:]):
            for name in ("item_ids", "because", "because_words"):
                assert tf.make_ndarray(stock_answer.outputs[name]).tolist() == \
                    tf.make_ndarray(our_answer.outputs[name]).tolist(), name
            for name in ("scores", "because_score"):
                np.testing.assert_allclose(tf.make_ndarray(stock_answer.outputs[name]),
                                           tf.make_ndarray(our_answer.outputs[name]), atol=1e-5)
    finally:
        stock.terminate()
        stock.wait(30)
        ours.stop()
