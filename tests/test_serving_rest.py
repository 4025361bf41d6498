"""The REST API (TF Serving's /v1/models paths and JSON formats) against a real ``twotower serve`` on loopback.

The session's token server (tests/conftest.py): the session's brute-force export served as versions 1 and 2 (a
copy) of model "shop" with labels stable=1 and canary=2, behind a bearer token. The first tests check the
JSON ↔ tensor codec, and HTTPS, in-process.
"""

from __future__ import annotations

import base64
import http.client
import json
import re

import numpy as np
import pytest
from helpers import EXPORT_K, SERVER_TOKEN, write_certificate

from serving import json_tensor
from serving.errors import ServingError

pytestmark = pytest.mark.xdist_group("token_server")   # the session's token server: one pytest-xdist worker

K = EXPORT_K  # the shared brute-force export's K
TOKEN = SERVER_TOKEN
STRING, FLOAT = 7, 1
QUERY = {"user_id": STRING, "history": STRING, "user_text": STRING}


# --------------------------------------------------------------------------------------------------------------
# The codec, in-process
# --------------------------------------------------------------------------------------------------------------
def _fails(doc: dict, dtypes: dict, message: str) -> None:
    with pytest.raises(ServingError) as caught:
        json_tensor.predict_inputs(doc, dtypes)
    assert message in caught.value.message, caught.value.message
    assert caught.value.http_status == 400


def test_row_and_columnar_parse_to_the_same_tensors():
    rows = {"instances": [{"user_id": "U1", "history": ["a", "b"], "user_text": ""},
                          {"user_id": {"b64": base64.b64encode("ü2".encode()).decode()}, "history": ["c", ""],
                           "user_text": "tent"}]}
    columns = {"inputs": {"user_id": ["U1", "ü2"], "history": [["a", "b"], ["c", ""]], "user_text": ["", "tent"]}}
    (by_row, row_format), (by_column, column_format) = (json_tensor.predict_inputs(rows, QUERY),
                                                        json_tensor.predict_inputs(columns, QUERY))
    assert (row_format, column_format) == (json_tensor.Format.ROW, json_tensor.Format.COLUMNAR)
    for name in QUERY:
        assert by_row[name].dtype == object and by_row[name].tolist() == by_column[name].tolist()
    assert by_row["user_id"].tolist() == [b"U1", "ü2".encode()]
    assert by_row["history"].shape == (2, 2)
    single, _ = json_tensor.predict_inputs({"instances": [1.5, 2]}, {"price": FLOAT})   # bare values, one input
    assert single["price"].dtype == np.float32 and single["price"].tolist() == [1.5, 2.0]


def test_codec_rejects_what_tf_serving_rejects():
    _fails({"instances": [{"user_id": "a", "history": ["x", "y"], "user_text": ""},
                          {"user_id": "b", "history": ["x"], "user_text": ""}]}, QUERY,
           "Failed to process element: 1 key: history of 'instances' list. Error: INVALID_ARGUMENT: Expecting "
           "tensor size: 2 but got: 1")
    _fails({"inputs": {"user_id": ["a", "b"], "history": [["x", "y"], ["x"]], "user_text": ["", ""]}}, QUERY,
           "Encountered list at unexpected size: 1 at level: 1 expected size: 2")
    _fails({"inputs": {"user_id": ["a", ["b"]], "history": [[""]], "user_text": [""]}}, QUERY,
           "Encountered list at unexpected level: 1 expected < 1")
    _fails({"instances": [{"user_id": 7, "history": [""], "user_text": ""}]}, QUERY,
           "JSON Value: 7 Type: Number is not of expected type: string")
    _fails({"instances": [{"user_id": {"b64": "%%%"}, "history": [""], "user_text": ""}]}, QUERY,
           "Unable to base64 decode")
    _fails({"instances": ["a", "b"]}, QUERY, "instances is a plain list, but expecting list of objects")
    _fails({"instances": [{"user_id": "a", "history": [""]}]}, QUERY,
           "must only have keys: history,user_id,user_text")
    _fails({"instances": [{"user_id": "a", "history": [""], "user_text": "", "extra": 1}]}, QUERY,
           "does not have named input: extra")
    _fails({"instances": []}, QUERY, "No values in 'instances' array")
    _fails({"instances": {}}, QUERY, "Excepting 'instances' to be an list/array")
    _fails({"instances": [], "inputs": {}}, QUERY, "expecting only one of 'inputs' or 'instances' keys to exist")
    _fails({"inputs": {"user_id": ["a"], "user_text": [""]}}, QUERY, "Missing named input: history in 'inputs'")
    _fails({}, QUERY, "Missing 'inputs' or 'instances' key")
    _fails({"instances": [1e39]}, {"price": FLOAT}, "to float without loss of precision")
    _fails({"instances": [True]}, {"price": FLOAT}, "Type: True is not of expected type: float")
    for body, message in ((b"", "The document is empty"), (b"{oops", "JSON Parse error"),
                          (b"[1]", "Is not object"), (b"\xff", "JSON Parse error")):
        with pytest.raises(ServingError, match=re.escape(message)):
            json_tensor.parse_document(body)
    with pytest.raises(ServingError, match="'signature_name' key must be a string"):
        json_tensor.signature_name({"signature_name": 3})


