"""The model server over gRPC, driven by TF Serving's official stubs against real server processes on loopback.

One brute-force export is made per module; further versions are copies of it. Three servers run side by side:
a plain one (labels, errors, hot swap, corrupt version), a TLS + token one, and a batching one. The first tests
check the parts (config, batching, manager, auth) in-process without TensorFlow models.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import EXPORT_K, PACE, FakeServable, serve_a_copy, until_version_serves, write_certificate
from serving_process import ServerProcess
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

pytestmark = pytest.mark.xdist_group("serving_grpc")   # the module's servers: one pytest-xdist worker

K = EXPORT_K  # the shared brute-force export's K
TOKEN = "s3cret-token"
MAX_BATCH = 16   # the batching server's max_batch_size; the concurrency test sends at most this many rows


# --------------------------------------------------------------------------------------------------------------
# In-process units: no model loaded
# --------------------------------------------------------------------------------------------------------------
def test_model_config_from_text_proto(tmp_path):
    from serving import config
    from serving.errors import ServingError

    text = """model_config_list {
      config { name: "shop" base_path: "models/shop" model_platform: "tensorflow"
               model_version_policy { specific { versions: 1 versions: 3 } }
               version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 3 } }
      config { name: "other" base_path: "/abs/other" model_version_policy { latest { num_versions: 2 } } }
      config { name: "every" base_path: "/abs/every" model_version_policy { all {} } }
    }"""
    (tmp_path / "models.config").write_text(text)
    shop, other, every = config.load_file(tmp_path / "models.config")
    assert shop.base_path == str((tmp_path / "models" / "shop").resolve())
    assert (shop.version_policy, shop.versions, shop.version_labels) == ("specific", (1, 3),
                                                                          {"stable": 1, "canary": 3})
    assert shop.wanted([1, 2, 3, 4]) == {1, 3}
    assert (other.version_policy, other.latest_versions) == ("latest", 2) and other.wanted([1, 5, 3]) == {3, 5}
    assert every.wanted([1, 2]) == {1, 2}
    assert config.from_flags("m", str(tmp_path)).wanted([4, 9, 2]) == {9}
    with pytest.raises(ServingError, match="not a ModelServerConfig"):
        config.parse_text("model_config_list { nonsense: 1 }")
    with pytest.raises(ServingError, match="appears twice"):
        config.parse_text('model_config_list { config { name: "a" base_path: "/x" } '
                          'config { name: "a" base_path: "/y" } }')


def test_batching_parameters_parse():
    from serving.batching import BatchingOptions
    from serving.errors import ServingError

    options = BatchingOptions.parse("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 500 } # comment\n"
                                    "num_batch_threads { value: 3 } max_enqueued_batches: 7\n"
                                    "pad_variable_length_inputs: true\n")
    assert options == BatchingOptions(32, 500, 3, 7)
    with pytest.raises(ServingError, match="unknown batching parameter 'max_batch'"):
        BatchingOptions.parse("max_batch { value: 3 }")
    with pytest.raises(ServingError, match="must be an integer"):
        BatchingOptions.parse("max_batch_size { value: many }")
    with pytest.raises(ServingError, match="max_batch_size must be >= 1"):
        BatchingOptions.parse("max_batch_size { value: 0 }")


def test_signature_fills_omitted_inputs_from_defaults_and_repeats_one_row():
    from tensorflow.core.protobuf import meta_graph_pb2

    from serving.errors import ServingError
    from serving.signature import Signature

    definition = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for name, dtype in (("user_id", tf.string), ("diversity", tf.float32)):
        info = definition.inputs[name]
        info.name, info.dtype = f"serving_default_{name}:0", dtype.as_datatype_enum
        info.tensor_shape.dim.add(size=-1)
    definition.outputs["scores"].CopyFrom(definition.inputs["diversity"])
    definition.defaults["diversity"].CopyFrom(tf.make_tensor_proto(np.array([0.0], np.float32)))
    signature = Signature("serving_default", definition, None)
    users = np.array([b"a", b"b", b"c"], dtype=object)
    filled = signature.validate({"user_id": users})
    assert filled["diversity"].tolist() == [0.0, 0.0, 0.0]          # the default, one row for every row
    assert signature.validate({"user_id": users, "diversity": np.array([0.5], np.float32)})["diversity"].tolist() \
        == [0.5, 0.5, 0.5]
    with pytest.raises(ServingError, match=r"user_id\(feed name: serving_default_user_id:0\) not found in request "
                                           r"and no default value provided"):
        signature.validate({"diversity": np.array([0.5], np.float32)})
    with pytest.raises(ServingError, match="equal 0th-dimension size"):
        signature.validate({"user_id": users, "diversity": np.array([0.5, 0.1], np.float32)})


class EchoSignature:
    """Stands in for a model signature: returns each row's last history item and the batch it ran in."""

    name = "serving_default"
    batch_major = True

    def __init__(self):
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def run(self, inputs):
        with self.lock:
            self.batches.append(len(inputs["user_id"]))
        time.sleep(0.01)
        return {"last": inputs["history"][:, -1].copy(), "user": inputs["user_id"].copy()}


