"""``twotower index add``: new items into the next version while a server keeps answering, and refused input.

The server serves a copy of the session's brute-force export; clients stream requests over gRPC during the whole
add, and every one of them must succeed. The new items are re-listings of catalogue items under new ids (their
text says so), so each must land next to its original.
"""

from __future__ import annotations

import csv
import json
import threading

import pytest
from helpers import EXPORT_K, PACE, cli, serve_a_copy, until_version_serves
from serving_process import ServerProcess

from serving.client import ClientError, RecommenderClient

K = EXPORT_K
FIELDS = ("item_id", "title", "description", "category", "brand", "price")


def write_items(path, rows) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def originals(world):
    with open(world / "items.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [rows[i] for i in (5, 50, 150)]


@pytest.fixture(scope="module")
def new_items(originals, tmp_path_factory):
    path = tmp_path_factory.mktemp("new-items") / "new_items.csv"
    rows = [{**{f: row[f] for f in FIELDS}, "item_id": f"NEW-{i}", "title": row["title"] + " (2025 edition)"}
            for i, row in enumerate(originals)]
    write_items(path, rows)
    return path


def _relisting_ranks(version, originals, catalogue) -> list[int]:
    """Rank of NEW-i among every item (its original excluded, as history) for the query history=[original i],
    through the export's own ``score`` signature."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 - registers the tokenizer's ops the SavedModel uses

    score = tf.saved_model.load(str(version)).signatures["score"]
    ranks = []
    for i, row in enumerate(originals):
        candidates = [item for item in catalogue if item != row["item_id"]] + [f"NEW-{i}"]
        scores = score(user_id=tf.constant([""]), history=tf.constant([[row["item_id"]]]),
                       user_text=tf.constant([""]), candidates=tf.constant([candidates]),
                       search_query=tf.constant([""]))["scores"].numpy()[0]
        ranks.append(int((scores > scores[-1]).sum()) + 1)
    return ranks


def test_index_add_while_serving_with_no_failed_request(brute_force_export, new_items, originals, tmp_path,
                                                        world):
    from export.ops import custom_ops

    base = serve_a_copy(brute_force_export, tmp_path / "shop")
    server = ServerProcess(tmp_path, "add", "--model_name", "shop", "--model_base_path", str(base),
                           "--file_system_poll_wait_seconds", "0.5").wait()
    stop, lock = threading.Event(), threading.Lock()
    served, failures = [], []

    def traffic(worker: int) -> None:
        with RecommenderClient(server.target, timeout=60) as client:
            i = 0
            while not stop.is_set():
                try:
                    ranking = client.recommend("shop", user_id=f"U{(worker * 31 + i) % 700:05d}",
                                               history=[originals[i % 3]["item_id"]], k=K, diversity=0.2 * (i % 2))
                    with lock:
                        served.append(ranking.version)
                except ClientError as err:
                    with lock:
                        failures.append(err.message)
                i += 1
                stop.wait(PACE)

    threads = [threading.Thread(target=traffic, args=(w,)) for w in range(2)]
    try:
        for thread in threads:
            thread.start()
        result = cli("index", "add", "--base-path", base, "--items", new_items)
        assert result.stdout.strip().splitlines()[-1] == str(base / "2")
        until_version_serves(served, 2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(90)
        with RecommenderClient(server.target, timeout=60) as client:
            answers = [client.recommend("shop", history=[row["item_id"]], k=K) for row in originals]
            own = client.recommend("shop", history=["NEW-0"], k=K)
        assert server.stop() == 0
    assert not failures, failures[:5]
    assert 1 in served and served[-1] == 2
    assert all(ranking.version == 2 for ranking in answers)
    # A re-listing lands next to its original, found through its text: for a user whose history is the original,
    # it ranks in the top 5% of the catalogue (exactly where depends on the trained weights: ranks 1 to 11 seen).
    catalogue = [row["item_id"] for row in csv.DictReader(open(world / "items.csv", encoding="utf-8"))]
    ranks = _relisting_ranks(base / "2", originals, catalogue)
    assert all(rank <= 0.05 * len(catalogue) for rank in ranks), ranks
    assert "NEW-0" not in [item for item, _ in own] and {e.item_id for e in own.explanations} == {"NEW-0"}
    card = json.loads((base / "2" / "assets" / "model_card.json").read_text())
    assert card["items"] == 503 and card["version"] == 2 and card["index"]["type"] == "brute-force"
    assert card["provenance"][-1]["action"] == "index add" and card["provenance"][-1]["added"] == 3
    assert "NEW-2\t" in (base / "2" / "assets" / "items.tsv").read_text()
    assert "scann" not in custom_ops(base / "2")          # still loadable by stock TF Serving


@pytest.mark.parametrize("case, message", [
    ("no title column", "missing column 'title'"),
    ("duplicate ids", "duplicate item_id: 'NEW-0' at lines 2, 3"),
    ("empty title", "row(s) with empty title (field 'title'): line 3"),
])
def test_a_bad_items_file_is_refused_naming_file_line_and_field(new_items, tmp_path, case, message):
    from export.add_items import read_new_items
    from ingest.schema import DataError

    with open(new_items, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    bad = {"no title column": [{k: v for k, v in r.items() if k != "title"} for r in rows],
           "duplicate ids": [rows[0], rows[0]],
           "empty title": [rows[0], {**rows[1], "title": ""}]}[case]
    path = tmp_path / "bad.csv"
    write_items(path, bad)
    with pytest.raises(DataError) as caught:
        read_new_items(path)
    assert str(path) in str(caught.value) and message in str(caught.value), caught.value


def test_index_add_refuses_an_id_the_model_has_with_one_line_and_writes_nothing(brute_force_export, new_items,
                                                                                  tmp_path):
    base = serve_a_copy(brute_force_export, tmp_path / "shop")
    with open(new_items, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    path = tmp_path / "bad.csv"
    write_items(path, [rows[0], {**rows[1], "item_id": "I00005"}])
    result = cli("index", "add", "--base-path", base, "--items", path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {path}: 1 item_id(s) already in the model: line 3 ('I00005') (field "
                            f"'item_id'"), error
    assert sorted(p.name for p in base.iterdir()) == ["1"]