def test_codec_lets_inputs_with_defaults_out():
    optional = frozenset({"diversity"})
    dtypes = {**QUERY, "diversity": FLOAT}
    rows, _ = json_tensor.predict_inputs({"instances": [{"user_id": "a", "history": [""], "user_text": ""}]},
                                         dtypes, optional)
    assert sorted(rows) == ["history", "user_id", "user_text"]
    given, _ = json_tensor.predict_inputs({"inputs": {"user_id": ["a"], "history": [[""]], "user_text": [""],
                                                      "diversity": [0.5]}}, dtypes, optional)
    assert given["diversity"].tolist() == [0.5]
    columns, _ = json_tensor.predict_inputs({"inputs": {"user_id": ["a"], "history": [[""]], "user_text": [""]}},
                                            dtypes, optional)
    assert "diversity" not in columns
    with pytest.raises(ServingError, match="in every row alike"):
        json_tensor.predict_inputs({"instances": [{"user_id": "a", "history": [""], "user_text": ""},
                                                  {"user_id": "b", "history": [""], "user_text": "",
                                                   "diversity": 0.2}]}, dtypes, optional)


def test_outputs_are_written_like_tf_serving():
    outputs = {"scores": np.array([[0.2, -1.5]], np.float32), "ids": np.array([[b"a", b"b"]], dtype=object),
               "raw_bytes": np.array([b"\x00\xff"], dtype=object)}
    rows = json_tensor.predict_response(outputs, json_tensor.Format.ROW)
    assert rows == {"predictions": [{"scores": [0.2, -1.5], "ids": ["a", "b"], "raw_bytes": {"b64": "AP8="}}]}
    assert b"0.2," in json_tensor.dumps(rows)          # float32 at its shortest, not 0.20000000298...
    columns = json_tensor.predict_response({"scores": outputs["scores"]}, json_tensor.Format.COLUMNAR)
    assert columns == {"outputs": [[0.2, -1.5]]}         # one output: the bare value
    single = json_tensor.predict_response({"scores": outputs["scores"]}, json_tensor.Format.ROW)
    assert single == {"predictions": [[0.2, -1.5]]}
    assert json_tensor.dumps({"x": float("nan")}) == b'{"x":NaN}'


class StatusOnlyCore:
    """Enough of ModelServer for the transport tests: one model with one AVAILABLE version."""

    def model_names(self):
        return ["m"]

    def status(self, model, version, label):
        from serving.manager import VersionStatus

        return [VersionStatus(3, "AVAILABLE")]


def test_https_when_given_an_ssl_context(tmp_path):
    import ssl

    from serving.metrics import Metrics
    from serving.rest import RestServer

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_certificate(cert, key)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    rest = RestServer(StatusOnlyCore(), Metrics(), None, "127.0.0.1", 0, server_context).start()
    try:
        plain = http.client.HTTPConnection("127.0.0.1", rest.port, timeout=10)
        with pytest.raises((http.client.HTTPException, OSError)):   # no TLS: the handshake fails, nothing hangs
            plain.request("GET", "/v1/models/m")
            plain.getresponse().read()
        plain.close()
        secure = http.client.HTTPSConnection("127.0.0.1", rest.port, timeout=10,
                                             context=ssl.create_default_context(cafile=str(cert)))
        secure.request("GET", "/v1/models/m")
        answer = secure.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["model_version_status"][0]["version"] == "3"
        secure.close()
    finally:
        rest.stop()


