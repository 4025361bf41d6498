"""TF Serving's own integration tests, ported: tensorflow_serving/model_servers/tensorflow_model_server_test.py (and
its test_util/tensorflow_model_server_test_base.py) against ``twotower serve``, with TF Serving's test models
rebuilt by the session (tests/tf_serving_models.py). Each ported test keeps TF Serving's name (as ``test_<name>``)
and its assertions; a few more check what the port added (warm-up, reload errors, flags, malformed bodies).

Two servers, started together: ``main`` serves every test model from one model config (TF Serving's flags
``--rest_api_timeout_in_ms``, ``--grpc_socket_path``, ``--grpc_channel_arguments``, ``--monitoring_config_file``
and every accepted-without-effect flag); ``polling`` re-reads its model config each second and batches.

Not applicable here (they need what this server does not serve or this machine lacks):
- testPredictOnTfLite, the TF Lite variants of the predict/metadata tests: TF Lite models (``model.tflite``) are
  not served; ``--prefer_tflite_model`` is accepted without effect.
- testPredictSessionBundle / testPredictUpconvertedSavedModel / testPredictBatching on ``half_plus_two``
  SessionBundle: the pre-SavedModel SessionBundle format is gone from TensorFlow 2 (the batching test runs on the
  SavedModel instead).
- _TestBadModel*: disabled in TF Serving itself (leading underscore).
- Profiler and TPU/GPU tests (``--enable_profiler``, ``--per_process_gpu_memory_fraction``, TPU warm-up):
  no profiler service, no accelerator; the flags are accepted without effect.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
import tf_serving_models as models
from helpers import FakeServable, write_certificate
from serving_process import ServerProcess
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

pytestmark = pytest.mark.xdist_group("tf_serving_compat")   # the module's servers: one pytest-xdist worker

RPC_TIMEOUT = 30.0   # TF Serving's is 5 s; this machine's CPUs are shared
VERSION = models.VERSION
NO_EFFECT_FLAGS = ("--flush_filesystem_caches=false", "--num_unload_threads=2",
                   "--per_process_gpu_memory_fraction=0.5", "--remove_unused_fields_from_bundle_metagraph=false",
                   "--prefer_tflite_model=true", "--num_tflite_pools=2", "--num_tflite_interpreters_per_pool=2",
                   "--xla_cpu_compilation_enabled", "--xla_gpu_compilation_enabled", "--enable_profiler=false",
                   "--mixed_precision=bfloat16",
                   "--skip_initialize_tpu")


# --------------------------------------------------------------------------------------------------------------
# Test models and servers
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def testdata(tmp_path_factory) -> dict[str, Path]:
    """TF Serving's testdata, built once: base paths of numeric version directories, and config files."""
    root = tmp_path_factory.mktemp("tf_serving_testdata")
    paths = {name: root / name for name in ("half_plus_two", "half_plus_three", "tf2", "tf2_signatures", "keras",
                                            "bad_warmup", "distrat")}
    models.half_plus(paths["half_plus_two"] / f"{VERSION:08d}", 2.0, warmup=[models.classify_log()])
    models.half_plus(paths["half_plus_three"] / f"{VERSION:08d}", 3.0)
    (paths["half_plus_three"] / f"{VERSION:08d}" / "batching_params.pbtxt").write_text(
        "max_batch_size { value: 2 }\nbatch_timeout_micros { value: 0 }\n")   # its own, for per-model batching
    models.tf2_module(paths["tf2"] / f"{VERSION:08d}")
    models.tf2_two_signatures(paths["tf2_signatures"] / f"{VERSION:08d}")
    models.keras_sequential(paths["keras"] / f"{VERSION:08d}")
    models.half_plus(paths["bad_warmup"] / "1", 2.0, warmup=[models.classify_log("no_such_signature")])
    distrat_keras(paths["distrat"] / f"{VERSION:08d}")
    paths["good_config"] = root / "good_model_config.conf"
    paths["good_config"].write_text(models.model_config({"half_plus_two": paths["half_plus_two"],
                                                         "half_plus_three": paths["half_plus_three"]}))
    paths["bad_config"] = root / "bad_model_config.txt"
    paths["bad_config"].write_text(models.BAD_MODEL_CONFIG)
    paths["monitoring"] = root / "monitoring_config.txt"
    paths["monitoring"].write_text('prometheus_config { enable: true path: "/monitoring/prometheus/custom" }\n')
    paths["batching"] = root / "batching_config.txt"
    paths["batching"].write_text("max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n"
                                 "max_enqueued_batches { value: 1000000 }\nnum_batch_threads { value: 8 }\n")
    return paths