def test_batcher_groups_pads_history_at_the_front_and_splits_back():
    from serving.batching import Batcher, BatchingOptions, concatenate
    from serving.errors import ServingError
    from serving.metrics import Metrics

    merged = concatenate([{"h": np.array([[b"a"]], dtype=object)}, {"h": np.array([[b"b", b"c"]], dtype=object)}])
    assert merged["h"].tolist() == [[b"", b"a"], [b"b", b"c"]]

    signature = EchoSignature()
    batcher = Batcher(BatchingOptions(max_batch_size=8, batch_timeout_micros=50_000, num_batch_threads=1),
                      Metrics())
    servable = type("S", (), {"model": "m"})()
    results: dict[int, dict] = {}

    def ask(i: int) -> None:
        history = np.array([[f"i{j}".encode() for j in range(i % 3 + 1)]], dtype=object)
        results[i] = batcher.run(servable, signature, {"user_id": np.array([f"u{i}".encode()], dtype=object),
                                                       "history": history}, time.monotonic() + 10)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(results) == list(range(12))
    for i, out in results.items():
        assert out["user"].tolist() == [f"u{i}".encode()] and out["last"].tolist() == [f"i{i % 3}".encode()]
    assert sum(signature.batches) == 12 and len(signature.batches) < 12 and max(signature.batches) <= 8
    # a request that does not fit is skipped, and the one behind it joins the batch (rows 5 + 2, then 5)
    signature.batches.clear()
    sizes = (5, 5, 2)
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(100 + n, batcher.run(
        servable, signature, {"user_id": np.full([n], b"u", dtype=object),
                              "history": np.full([n, 1], b"h", dtype=object)}, time.monotonic() + 10)))
        for n in sizes]
    for thread in threads:
        thread.start()
        time.sleep(0.005)
    for thread in threads:
        thread.join(10)
    assert sorted(signature.batches) == [5, 7] and all(len(results[100 + n]["user"]) == n for n in sizes)
    with pytest.raises(ServingError, match="larger than maximum batch size 8") as err:
        batcher.run(servable, signature, {"user_id": np.full([9], b"u", dtype=object),
                                          "history": np.full([9, 1], b"", dtype=object)}, None)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    batcher.stop()


def _version(base: Path, version: int, content: str = "ok") -> None:
    (base / str(version)).mkdir(parents=True)
    (base / str(version) / "saved_model.pb").write_text(content)