def test_a_client_that_resets_its_connection_leaves_no_traceback(capsys, caplog):
    """Load generators (wrk) reset their keep-alive connections when they stop: one debug line, no stderr traceback."""
    import socket
    import struct
    import time

    from serving.metrics import Metrics
    from serving.rest import RestServer

    rest = RestServer(StatusOnlyCore(), Metrics(), None, "127.0.0.1", 0, None).start()
    try:
        with caplog.at_level("DEBUG", logger="twotower.serving.rest"):
            client = socket.create_connection(("127.0.0.1", rest.port), timeout=10)
            client.sendall(b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(65536).startswith(b"HTTP/1.1 200")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()   # an RST while the server waits for the next request on this connection
            deadline = time.monotonic() + 10
            while "closed by the client" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
        assert "closed by the client mid-request" in caplog.text
        assert "Traceback" not in capsys.readouterr().err
        answer = http.client.HTTPConnection("127.0.0.1", rest.port, timeout=10)   # and the server still answers
        answer.request("GET", "/v1/models/m")
        assert answer.getresponse().status == 200
        answer.close()
    finally:
        rest.stop()


# --------------------------------------------------------------------------------------------------------------
# A real server
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(token_server, brute_force_export):
    """The token server, with ``items``: the export's item ids."""
    lines = (brute_force_export / "1" / "assets" / "items.tsv").read_text(encoding="utf-8").splitlines()
    token_server.items = [line.split("\t")[0] for line in lines[1:]]
    return token_server


class Answer:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self):
        return json.loads(self.body)


def request(server, method: str, path: str, body=None, token: str | None = TOKEN, headers: dict | None = None,
            connection: http.client.HTTPConnection | None = None) -> Answer:
    own = connection is None
    connection = connection or http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        return Answer(response.status, dict(response.getheaders()), response.read())
    finally:
        if own:
            connection.close()


def error_of(answer: Answer, status: int) -> str:
    """The message of a ``{"error": ...}`` answer, after checking its status and shape."""
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers["Content-Type"] == "application/json"
    document = answer.json
    assert list(document) == ["error"] and isinstance(document["error"], str)
    assert "Traceback" not in document["error"]
    return document["error"]


def query(user_id="U00001", history=("",), text=""):
    return {"user_id": user_id, "history": list(history), "user_text": text}


def test_status_of_model_version_and_label(server):
    answer = request(server, "GET", "/v1/models/shop")
    assert answer.status == 200 and answer.headers["Content-Type"] == "application/json"
    statuses = answer.json["model_version_status"]
    assert sorted(s["version"] for s in statuses) == ["1", "2"]
    for status in statuses:
        assert status["state"] == "AVAILABLE" and status["status"] == {"error_code": "OK", "error_message": ""}
    assert [s["version"] for s in request(server, "GET", "/v1/models/shop/versions/1").json[
        "model_version_status"]] == ["1"]
    assert [s["version"] for s in request(server, "GET", "/v1/models/shop/labels/canary").json[
        "model_version_status"]] == ["2"]
    assert "nope" in error_of(request(server, "GET", "/v1/models/nope"), 404)
    assert "version 9" in error_of(request(server, "GET", "/v1/models/shop/versions/9"), 404)
    assert "label: beta" in error_of(request(server, "GET", "/v1/models/shop/labels/beta"), 404)
    assert error_of(request(server, "GET", "/v1/models"), 400) == "Missing model name in request."


def test_metadata_as_tf_serving_writes_it(server):
    document = request(server, "GET", "/v1/models/shop/metadata").json
    assert document["model_spec"] == {"name": "shop", "signature_name": "", "version": "2"}
    signatures = document["metadata"]["signature_def"]["signature_def"]
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["history"]["dtype"] == "DT_STRING"
    assert [d["size"] for d in default["inputs"]["history"]["tensor_shape"]["dim"]] == ["-1", "-1"]
    assert default["outputs"]["scores"]["dtype"] == "DT_FLOAT"
    assert {"embed_query", "embed_items", "score", "recommend_including_history"} <= set(signatures)
    assert request(server, "GET", "/v1/models/shop/versions/1/metadata").json["model_spec"]["version"] == "1"
    assert request(server, "GET", "/v1/models/shop/labels/stable/metadata").json["model_spec"]["version"] == "1"