def distrat_keras(version_dir: Path) -> None:
    """test_distrat_sequential_keras_saved_model_save's model: a Keras model built under MirroredStrategy on two
    virtual CPUs; built in a subprocess, since virtual devices must be set before TensorFlow starts."""
    script = f"""
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf, tf_keras
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
with tf.distribute.MirroredStrategy(devices=("/cpu:0", "/cpu:1")).scope():
    model = tf_keras.models.Sequential()
    model.add(tf_keras.layers.Input(dtype="float32", shape=(1,), name="x"))
    model.add(tf_keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros"))
    model.add(tf_keras.layers.Lambda(lambda x: x, name="y"))
tf.saved_model.save(model, {str(version_dir)!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def servers(testdata, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tf_serving_servers")
    main_config = tmp / "main.conf"
    main_config.write_text(models.model_config({
        "default": testdata["half_plus_two"], "half_plus_two": testdata["half_plus_two"],
        "half_plus_three": testdata["half_plus_three"], "tf2": testdata["tf2"],
        "tf2_signatures": testdata["tf2_signatures"], "keras": testdata["keras"], "distrat": testdata["distrat"]}))
    polled = tmp / "polled.conf"
    polled.write_text(models.model_config({"half_plus_two": testdata["half_plus_two"]}))
    socket = tmp / "tf-serving.sock"
    started = {
        "main": ServerProcess(tmp, "main", "--model_config_file", str(main_config), "--rest_api_timeout_in_ms=5000",
                              f"--grpc_socket_path={socket}", f"--monitoring_config_file={testdata['monitoring']}",
                              "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb",
                              "--max_num_load_retries=0", "--rest_api_enable_cors_support", "--rest_api_num_threads=2",
                              "--num_load_threads=2", "--saved_model_tags=serve", *NO_EFFECT_FLAGS),
        "polling": ServerProcess(tmp, "polling", f"--model_config_file={polled}",
                                 "--model_config_file_poll_wait_seconds=1", "--enable_batching",
                                 f"--batching_parameters_file={testdata['batching']}",
                                 "--enable_per_model_batching_parameters", "--enable_grpc_healthcheck_service=false",
                                 "--num_request_iterations_for_warmup=2", "--tensorflow_intra_op_parallelism=2",
                                 "--tensorflow_inter_op_parallelism=2"),
    }
    try:
        for server in started.values():
            server.wait()
        yield {**started, "socket": socket, "main_config": main_config, "polled_config": polled}
    finally:
        codes = {name: server.stop() for name, server in started.items()}
    assert codes == {"main": 0, "polling": 0}, codes


def prediction_stub(address: str) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))


def verify_predict(address: str, expected_output: float, expected_version: int, model_name: str = "default",
                   specify_output: bool = True, batch_input: bool = False,
                   signature_name: str = "serving_default") -> None:
    """TF Serving's VerifyPredictRequest: x = 2.0 of shape [1] (or [1, 1]), y read from float_val."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    result = prediction_stub(address).Predict(request, RPC_TIMEOUT)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert len(result.outputs["y"].float_val) == 1
    assert result.outputs["y"].float_val[0] == expected_output
    verify_model_spec(result.model_spec, model_name, signature_name, expected_version)