def test_manager_swaps_drains_reports_failures_and_waits_for_copies(tmp_path, monkeypatch):
    from serving import manager as manager_module
    from serving.config import ModelConfig
    from serving.errors import ServingError
    from serving.manager import ModelManager
    from serving.metrics import Metrics

    base = tmp_path / "shop"
    _version(base, 1)
    (base / ".tmp-2-abc").mkdir()
    metrics = Metrics()
    manager = ModelManager(metrics, poll_seconds=0, loader=FakeServable)
    manager.start([ModelConfig("shop", str(base), version_labels={"stable": 1})])
    held = manager.acquire("shop")
    assert held.version == 1 and manager.acquire("shop", label="stable").version == 1
    with pytest.raises(ServingError, match=r"Servable not found for request: Specific\(shop, 2\)"):
        manager.acquire("shop", 2)
    with pytest.raises(ServingError, match="Unrecognized servable version label: beta"):
        manager.acquire("shop", label="beta")
    # a directory still being written is not loaded until it is unchanged for one poll
    _version(base, 2)
    manager.poll()
    assert [(s.version, s.state) for s in manager.status("shop")] == [(2, "START"), (1, "AVAILABLE")]
    manager.poll()
    assert manager.acquire("shop").version == 2
    states = dict((s.version, s.state) for s in manager.status("shop"))
    assert states == {2: "AVAILABLE", 1: "UNLOADING"} and not held.closed   # version 1 still held by a request
    held.release()
    held.release()  # the label request above
    deadline = time.monotonic() + 5
    while manager.status("shop", 1)[0].state != "END" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert held.closed and manager.status("shop", 1)[0].state == "END"
    # a corrupt version: reported, counted, the serving version stays; retried only when its directory changes
    monkeypatch.setattr(manager_module, "SETTLE_SECONDS", 0.0)
    _version(base, 3, "garbage")
    manager.poll()
    failed = manager.status("shop", 3)[0]
    assert (failed.state, failed.error_code) == ("END", grpc.StatusCode.UNKNOWN)
    assert "not a SavedModel" in failed.error_message
    assert manager.acquire("shop").version == 2
    manager.poll()
    assert b'twotower_model_load_failures_total{model="shop",version="3"} 1.0' in metrics.render()
    (base / "3" / "saved_model.pb").write_text("ok")
    manager.poll()
    assert manager.acquire("shop").version == 3
    with pytest.raises(ServingError, match="Could not find any versions of model nope"):
        manager.status("nope")
    manager.stop(timeout=1)


def test_authenticator():
    from serving.security import Authenticator

    auth = Authenticator(TOKEN)
    assert auth.check(f"Bearer {TOKEN}") and auth.check(f"bearer  {TOKEN} ")
    assert not auth.check(None) and not auth.check("Bearer wrong") and not auth.check(TOKEN)
    assert Authenticator(None).check(None)


# --------------------------------------------------------------------------------------------------------------
# Real servers
# --------------------------------------------------------------------------------------------------------------
def metrics_text(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=10) as response:
        return response.read().decode()


@pytest.fixture(scope="module")
def export_base(brute_force_export):
    """The session's brute-force export (version 1); servers that add versions get copies."""
    return brute_force_export


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A self-signed certificate for localhost / 127.0.0.1 (the cryptography package, else the openssl CLI)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    write_certificate(cert, key)
    return cert, key


@pytest.fixture(scope="module")
def plain_base(export_base, tmp_path_factory):
    """The plain server's own base path (the hot-swap test adds versions to it) and its models.config."""
    folder = tmp_path_factory.mktemp("plain")
    base = serve_a_copy(export_base, folder / "shop")
    config = folder / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "shop" base_path: "{base}" '
                      'model_platform: "tensorflow" model_version_policy { latest { num_versions: 1 } } '
                      'version_labels { key: "stable" value: 1 } } }\n')
    return base, config


@pytest.fixture(scope="module")
def servers(export_base, plain_base, certificates, tmp_path_factory):
    """Starts the three servers at once (their model loads overlap), stops them (SIGTERM) at the end."""
    tmp = tmp_path_factory.mktemp("servers")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    batching = tmp / "batching.txt"
    batching.write_text(f"max_batch_size {{ value: {MAX_BATCH} }}\nbatch_timeout_micros {{ value: 20000 }}\n"
                        "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 10 }\n")
    cert, key = certificates
    started = {
        "plain": ServerProcess(tmp, "plain", "--model_config_file", str(plain_base[1]),
                               "--file_system_poll_wait_seconds", "0.5", "--max_request_bytes", "100000"),
        "secure": ServerProcess(tmp, "secure", "--model_name", "shop", "--model_base_path", str(export_base),
                                "--ssl_cert_file", str(cert), "--ssl_key_file", str(key), "--auth_token_file",
                                str(token_file), "--file_system_poll_wait_seconds", "0"),
        "batching": ServerProcess(tmp, "batching", "--model_name", "shop", "--model_base_path", str(export_base),
                                  "--enable_batching", "--batching_parameters_file", str(batching),
                                  "--file_system_poll_wait_seconds", "0"),
    }
    try:
        for server in started.values():
            server.wait()
        yield started
    finally:
        codes = {name: server.stop() for name, server in started.items()}
    assert codes == {"plain": 0, "secure": 0, "batching": 0}, codes
    assert '"event": "stopped"' in started["plain"].log.read_text()


