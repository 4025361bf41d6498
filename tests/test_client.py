"""The Python client and ``twotower query`` against a real ``twotower serve`` (bearer token on), and their errors."""

from __future__ import annotations

import json

import grpc
import pytest
from helpers import EXPORT_K, SERVER_TOKEN, cli
from serving_process import free_port

from serving.client import ClientError, RecommenderClient, VersionState, read_titles

pytestmark = pytest.mark.xdist_group("token_server")   # the session's token server: one pytest-xdist worker

K = EXPORT_K  # the shared brute-force export's K
TOKEN = SERVER_TOKEN
MODEL = "store"   # the session's export itself, on the token server (tests/conftest.py)


@pytest.fixture(scope="module")
def exported(brute_force_export):
    return brute_force_export


@pytest.fixture(scope="module")
def server(token_server):
    return token_server


@pytest.fixture(scope="module")
def client(server):
    with RecommenderClient(server.target, token=TOKEN, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def titles(exported):
    return read_titles(exported)


def test_recommend_by_history_text_and_nothing(client, titles):
    history = list(titles)[:3]
    ranking = client.recommend(MODEL, user_id="U00001", history=history, k=5)
    assert ranking.version == 1 and ranking.model == MODEL and len(ranking) == 5
    assert all(isinstance(item, str) and item in titles for item, _ in ranking)
    assert not set(history) & {item for item, _ in ranking}                       # history excluded
    assert [score for _, score in ranking] == sorted((score for _, score in ranking), reverse=True)
    because = {e.item_id for e in ranking.explanations}
    assert len(ranking.explanations) == 5 and because <= set(history) | {""} and because - {""}
    fewer = client.recommend(MODEL, user_id="U00001", history=history, k=5, exclude=[ranking[0].item_id],
                             diversity=0.0, max_per_category=0)
    assert ranking[0].item_id not in {item for item, _ in fewer}
    with_history = client.recommend(MODEL, user_id="U00001", history=history, k=K,
                                    signature="recommend_including_history")
    assert len(with_history) == K
    by_text = client.recommend(MODEL, text="lightweight camping tent for two", k=50)
    assert len(by_text) == K                                                     # the export's K caps k
    stranger = client.recommend(MODEL, user_id="nobody", history=["NOT-AN-ITEM"], k=3, version=1)
    assert len(stranger) == 3 and stranger.version == 1


def test_metadata_and_status(client):
    metadata = client.metadata(MODEL)
    assert metadata["model"] == MODEL and metadata["version"] == 1
    default = metadata["signatures"]["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["history"] == {"dtype": "string", "shape": [-1, -1]}
    assert default["outputs"]["scores"]["dtype"] == "float"
    assert client.status(MODEL) == [VersionState(1, "AVAILABLE", "OK", "")]


def test_titles_from_a_local_copy_only(client, exported, tmp_path):
    titles = client.titles(exported)
    assert len(titles) > 100 and all(item.startswith("I") for item in titles)
    assert read_titles(exported / "1") == titles == read_titles(exported / "1" / "assets" / "items.tsv")
    assert read_titles(tmp_path / "nowhere") == {} and read_titles(tmp_path) == {}


def test_client_errors_are_clear(server, client):
    with pytest.raises(ClientError) as unknown:
        client.recommend("nope")
    assert unknown.value.code == grpc.StatusCode.NOT_FOUND and "model nope" in unknown.value.message
    with pytest.raises(ClientError) as signature:
        client.recommend(MODEL, signature="embed_query")
    assert "not a recommendation signature" in signature.value.message
    with RecommenderClient(server.target, timeout=30) as anonymous, pytest.raises(ClientError) as refused:
        anonymous.status(MODEL)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED and "refused the credentials" in str(refused.value)
    with pytest.raises(ClientError, match="k must be at least 1"):
        client.recommend(MODEL, k=0)


def _query(server, *args, check=True):
    return cli("query", "--server", server.target, "--model", MODEL, "--token-file", server.token_file, *args,
               check=check)


def test_query_prints_a_table_with_titles_and_reasons(server, exported, titles):
    history = list(titles)[:2]
    out = _query(server, "--user-id", "U00001", "--history", ",".join(history), "-k", "4", "--base-path",
                 exported).stdout
    lines = out.splitlines()
    assert lines[0] == f"model {MODEL} version 1: 4 items"
    assert lines[1].split() == ["rank", "item", "score", "title"]
    ranked = [line for line in lines[2:] if "↳" not in line]
    reasons = [line.split("↳ ", 1)[1] for line in lines[2:] if "↳" in line]
    for rank, line in enumerate(ranked, start=1):
        number, item, score, *title = line.split()
        assert int(number) == rank and item in titles and " ".join(title) == titles[item]
        float(score)
    assert len(ranked) == 4 and reasons        # each explained by one of the user's own items, by title
    assert all(r in {f"because you viewed {titles[h]}" for h in history} for r in reasons)
    text = _query(server, "--history", history[0], "--text", titles[history[0]], "-k", str(K)).stdout
    assert any("matches: " in line for line in text.splitlines())      # the words of the text it matched


def test_query_json(server, exported, titles):
    history = ",".join(list(titles)[:2])
    rows = json.loads(_query(server, "--user-id", "U00001", "--history", history, "--json", "--base-path",
                             exported).stdout)
    assert [row["rank"] for row in rows] == list(range(1, K + 1))
    assert all(row["title"] == titles[row["item_id"]] for row in rows)
    assert all(row["because"] is None or row["because"]["item_id"] in history.split(",") for row in rows)
    assert all(row["because_words"] == [] for row in rows)                        # no text, no words
    bare = json.loads(_query(server, "--user-id", "nobody", "--history", "NOT-AN-ITEM", "-k", "2", "--json").stdout)
    assert len(bare) == 2 and set(bare[0]) == {"rank", "item_id", "score", "because", "because_words"}
    assert "title" not in bare[0]                                                 # no --base-path: no titles


CLIENT_WITHOUT_TENSORFLOW = """
import json, sys
from serving.client import RecommenderClient
with RecommenderClient(sys.argv[1], token=sys.argv[2], timeout=30) as client:
    ranking = client.recommend(sys.argv[3], user_id="U00001", history=sys.argv[4].split(","), k=4, diversity=0.5)
    status = client.status(sys.argv[3])
imported = sorted(name for name in sys.modules if name == "tensorflow" or name.startswith("tensorflow.python"))
import tensorflow as tf   # still imports whole afterwards, and reads the same messages
from serving.client import number_tensor
same = tf.make_ndarray(number_tensor([0.5], "float32")).tolist()
print(json.dumps({"items": [item for item, _ in ranking], "state": status[0].state, "imported": imported,
                  "same": same}))
"""


def test_the_client_never_imports_tensorflow(server, client, titles):
    """A fresh interpreter asks the server through serving.client without importing TensorFlow (3-4 s a
    `twotower query` no longer pays: serving/tf_protos.py), gets what the in-process client gets, and can still
    import TensorFlow afterwards."""
    import subprocess
    import sys

    history = list(titles)[:2]
    result = subprocess.run([sys.executable, "-c", CLIENT_WITHOUT_TENSORFLOW, server.target, TOKEN, MODEL,
                             ",".join(history)], capture_output=True, text=True, timeout=300, check=True)
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["imported"] == []
    expected = client.recommend(MODEL, user_id="U00001", history=history, k=4, diversity=0.5)
    assert answer["items"] == [item for item, _ in expected] and answer["state"] == "AVAILABLE"
    assert answer["same"] == [0.5]


def test_query_errors_are_one_line(server, tmp_path):
    port = free_port()   # nothing listens there
    unreachable = cli("query", "--server", f"127.0.0.1:{port}", "--model", MODEL, "--text", "tent",
                      "--timeout", "5", check=False)
    assert unreachable.returncode == 2 and unreachable.stdout == ""
    assert unreachable.stderr.startswith(f"error: cannot reach the model server at 127.0.0.1:{port}")
    assert len(unreachable.stderr.strip().splitlines()) == 1
    for args, message in ((("--model", "nope"), "model nope"),
                          (("--model", MODEL, "--token-file", str(tmp_path / "missing")), "cannot read the token"),):
        result = cli("query", "--server", server.target, "--token-file", server.token_file, *args, check=False)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    anonymous = cli("query", "--server", server.target, "--model", MODEL, check=False)
    assert anonymous.returncode == 2 and "refused the credentials" in anonymous.stderr