def test_predict_row_and_columnar_formats_agree(server):
    history = server.items[3:5]
    rows = request(server, "POST", "/v1/models/shop:predict",
                   {"instances": [query(history=history), query("nobody", ["", ""], "camping tent")]})
    assert rows.status == 200, rows.body
    predictions = rows.json["predictions"]
    assert len(predictions) == 2 and set(predictions[0]) == {"item_ids", "scores", "because", "because_score",
                                                             "because_words"}
    assert all(len(p["item_ids"]) == K and len(p["scores"]) == K for p in predictions)
    assert not set(history) & set(predictions[0]["item_ids"])                      # history excluded
    assert predictions[0]["scores"] == sorted(predictions[0]["scores"], reverse=True)
    columns = request(server, "POST", "/v1/models/shop/versions/1:predict",
                      {"signature_name": "serving_default",
                       "inputs": {"user_id": ["U00001", "nobody"], "history": [history, ["", ""]],
                                  "user_text": ["", "camping tent"]}})
    outputs = columns.json["outputs"]
    assert outputs["item_ids"] == [p["item_ids"] for p in predictions]
    # the words as a search box's query: this model has no semantic channel, so it reads them as request text
    searched = request(server, "POST", "/v1/models/shop/versions/1:predict",
                       {"inputs": {"user_id": ["U00001", "nobody"], "history": [history, ["", ""]],
                                   "user_text": ["", ""], "search_query": ["", "camping tent"]}})
    assert searched.status == 200, searched.body
    assert searched.json["outputs"]["item_ids"] == outputs["item_ids"]
    np.testing.assert_allclose(outputs["scores"], [p["scores"] for p in predictions], rtol=1e-5)
    by_label = request(server, "POST", "/v1/models/shop/labels/stable:predict", {"instances": [query()]})
    assert by_label.status == 200 and len(by_label.json["predictions"][0]["item_ids"]) == K
    # optional inputs: given in every row alike, or left out (the SignatureDef's defaults)
    top = predictions[0]["item_ids"][0]
    excluded = request(server, "POST", "/v1/models/shop:predict", {"instances": [
        {**query(history=history), "exclude": [top], "diversity": 0.5, "max_per_category": 3}]})
    assert excluded.status == 200, excluded.body
    assert top not in excluded.json["predictions"][0]["item_ids"]


def test_b64_strings_and_single_output_signatures(server):
    plain = request(server, "POST", "/v1/models/shop:predict",
                    {"signature_name": "embed_query", "instances": [query(text="tent")]}).json["predictions"]
    encoded = request(server, "POST", "/v1/models/shop:predict", {"signature_name": "embed_query", "instances": [
        {"user_id": {"b64": base64.b64encode(b"U00001").decode()}, "history": [{"b64": ""}],
         "user_text": {"b64": base64.b64encode(b"tent").decode()}}]}).json["predictions"]
    assert len(plain) == 1 and isinstance(plain[0], list) and len(plain[0]) > 1    # one output: bare rows
    np.testing.assert_allclose(encoded, plain, rtol=1e-5)
    items = request(server, "POST", "/v1/models/shop:predict", {"signature_name": "embed_items", "inputs": {
        "item_id": ["NEW-1"], "title": [{"b64": base64.b64encode("Zelt für zwei".encode()).decode()}],
        "description": [""], "category": [""], "brand": [""], "price": [19]}})
    assert items.status == 200 and len(items.json["outputs"][0]) == len(plain[0])