def stubs(port: int, credentials: grpc.ChannelCredentials | None = None):
    target = f"127.0.0.1:{port}"
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    return (prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel), channel)


@pytest.fixture(scope="module")
def plain(servers, plain_base):
    """Stubs of the plain server, the server, and its base path."""
    prediction, models, channel = stubs(servers["plain"].port)
    yield prediction, models, servers["plain"], plain_base[0]
    channel.close()


@pytest.fixture(scope="module")
def items(export_base):
    return [line.split("\t")[0] for line in
             (export_base / "1" / "assets" / "items.tsv").read_text(encoding="utf-8").splitlines()[1:]]


def predict_request(user_ids, history, user_text=None, name="shop", version=None, label=None, signature=None,
                    **extra) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    if signature is not None:
        request.model_spec.signature_name = signature
    tensors = {"user_id": user_ids, "history": history,
               "user_text": user_text if user_text is not None else [""] * len(user_ids), **extra}
    for key, value in tensors.items():
        if value is not None:
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def rows(response) -> tuple[list, np.ndarray]:
    ids = [[i.decode() for i in row] for row in tf.make_ndarray(response.outputs["item_ids"])]
    return ids, tf.make_ndarray(response.outputs["scores"])


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_predict_metadata_status_and_health(plain, items):
    prediction, models, _, _ = plain
    request = predict_request(["U00001", "nobody"], [[items[3], items[4]], ["", ""]], ["", "camping tent"])
    response = prediction.Predict(request, timeout=30)
    assert (response.model_spec.name, response.model_spec.version.value,
            response.model_spec.signature_name) == ("shop", 1, "serving_default")
    ids, scores = rows(response)
    assert len(ids) == 2 and all(len(r) == K for r in ids) and scores.shape == (2, K)
    assert items[3] not in ids[0] and items[4] not in ids[0]          # history excluded
    assert np.all(np.diff(scores, axis=1) <= 1e-6)                     # best first
    # the optional inputs, given for one row of two (it stands for both): excluded items never come back
    extra = predict_request(["U00001", "nobody"], [[items[3], items[4]], ["", ""]], ["", "camping tent"],
                            exclude=[[ids[0][0], ids[1][0]]], diversity=np.array([0.3], np.float32))
    filtered, _ = rows(prediction.Predict(extra, timeout=30))
    assert not {ids[0][0], ids[1][0]} & (set(filtered[0]) | set(filtered[1]))
    by_label = prediction.Predict(predict_request(["U00001"], [[items[3]]], label="stable"), timeout=30)
    assert by_label.model_spec.version.value == 1
    only = predict_request(["U00001"], [[""]], signature="embed_query")
    only.output_filter.append("embedding")
    assert tf.make_ndarray(prediction.Predict(only, timeout=30).outputs["embedding"]).shape[0] == 1

    metadata = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata.model_spec.name = "shop"
    metadata.metadata_field.append("signature_def")
    answer = prediction.GetModelMetadata(metadata, timeout=30)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(signature_map) and answer.model_spec.version.value == 1
    default = signature_map.signature_def["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    assert sorted(default.inputs) == ["diversity", "exclude", "history", "max_per_category", "search_query",
                                      "user_id", "user_text"]
    assert sorted(default.defaults) == ["diversity", "exclude", "max_per_category", "search_query"]   # optional
    assert sorted(default.outputs) == ["because", "because_score", "because_words", "item_ids", "scores"]
    assert [d.size for d in default.outputs["item_ids"].tensor_shape.dim] == [-1, K]
    assert {"embed_items", "embed_query", "score", "recommend_including_history"} <= set(signature_map.signature_def)

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "shop"
    versions = models.GetModelStatus(status, timeout=30).model_version_status
    assert [(v.version, v.state, v.status.error_code) for v in versions] == \
        [(1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)]

    # the export's assets.extra/tf_serving_warmup_requests (one Predict per signature) was replayed at load
    assert "warm-up of shop version 1: 5 requests x 1" in plain[2].log.read_text()

    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{plain[2].port}"))
    assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status == \
        health_pb2.HealthCheckResponse.SERVING