def verify_model_spec(spec, name: str, signature: str, version: int) -> None:
    assert (spec.name, spec.signature_name, spec.version.value) == (name, signature, version)


def call_rest(url: str, body) -> bytes:
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=RPC_TIMEOUT) as response:
        return response.read()


def rest_url(server: ServerProcess, path: str) -> str:
    return f"{server.rest_url}{path}"


def example_request(message, signature: str):
    message.model_spec.name = "default"
    message.model_spec.signature_name = signature
    models.example_input(message.input, x=2.0)
    return message


# --------------------------------------------------------------------------------------------------------------
# tensorflow_model_server_test.py
# --------------------------------------------------------------------------------------------------------------
def test_GetModelStatus(servers):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(servers["main"].target))
    result = stub.GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == VERSION
    assert result.model_version_status[0].status.error_code == 0


def test_Classify(servers):
    request = example_request(classification_pb2.ClassificationRequest(), "classify_x_to_y")
    result = prediction_stub(servers["main"].target).Classify(request, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    verify_model_spec(result.model_spec, "default", "classify_x_to_y", VERSION)


def test_Regress(servers):
    request = example_request(regression_pb2.RegressionRequest(), "regress_x_to_y")
    result = prediction_stub(servers["main"].target).Regress(request, RPC_TIMEOUT)
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    verify_model_spec(result.model_spec, "default", "regress_x_to_y", VERSION)


def test_MultiInference(servers):
    request = inference_pb2.MultiInferenceRequest()
    request.tasks.add().model_spec.name = "default"
    request.tasks[0].model_spec.signature_name = "regress_x_to_y"
    request.tasks[0].method_name = "tensorflow/serving/regress"
    request.tasks.add().model_spec.name = "default"
    request.tasks[1].model_spec.signature_name = "classify_x_to_y"
    request.tasks[1].method_name = "tensorflow/serving/classify"
    models.example_input(request.input, x=2.0)
    result = prediction_stub(servers["main"].target).MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for i in range(2):
        verify_model_spec(result.results[i].model_spec, request.tasks[i].model_spec.name,
                          request.tasks[i].model_spec.signature_name, VERSION)


def test_PredictSavedModel(servers):
    verify_predict(servers["main"].target, expected_output=3.0, expected_version=VERSION)
    verify_predict(servers["main"].target, expected_output=3.0, specify_output=False, expected_version=VERSION)


def test_PredictBatching(servers):
    verify_predict(servers["polling"].target, 3.0, VERSION, model_name="half_plus_two")
    verify_predict(servers["polling"].target, 3.0, VERSION, model_name="half_plus_two", specify_output=False)


def test_GoodModelConfig(servers):
    address = servers["main"].target
    for name, expected in (("half_plus_two", 3.0), ("half_plus_three", 4.0)):
        verify_predict(address, expected, VERSION, model_name=name)
        verify_predict(address, expected, VERSION, model_name=name, specify_output=False)


def test_BadModelConfig(testdata, capsys):
    """In-process: the server refuses the file before it loads anything (a subprocess would prove nothing more)."""
    from serving.server import main

    assert main(["--model_config_file", str(testdata["bad_config"]), "--port", "0", "--rest_api_port", "0"]) == 2
    error = capsys.readouterr().err
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in error
    assert f"Invalid protobuf file: '{testdata['bad_config']}'" in error and "Traceback" not in error


def test_ModelConfigReload(servers, testdata):
    server, config = servers["polling"], servers["polled_config"]
    verify_predict(server.target, 3.0, VERSION, model_name="half_plus_two", specify_output=False)
    config.write_text(models.model_config({"half_plus_three": testdata["half_plus_three"]}))
    deadline = time.monotonic() + 60   # TF Serving's test sleeps poll period + 1 s; loads are slower here
    while True:
        try:
            verify_predict(server.target, 4.0, VERSION, model_name="half_plus_three", specify_output=False)
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    with pytest.raises(grpc.RpcError) as gone:   # the new config no longer lists half_plus_two
        verify_predict(server.target, 3.0, VERSION, model_name="half_plus_two")
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_ModelConfigReloadWithZeroPollPeriod(servers, testdata):
    server, config = servers["main"], servers["main_config"]
    original = config.read_text()
    config.write_text(models.model_config({"half_plus_three": testdata["half_plus_three"]}))
    try:
        time.sleep(2)   # poll period 0 + 1 s, as TF Serving's test
        verify_predict(server.target, 3.0, VERSION, model_name="half_plus_two", specify_output=False)
    finally:
        config.write_text(original)


def test_GoodGrpcChannelArgs(servers):
    """The main server was started with --grpc_channel_arguments=grpc.max_connection_age_ms=2000,..."""
    verify_predict(servers["main"].target, 3.0, VERSION, specify_output=False)


def test_ClassifyREST(servers):
    body = call_rest(rest_url(servers["main"], "/v1/models/default:classify"),
                     {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert json.loads(body) == {"results": [[["", 3.0]]]}


def test_RegressREST(servers):
    body = call_rest(rest_url(servers["main"], "/v1/models/default:regress"),
                     {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert json.loads(body) == {"results": [3.0]}


def test_PredictREST(servers):
    body = call_rest(rest_url(servers["main"], "/v1/models/default:predict"), {"instances": [2.0, 3.0, 4.0]})
    assert json.loads(body) == {"predictions": [3.0, 3.5, 4.0]}


def test_PredictColumnarREST(servers):
    body = call_rest(rest_url(servers["main"], "/v1/models/default:predict"), {"inputs": [2.0, 3.0, 4.0]})
    assert json.loads(body) == {"outputs": [3.0, 3.5, 4.0]}


def test_GetStatusREST(servers):
    body = call_rest(rest_url(servers["main"], "/v1/models/default"), None)
    assert json.loads(body) == {"model_version_status": [{"version": str(VERSION), "state": "AVAILABLE",
                                                          "status": {"error_code": "OK", "error_message": ""}}]}


def test_GetModelMetadataREST(servers):
    """TF Serving compares with testdata/half_plus_two_model_metadata.json; these are its fields for our rebuild."""
    metadata = json.loads(call_rest(rest_url(servers["main"], "/v1/models/default/metadata"), None))
    assert metadata["model_spec"] == {"name": "default", "signature_name": "", "version": str(VERSION)}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x_to_y2",
            "regress_x2_to_y3"} <= set(signatures)
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["x"] == {"dtype": "DT_FLOAT", "tensor_shape": {
        "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False}, "name": "x:0"}
    classify = signatures["classify_x_to_y"]
    assert classify["method_name"] == "tensorflow/serving/classify"
    assert classify["inputs"]["inputs"]["dtype"] == "DT_STRING" and classify["outputs"]["scores"]["name"] == "y:0"
    assert signatures["regress_x_to_y"]["outputs"]["outputs"]["name"] == "y:0"


def test_PrometheusEndpoint(servers):
    """--monitoring_config_file moved the endpoint to /monitoring/prometheus/custom."""
    body = call_rest(rest_url(servers["main"], "/monitoring/prometheus/custom"), None)
    assert "# TYPE" in body.decode("utf-8")
    with pytest.raises(urllib.error.HTTPError) as default_path:
        call_rest(rest_url(servers["main"], "/monitoring/prometheus/metrics"), None)
    assert default_path.value.code == 404


def test_PredictUDS(servers):
    verify_predict(f"unix:{servers['socket']}", 3.0, VERSION, specify_output=False)


def test_tf_saved_model_save(servers):
    verify_predict(servers["main"].target, 12.0, VERSION, model_name="tf2", specify_output=False)


def test_tf_saved_model_save_multiple_signatures(servers):
    address = servers["main"].target
    verify_predict(address, 2.0, VERSION, model_name="tf2_signatures", signature_name="custom_signature_key")
    verify_predict(address, 1.0, VERSION, model_name="tf2_signatures")


def test_sequential_keras_saved_model_save(servers):
    verify_predict(servers["main"].target, 2.0, VERSION, model_name="keras", batch_input=True,
                   specify_output=False)


def test_distrat_sequential_keras_saved_model_save(servers):
    verify_predict(servers["main"].target, 2.0, VERSION, model_name="distrat", batch_input=True,
                   specify_output=False)


# --------------------------------------------------------------------------------------------------------------
# What the port added
# --------------------------------------------------------------------------------------------------------------
def test_warmup_replays_the_recorded_requests_and_a_failing_one_keeps_the_server_from_starting(servers, testdata,
                                                                                             capsys):
    log = servers["main"].log.read_text()
    assert "warm-up of half_plus_two version 123: 1 requests x 1" in log   # half_plus_two's classify record
    assert "warm-up of half_plus_two version 123: 1 requests x 2" in servers["polling"].log.read_text()
    assert "warm-up of half_plus_three" not in log                     # no file: loaded cold, nothing made up
    from serving.server import main  # in-process: a model that fails at start stops the server, as TF Serving's

    assert main(["--model_name", "bad", "--model_base_path", str(testdata["bad_warmup"]), "--port", "0",
                 "--rest_api_port", "0", "-q"]) == 2
    error = capsys.readouterr().err
    assert "1 model(s) did not become available: {{name: bad version: 1}, UNKNOWN: " in error
    assert "tf_serving_warmup_requests: warm-up request 0 failed" in error and "no_such_signature" in error


def test_warmup_file_is_checked_and_can_be_switched_off(testdata, tmp_path):
    """In-process: Servable.load replays the file; --enable_model_warmup=false loads without reading it."""
    from serving.servable import LoadError, LoadOptions, Servable

    version = tmp_path / "1"
    models.half_plus(version, 2.0)
    models.write_warmup(version, [prediction_log_pb2.PredictionLog()])   # a record with no request in it
    with pytest.raises(LoadError, match="Unsupported log_type for warmup: None"):
        Servable.load("m", 1, version)
    cold = Servable.load("m", 1, version, LoadOptions(warm_up=False))
    assert sorted(cold.signatures) == ["classify_x_to_y", "regress_x2_to_y3", "regress_x_to_y", "regress_x_to_y2",
                                       "serving_default"]


def test_every_accepted_flag_without_effect_says_so_once(servers):
    log = servers["main"].log.read_text()
    for flag in NO_EFFECT_FLAGS:
        name = flag.split("=")[0]
        assert len([line for line in log.splitlines()
                    if line.startswith(f"{name}: ") and line.endswith("(accepted, no effect here)")]) == 1, name


def test_example_errors_are_tf_serving_statuses(servers):
    stub = prediction_stub(servers["main"].target)
    cases = [
        (example_request(classification_pb2.ClassificationRequest(), "regress_x_to_y"), stub.Classify,
         "Expected classification signature method_name to be tensorflow/serving/classify. Was: "
         "tensorflow/serving/regress"),
        (example_request(regression_pb2.RegressionRequest(), "nope"), stub.Regress,
         "No signature was found with the name: nope"),
        (classification_pb2.ClassificationRequest(model_spec={"name": "default",
                                                              "signature_name": "classify_x_to_y"}),
         stub.Classify, "Input is empty."),
    ]
    for request, call, message in cases:
        with pytest.raises(grpc.RpcError) as caught:
            call(request, RPC_TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in caught.value.details()
    multi = inference_pb2.MultiInferenceRequest()
    for signature in ("regress_x_to_y", "regress_x2_to_y3"):   # different input tensors are fine: same tf_example
        task = multi.tasks.add()
        task.model_spec.name = "default"
        task.model_spec.signature_name = signature
        task.method_name = "tensorflow/serving/regress"
    multi.input.example_list.examples.add().features.feature["x2"].float_list.value.append(4.0)
    multi.input.example_list.examples[0].features.feature["x"].float_list.value.append(2.0)
    answer = stub.MultiInference(multi, RPC_TIMEOUT)
    assert [r.regression_result.regressions[0].value for r in answer.results] == [3.0, 5.0]
    multi.tasks[1].method_name = "tensorflow/serving/predict"
    with pytest.raises(grpc.RpcError) as caught:
        stub.MultiInference(multi, RPC_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "Unsupported signature method_name: tensorflow/serving/predict" in caught.value.details()


def test_examples_with_context_and_several_rows_over_rest(servers):
    body = call_rest(rest_url(servers["main"], "/v1/models/default:regress"),
                     {"signature_name": "regress_x2_to_y3", "context": {"x2": 1.0, "x": 0.0},
                      "examples": [{"x": 2.0}, {"x": 4.0, "x2": 8.0}]})
    assert json.loads(body) == {"results": [3.5, 7.0]}   # 0.5 * x2 + 3, x2 from the context unless overridden
    with pytest.raises(urllib.error.HTTPError) as caught:   # 4 is an int64 feature, as in TF Serving's JSON
        call_rest(rest_url(servers["main"], "/v1/models/default:regress"),
                  {"signature_name": "regress_x_to_y", "examples": [{"x": 4}]})
    assert caught.value.code == 400 and "Data types don't match" in json.loads(caught.value.read())["error"]


@pytest.mark.parametrize("depth", [65, 1000])
def test_deeply_nested_json_is_a_400(servers, depth):
    body = ('{"instances": [' + "[" * depth + "2.0" + "]" * depth + "]}").encode()   # too deep for json.dumps
    with pytest.raises(urllib.error.HTTPError) as caught:
        call_rest(rest_url(servers["main"], "/v1/models/default:predict"), body)
    assert caught.value.code == 400
    assert "nested" in json.loads(caught.value.read())["error"]


def test_reload_config_waits_and_reports_models_that_did_not_become_available(servers, testdata, tmp_path):
    from google.protobuf import text_format

    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(servers["polling"].target))
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(models.model_config({"half_plus_three": testdata["half_plus_three"],
                                           "broken": testdata["bad_warmup"], "empty": tmp_path}), request.config)
    with pytest.raises(grpc.RpcError) as caught:
        stub.HandleReloadConfigRequest(request, 120)
    assert caught.value.code() == grpc.StatusCode.UNKNOWN
    details = caught.value.details()
    assert details.startswith("2 model(s) did not become available: {")
    assert "{name: broken version: 1}, UNKNOWN:" in details and "no_such_signature" in details
    assert "{name: empty}, NOT_FOUND: no version found under base path" in details
    verify_predict(servers["polling"].target, 4.0, VERSION, model_name="half_plus_three")   # the good one serves


def test_per_model_batching_parameters(servers):
    """The polling server (--enable_per_model_batching_parameters) now serves half_plus_three, whose version holds
    batching_params.pbtxt with max_batch_size 2 (the server's own file says 128)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_three"
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.extend([1.0, 2.0, 3.0])
    request.inputs["x"].tensor_shape.dim.add().size = 3
    request.inputs["x"].tensor_shape.dim.add().size = 1
    with pytest.raises(grpc.RpcError) as caught:
        prediction_stub(servers["polling"].target).Predict(request, RPC_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than maximum batch size 2" in caught.value.details()
    del request.inputs["x"].float_val[2:]
    request.inputs["x"].tensor_shape.dim[0].size = 2
    answer = prediction_stub(servers["polling"].target).Predict(request, RPC_TIMEOUT)
    assert list(answer.outputs["y"].float_val) == [3.5, 4.0]


def test_outputs_as_typed_fields_or_tensor_content():
    """AsProtoField (float_val, string_val, ...) by default; --enable_serialization_as_tensor_content packs them."""
    import numpy as np

    from serving.grpc_service import PredictionService

    class Core:
        def predict(self, *args, **kwargs):
            return 4, {"y": np.array([[3.5], [4.0]], np.float32), "label": np.array([b"a", b"b"], object)}

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    context = type("Context", (), {"time_remaining": lambda self: None})()
    typed = PredictionService(Core()).Predict(request, context)
    assert list(typed.outputs["y"].float_val) == [3.5, 4.0] and not typed.outputs["y"].tensor_content
    assert list(typed.outputs["label"].string_val) == [b"a", b"b"]
    packed = PredictionService(Core(), tensor_content=True).Predict(request, context)
    assert not packed.outputs["y"].float_val and packed.outputs["y"].tensor_content
    for answer in (typed, packed):
        assert tf.make_ndarray(answer.outputs["y"]).tolist() == [[3.5], [4.0]]
        assert answer.model_spec.version.value == 4 and answer.model_spec.signature_name == "serving_default"


def test_a_half_copied_version_waits_until_it_is_complete(testdata, tmp_path):
    """In-process manager with the real loader: no variables index yet → START, not a failed load."""
    import shutil

    from serving.config import ModelConfig
    from serving.manager import ModelManager
    from serving.metrics import Metrics

    base = tmp_path / "model"
    shutil.copytree(testdata["half_plus_three"] / f"{VERSION:08d}", base / "7")
    index = base / "7" / "variables" / "variables.index"
    held = index.read_bytes()
    index.unlink()
    metrics = Metrics()
    manager = ModelManager(metrics, poll_seconds=0)
    manager.start([ModelConfig("m", str(base))])
    try:
        assert [(s.version, s.state) for s in manager.status("m")] == [(7, "START")]
        index.write_bytes(held)
        manager.poll()
        manager.poll()
        assert [(s.version, s.state) for s in manager.status("m")] == [(7, "AVAILABLE")]
        assert b"twotower_model_load_failures_total" not in metrics.render() or \
            b'twotower_model_load_failures_total{model="m"' not in metrics.render()
    finally:
        manager.stop(timeout=5)


@pytest.mark.parametrize("flags, message", [
    (["--model_base_path", "{base}", "--use_alts_credentials"], "--use_alts_credentials: Google ALTS is not available"),
    (["--model_base_path", "{base}", "--grpc_channel_arguments=grpc.max_connection_age_ms"],
     "--grpc_channel_arguments: 'grpc.max_connection_age_ms' is not key=value"),
    (["--model_base_path", "{base}", "--monitoring_config_file={bad}"],
     "Error parsing text-format tensorflow.serving.MonitoringConfig"),
    (["--model_base_path", "{base}", "--ssl_config_file={bad}"],
     "Error parsing text-format tensorflow.serving.SSLConfig"),
    (["--model_base_path", "{base}", "--enable_batching=maybe"], "expected true or false, got 'maybe'"),
    (["--model_base_path", "{base}", "--port=8500", "--rest_api_port=8500"],
     "--rest_api_port cannot be same as --port"),
])
def test_flag_errors_name_the_flag(testdata, capsys, flags, message):
    from serving.server import main

    filled = [f.format(base=testdata["half_plus_two"], bad=testdata["bad_config"]) for f in flags]
    with pytest.raises(SystemExit) if "maybe" in message else contextlib.nullcontext():   # argparse exits
        assert main(filled) == 2
    assert message in capsys.readouterr().err


def test_version_flag(capsys):
    from serving.server import main

    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("TensorFlow ModelServer: twotower") and "TensorFlow Library: 2." in out


def test_cors_preflight_and_header(servers):
    """--rest_api_enable_cors_support: OPTIONS answered, every answer allows any origin."""
    preflight = urllib.request.Request(rest_url(servers["main"], "/v1/models/default:predict"), method="OPTIONS")
    with urllib.request.urlopen(preflight, timeout=RPC_TIMEOUT) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Methods"] == "POST, GET"
        assert response.headers["Access-Control-Allow-Origin"] == "*"
    with urllib.request.urlopen(rest_url(servers["main"], "/v1/models/default"), timeout=RPC_TIMEOUT) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_ssl_config(tmp_path):
    """--ssl_config_file's SSLConfig: PEM text inline; client_verify needs custom_ca."""
    from serving.config_protos import SSLConfig
    from serving.security import SecurityError, TlsFiles

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_certificate(cert, key)
    config = SSLConfig(server_cert=cert.read_text(), server_key=key.read_text())
    assert TlsFiles.from_ssl_config(config).ca is None
    config.client_verify = True
    with pytest.raises(SecurityError, match="client_verify needs custom_ca"):
        TlsFiles.from_ssl_config(config)
    config.custom_ca = cert.read_text()
    assert TlsFiles.from_ssl_config(config).ssl_context().verify_mode.name == "CERT_REQUIRED"
    with pytest.raises(SecurityError, match="cannot use the TLS certificate and key"):
        TlsFiles.from_ssl_config(SSLConfig(server_cert="not a certificate", server_key=key.read_text()))


@pytest.mark.parametrize("path, body", [
    (":predict", b'{"instances": [1, [2]]}'), (":predict", b'{"instances": [{"x": 1}, {"y": 2}]}'),
    (":predict", b'{"inputs": {"x": [[1], 2]}}'), (":predict", b'{"instances": "x"}'),
    (":predict", b'{"instances": [true]}'), (":predict", b"\xff\xfe"), (":predict", b'{"instances": [1e999999]}'),
    (":classify", b'{"examples": [{"x": [1, "a"]}]}'), (":classify", b'{"examples": [{"x": null}]}'),
    (":classify", b'{"examples": [1]}'), (":regress", b'{"examples": [{"x": {"b64": "%%%"}}]}'),
    (":regress", b'{"examples": [{"x": []}]}'), (":regress", b'{"examples": [{"x": 2.0}], "context": [1]}'),
])
def test_malformed_bodies_are_400(servers, path, body):
    with pytest.raises(urllib.error.HTTPError) as caught:
        call_rest(rest_url(servers["main"], f"/v1/models/default{path}"), body)
    assert caught.value.code == 400
    assert "Traceback" not in json.loads(caught.value.read())["error"]


def test_failed_loads_are_retried_as_max_num_load_retries_says(tmp_path):
    """A load that fails in tf.saved_model.load is retried (--max_num_load_retries, --load_retry_interval_micros);
    one whose directory holds no SavedModel is not."""
    from serving.config import ModelConfig
    from serving.manager import ModelManager
    from serving.metrics import Metrics
    from serving.servable import LoadOptions, TransientLoadError

    attempts: list[int] = []

    def flaky(name, version, path):
        attempts.append(version)
        if version == 1 and attempts.count(1) < 3:   # fails twice, then loads
            raise TransientLoadError(f"{path}: tf.saved_model.load failed: truncated file")
        return FakeServable(name, version, path)   # "garbage" in saved_model.pb: LoadError, not a SavedModel

    for version, content in ((1, "ok"), (2, "garbage")):
        (tmp_path / str(version)).mkdir()
        (tmp_path / str(version) / "saved_model.pb").write_text(content)
    manager = ModelManager(Metrics(), poll_seconds=0, loader=flaky,
                           loading=LoadOptions(max_retries=5, retry_interval_seconds=0.0))
    manager.start([ModelConfig("m", str(tmp_path), version_policy="all")])
    try:
        states = {s.version: s.state for s in manager.status("m")}
        assert states == {1: "AVAILABLE", 2: "END"}
        assert attempts.count(1) == 3 and attempts.count(2) == 1
    finally:
        manager.stop(timeout=5)


def test_grpc_health_service_on_by_default_and_off_on_request(servers):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    on = health_pb2_grpc.HealthStub(grpc.insecure_channel(servers["main"].target))
    assert on.Check(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT).status == \
        health_pb2.HealthCheckResponse.SERVING
    off = health_pb2_grpc.HealthStub(grpc.insecure_channel(servers["polling"].target))
    with pytest.raises(grpc.RpcError) as caught:   # --enable_grpc_healthcheck_service=false
        off.Check(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