@pytest.mark.parametrize("path, body, status, message", [
    ("/v1/models/shop:predict", b"{not json", 400, "JSON Parse error"),
    ("/v1/models/shop:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("/v1/models/shop:predict", [1, 2], 400, "Is not object"),
    ("/v1/models/shop:predict", {"instances": [query()], "inputs": {}}, 400, "only one of 'inputs' or 'instances'"),
    ("/v1/models/shop:predict", {"instances": [query(history=["a", "b"]), query(history=["a"])]}, 400,
     "Expecting tensor size: 2 but got: 1"),
    ("/v1/models/shop:predict", {"inputs": {"user_id": ["a", "b"], "history": [["a", "b"], ["a"]],
                                            "user_text": ["", ""]}}, 400, "Encountered list at unexpected size"),
    ("/v1/models/shop:predict", {"instances": [{**query(), "user_id": 1}]}, 400, "is not of expected type: string"),
    ("/v1/models/shop:predict", {"inputs": {"user_id": ["a"], "history": ["a"], "user_text": [""]}}, 400,
     "expects rank 2"),
    ("/v1/models/shop:predict", {"signature_name": "nope", "instances": [query()]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("/v1/models/nope:predict", {"instances": [query()]}, 404, "nope"),
    ("/v1/models/shop/versions/9:predict", {"instances": [query()]}, 404, "Servable not found for request"),
    ("/v1/models/shop/labels/beta:predict", {"instances": [query()]}, 404, "label: beta"),
    ("/v1/models/shop:classify", {"examples": [{"user_id": "U1"}]}, 400,
     "Expected classification signature method_name to be tensorflow/serving/classify. Was: "
     "tensorflow/serving/predict"),
    ("/v1/models/shop:regress", {"examples": [{}]}, 400, "Expected regression signature method_name"),
    ("/v1/models/shop:classify", {}, 400, "key 'examples' is expected and was not found"),
    ("/v1/models/shop:predict", {"instances": [query(text="x" * 300_000)]}, 429, "over the limit of 200000 bytes"),
])
def test_errors_have_tf_serving_status_and_message(server, path, body, status, message):
    assert message in error_of(request(server, "POST", path, body), status)


def test_unknown_paths_and_methods(server):
    assert error_of(request(server, "GET", "/v2/whatever"), 404) == "Malformed request: GET /v2/whatever"
    wrong = request(server, "GET", "/v1/models/shop:predict")
    assert "Malformed request: GET" in error_of(wrong, 405) and wrong.headers["Allow"] == "POST"
    assert request(server, "DELETE", "/v1/models/shop").headers["Allow"] == "GET"
    assert "version" in error_of(request(server, "GET", "/v1/models/shop/versions/99999999999999999999"), 400)


def test_connection_is_reused_and_closed_after_a_refused_body(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    try:
        for _ in range(3):
            assert request(server, "GET", "/v1/models/shop", connection=connection).status == 200
        refused = request(server, "POST", "/v1/models/shop:predict", b"x" * 300_000, connection=connection)
        assert refused.status == 429 and refused.headers.get("Connection") == "close"
    finally:
        connection.close()


def test_bearer_token_is_required_on_every_path(server):
    for method, path in (("GET", "/v1/models/shop"), ("GET", "/monitoring/prometheus/metrics"),
                         ("POST", "/v1/models/shop:predict"), ("GET", "/elsewhere")):
        missing = request(server, method, path, {"instances": [query()]}, token=None)
        assert "missing bearer token" in error_of(missing, 401) and missing.headers["WWW-Authenticate"] == "Bearer"
        assert error_of(request(server, method, path, {"instances": [query()]}, token="wrong"), 401) == \
            "invalid bearer token"


def _counter(text: str, **labels: str) -> float:
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    for line in text.splitlines():
        if line.startswith("twotower_requests_total{") and all(w in line for w in wanted):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_prometheus_metrics_count_rest_requests_once(server):
    def scrape() -> str:
        answer = request(server, "GET", "/monitoring/prometheus/metrics")
        assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain")
        return answer.body.decode()

    labels = {"model": "shop", "signature": "embed_query", "protocol": "rest"}
    before = scrape()
    for _ in range(3):
        assert request(server, "POST", "/v1/models/shop:predict",
                       {"signature_name": "embed_query", "instances": [query()]}).status == 200
    request(server, "POST", "/v1/models/shop:predict", {"signature_name": "embed_query", "inputs": {}})
    request(server, "GET", "/v1/models/shop")
    request(server, "GET", "/v1/models/made-up-name")
    after = scrape()
    assert _counter(after, code="OK", version="2", **labels) - _counter(before, code="OK", version="2", **labels) \
        == 3
    assert _counter(after, code="INVALID_ARGUMENT", model="shop", signature="predict", protocol="rest") >= 1
    assert _counter(after, code="OK", model="shop", signature="status", protocol="rest") >= 1
    assert _counter(after, code="NOT_FOUND", model="_unknown", signature="status", protocol="rest") >= 1
    assert "made-up-name" not in after
    assert "twotower_request_latency_seconds_bucket" in after