def test_concurrent_multi_row_requests_keep_the_servers_alive(servers, items):
    """With oneDNN's kernels this load killed the process (heap corruption); the server runs on Eigen's."""
    errors: list[str] = []

    def work(port: int, seed: int) -> None:
        prediction, _, channel = stubs(port)
        rng = np.random.default_rng(seed)
        for i in range(15):
            b = int(rng.integers(2, MAX_BATCH + 1))   # larger requests are refused by design (RESOURCE_EXHAUSTED)
            request = predict_request([f"U{j:05d}" for j in range(b)],
                                      [[items[(i + j) % len(items)]] * 5 for j in range(b)],
                                      ["camping tent" if j % 3 == 0 else "" for j in range(b)])
            try:
                assert len(rows(prediction.Predict(request, timeout=60))[0]) == b
            except grpc.RpcError as err:
                errors.append(f"{port}: {err.code()}: {err.details()}")
                break
        channel.close()

    threads = [threading.Thread(target=work, args=(servers[name].port, seed))
               for name in ("plain", "batching") for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[:4]


@pytest.mark.parametrize("case, code, pattern", [
    ("missing", "INVALID_ARGUMENT", r"Signature input alias: user_text\(feed name: .*\) not found in request and "
                                    r"no default value provided"),
    ("extra", "INVALID_ARGUMENT", r"Sent extra: \{colour\}"),
    ("dtype", "INVALID_ARGUMENT", r"input tensor 'user_id'.*expects dtype string but float32 is provided"),
    # said once, in the input's own name (not again in TensorFlow's placeholder words)
    ("rank", "INVALID_ARGUMENT", r"^input tensor 'history'[^:]*: expects rank 2 \(shape \[-1, -1\]\) but got rank 1 "
                                 r"\(shape \[1\]\)$"),
    ("batch", "INVALID_ARGUMENT", r"equal 0th-dimension size"),
    ("model", "NOT_FOUND", r"Servable not found for request: Latest\(nope\)"),
    ("version", "NOT_FOUND", r"Servable not found for request: Specific\(shop, 7\)"),
    ("label", "NOT_FOUND", r"Unrecognized servable version label: nope"),
    ("signature", "NOT_FOUND", r'Serving signature key "nope" not found'),
    ("filter", "INVALID_ARGUMENT", r"output tensor alias not found in signature: nope"),
    ("oversized", "RESOURCE_EXHAUSTED", r""),
    ("rows", "RESOURCE_EXHAUSTED", r"request has 1025 rows, over the server's limit of 1024 rows per request"),
    ("diversity", "INVALID_ARGUMENT", r"input tensor 'diversity' must be in \[0, 1\]"),
    ("max_per_category", "INVALID_ARGUMENT", r"input tensor 'max_per_category' must be >= 0"),
    ("empty", "INVALID_ARGUMENT", r"input tensor 'history' of signature 'serving_default' has an empty batch"),
    ("width", "INVALID_ARGUMENT", r"input tensor 'history' of signature 'serving_default' has an empty dimension 1"),
])
def test_errors_are_tf_serving_statuses(plain, case, code, pattern):
    prediction = plain[0]
    args = {"user_ids": ["U00001"], "history": [[""]]}
    request = {
        "missing": lambda: _without(predict_request(**args), "user_text"),
        "extra": lambda: predict_request(**args, colour=["red"]),
        "dtype": lambda: predict_request(user_ids=np.array([1.0], np.float32), history=[[""]]),
        "rank": lambda: predict_request(user_ids=["U00001"], history=["a"]),
        "batch": lambda: predict_request(user_ids=["U00001", "U00002"], history=[[""]], user_text=[""]),
        "model": lambda: predict_request(**args, name="nope"),
        "version": lambda: predict_request(**args, version=7),
        "label": lambda: predict_request(**args, label="nope"),
        "signature": lambda: predict_request(**args, signature="nope"),
        "filter": lambda: _filtered(predict_request(**args), "nope"),
        "oversized": lambda: predict_request(**args, user_text=["x" * 150_000]),
        "rows": lambda: predict_request(user_ids=["U1"] * 1025, history=[[""]] * 1025),
        "diversity": lambda: predict_request(**args, diversity=np.array([np.nan], np.float32)),
        "max_per_category": lambda: predict_request(**args, max_per_category=np.array([-1], np.int32)),
        "empty": lambda: predict_request(user_ids=np.array([], object), history=np.empty((0, 0), object),
                                         user_text=np.array([], object)),
        "width": lambda: predict_request(user_ids=["U00001"], history=np.empty((1, 0), object)),
    }[case]()
    error = rpc_error(prediction.Predict, request, timeout=30)
    assert error.code().name == code, error.details()
    assert re.search(pattern, error.details()), error.details()
    assert "Traceback" not in (error.details() or "")


def _without(request, key):
    del request.inputs[key]
    return request


def _filtered(request, alias):
    request.output_filter.append(alias)
    return request


def test_deadline_classify_regress_multi_inference_and_model_status_errors(plain):
    prediction, models, _, _ = plain
    many = predict_request([f"U{i:05d}" for i in range(64)], [[""]] * 64,
                           [f"a long profile text about hiking boots and tents {i}" for i in range(64)])
    error = rpc_error(prediction.Predict, many, timeout=0.005)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "shop"
    error = rpc_error(prediction.Classify, classify, timeout=30)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == ("Expected classification signature method_name to be tensorflow/serving/classify. "
                               "Was: tensorflow/serving/predict")
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "shop"
    regress.model_spec.signature_name = "score"
    error = rpc_error(prediction.Regress, regress, timeout=30)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "regression signature" in error.details()
    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add()
    task.model_spec.name = "shop"
    task.method_name = "tensorflow/serving/classify"
    assert rpc_error(prediction.MultiInference, multi, timeout=30).code() == grpc.StatusCode.INVALID_ARGUMENT

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "nope"
    error = rpc_error(models.GetModelStatus, status, timeout=30)
    assert error.code() == grpc.StatusCode.NOT_FOUND and "Could not find any versions of model nope" in error.details()
    metadata = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata.model_spec.name = "shop"
    assert rpc_error(prediction.GetModelMetadata, metadata).code() == grpc.StatusCode.INVALID_ARGUMENT
    # the server is still fine after all of the above
    assert prediction.Predict(predict_request(["U00001"], [[""]]), timeout=30).model_spec.version.value == 1


def test_new_version_hot_swap_with_zero_failed_requests_then_corrupt_version(plain, items):
    prediction, models, server, base = plain
    stop = threading.Event()
    served: list[int] = []
    by_worker: dict[int, list[int]] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def traffic(worker: int) -> None:
        i = 0
        while not stop.is_set():   # until the swap was seen (a request count would run out on a fast server)
            i += 1
            request = predict_request([f"U{(worker * 31 + i) % 700:05d}"], [[items[i % len(items)], ""]])
            try:
                version = prediction.Predict(request, timeout=60).model_spec.version.value
                with lock:
                    served.append(version)
                    by_worker.setdefault(worker, []).append(version)
            except grpc.RpcError as err:
                with lock:
                    failures.append(f"{err.code()}: {err.details()}")
            stop.wait(PACE)

    threads = [threading.Thread(target=traffic, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        shutil.copytree(base / "1", base / "2")   # not atomic on purpose: the server must wait for the copy
        until_version_serves(served, 2, settle=1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(90)
    assert not failures, failures[:5]
    assert 1 in served and 2 in served and served[-1] == 2
    # Once a client got an answer from version 2, every later request of that client (sent after that answer) is
    # routed to version 2. Across clients, completion order proves nothing: a request that took version 1 just
    # before the swap may finish after several version-2 answers to the other clients.
    assert sorted(by_worker) == [0, 1, 2]
    for worker, versions in by_worker.items():
        assert versions == sorted(versions), (worker, versions[:3], len(versions))

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "shop"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = {v.version: v.state for v in models.GetModelStatus(status, timeout=30).model_version_status}
        if states.get(1) == get_model_status_pb2.ModelVersionStatus.END:
            break
        time.sleep(0.2)
    assert states == {2: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
                      1: get_model_status_pb2.ModelVersionStatus.END}
    assert '"event": "version_unloaded", "model": "shop", "version": 1' in server.log.read_text()

    # a corrupt version: reported in status, counted, and version 2 keeps serving
    (base / "3").mkdir()
    (base / "3" / "saved_model.pb").write_bytes(b"\x00garbage\xff" * 100)
    status.model_spec.version.value = 3
    deadline = time.monotonic() + 30
    failed = None
    while time.monotonic() < deadline:
        try:
            failed = models.GetModelStatus(status, timeout=30).model_version_status[0]
            if failed.state == get_model_status_pb2.ModelVersionStatus.END:
                break
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND
        time.sleep(0.2)
    assert failed is not None and failed.state == get_model_status_pb2.ModelVersionStatus.END
    assert failed.status.error_code != 0 and "saved_model.pb" in failed.status.error_message
    assert prediction.Predict(predict_request(["U00001"], [[""]]), timeout=30).model_spec.version.value == 2
    if "REST on off" not in server.out.read_text():
        assert 'twotower_model_load_failures_total{model="shop",version="3"} 1.0' in metrics_text(server)


def test_reload_config_moves_a_label_and_refuses_an_unavailable_one(plain):
    from google.protobuf import text_format
    from tensorflow_serving.apis import model_management_pb2

    prediction, models, _, base = plain

    def reload(label_version: int) -> None:
        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(f'model_config_list {{ config {{ name: "shop" base_path: "{base}" '
                          f'version_labels {{ key: "stable" value: {label_version} }} }} }}',
                          request.config)
        models.HandleReloadConfigRequest(request, timeout=120)

    reload(2)
    request = predict_request(["U00001"], [[""]], label="stable")
    assert prediction.Predict(request, timeout=30).model_spec.version.value == 2
    error = rpc_error(reload, 9)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "version 9 of model shop" in error.details()
    assert prediction.Predict(request, timeout=30).model_spec.version.value == 2   # the label kept its version


def test_tls_and_bearer_token(servers, certificates):
    server = servers["secure"]
    cert, _ = certificates
    tls = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    request = predict_request(["U00001"], [[""]])
    good = grpc.composite_channel_credentials(tls, grpc.access_token_call_credentials(TOKEN))
    prediction, _, channel = stubs(server.port, good)
    assert prediction.Predict(request, timeout=30).model_spec.version.value == 1
    channel.close()
    prediction, models, channel = stubs(server.port, tls)
    error = rpc_error(prediction.Predict, request, timeout=30)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "bearer token" in error.details()
    error = rpc_error(prediction.Predict, request, timeout=30, metadata=[("authorization", "Bearer wrong")])
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "shop"
    assert rpc_error(models.GetModelStatus, status, timeout=30).code() == grpc.StatusCode.UNAUTHENTICATED
    health = health_pb2_grpc.HealthStub(channel)   # health checks need no token
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    channel.close()
    plaintext, _, channel = stubs(server.port)     # a plaintext client cannot talk to a TLS server
    assert rpc_error(plaintext.Predict, request, timeout=10).code() == grpc.StatusCode.UNAVAILABLE
    channel.close()


def test_batching_gives_the_unbatched_answers(servers, plain, items):
    batched, _, channel = stubs(servers["batching"].port)
    requests = [predict_request([f"U{i * 7:05d}"], [[items[(i * 13 + j) % len(items)] for j in range(i % 4 + 1)]],
                                ["trail running shoes" if i % 5 == 0 else ""]) for i in range(24)]
    expected = [rows(plain[0].Predict(r, timeout=60)) for r in requests]
    answers: dict[int, tuple] = {}
    errors: list[str] = []

    def ask(i: int) -> None:
        try:
            answers[i] = rows(batched.Predict(requests[i], timeout=60))
        except grpc.RpcError as err:
            errors.append(f"{err.code()}: {err.details()}")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not errors, errors
    for i, (ids, scores) in enumerate(expected):
        got_ids, got_scores = answers[i]
        np.testing.assert_allclose(got_scores, scores, atol=1e-5)
        ties = np.abs(np.diff(scores[0])) < 1e-5      # near-equal neighbours may swap places
        for position, (a, b) in enumerate(zip(got_ids[0], ids[0])):
            assert a == b or ties[max(0, position - 1):position + 1].any(), (i, got_ids, ids)
    if "REST on off" not in servers["batching"].out.read_text():
        text = metrics_text(servers["batching"])
        count = float(re.search(r'twotower_batch_size_count\{model="shop"\} (\S+)', text).group(1))
        total = float(re.search(r'twotower_batch_size_sum\{model="shop"\} (\S+)', text).group(1))
        assert total >= len(requests) and count < total   # some requests shared a graph run
    too_many = predict_request([f"U{i:05d}" for i in range(17)], [[""]] * 17)
    error = rpc_error(batched.Predict, too_many, timeout=30)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "maximum batch size 16" in error.details()
    channel.close()
