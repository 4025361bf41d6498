"""Explanations, diversity, filters and optional inputs of the exported serving signature.

The graph functions are checked on small hand-made tensors; the exported behaviour on the session's shared
brute-force export, loaded in this process, with users and histories from the generated world (whose item
categories are its latent categories).
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tensorflow as tf
from helpers import EXPORT_K

pytestmark = pytest.mark.xdist_group("explain_diversity")   # the module's loaded export: one pytest-xdist worker

K = EXPORT_K


# --------------------------------------------------------------------------------------------------------------
# The graph functions
# --------------------------------------------------------------------------------------------------------------
def test_rerank_trades_relevance_for_variety_and_caps_categories():
    from export.diversity import group_ids, rerank

    angles = np.array([0.0, 0.05, 0.1, 1.5, 1.55])   # three near-copies, then two of another kind
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    relevance = tf.constant([[0.9, 0.85, 0.8, 0.5, 0.45]] * 3)
    groups = group_ids(tf.constant([["a", "a", "a", "b", "b"]] * 3))
    positions, valid = rerank(relevance, tf.constant(np.stack([vectors] * 3)), groups,
                              tf.constant([0.0, 0.6, 0.0]), tf.constant([0, 0, 1]), 4)
    assert positions.numpy()[0].tolist() == [0, 1, 2, 3]          # diversity 0: the plain ranking
    assert positions.numpy()[1][0] == 0 and positions.numpy()[1][1] in (3, 4)   # the other kind comes second
    assert positions.numpy()[2][valid.numpy()[2]].tolist() == [0, 3] and valid.numpy()[2].tolist() == \
        [True, True, False, False]                                 # one per category, then nothing left
    blocked = tf.constant([[0.9, float("-inf"), 0.8, 0.5, 0.45]])
    positions, valid = rerank(blocked, tf.constant(vectors[None]), groups[:1], tf.constant([0.0]),
                              tf.constant([0]), 5)
    assert 1 not in positions.numpy()[0][valid.numpy()[0]] and valid.numpy()[0].tolist()[-1] is False


def test_explanations_from_the_request_only():
    from export.explain import item_words, matching_words, strongest_history_item

    assert item_words(["NorthPeak Ultralight Tent. A tent for the weekend", "北峰 超轻帐篷"]) == \
        ["northpeak ultralight tent weekend", "北 峰 超 轻 帐 篷"]
    words = tf.constant([["northpeak ultralight tent weekend", "北 峰 超 轻 帐 篷"]])
    found = matching_words(tf.constant(["Ultralight TENT, tent for two"]), words).numpy().tolist()
    assert found == [[b"ultralight tent", b""]]                   # each word once, in the text's order
    assert matching_words(tf.constant(["超轻帐篷"]), words).numpy()[0, 1].decode() == "超 轻 帐 篷"
    items = tf.constant([["a", "b"]])
    because, score = strongest_history_item(
        items, tf.constant([[[1.0, 0.0], [0.0, 1.0]]]), tf.constant([["x", "b", ""]]),
        tf.constant([[[0.9, 0.1], [0.0, 1.0], [0.0, 0.0]]]), tf.constant([[True, True, False]]))
    assert because.numpy().tolist() == [[b"x", b"x"]]              # b never explains itself
    np.testing.assert_allclose(score.numpy(), [[0.9, 0.1]])


# --------------------------------------------------------------------------------------------------------------
# The exported signature
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded(brute_force_export):
    from serving.servable import register_custom_ops

    register_custom_ops()
    return tf.saved_model.load(str(brute_force_export / "1"))


@pytest.fixture(scope="module")
def model(loaded, brute_force_export):
    from export.loaded import signature_defaults
    from export.ops import saved_model_proto

    definition = saved_model_proto(brute_force_export / "1").meta_graphs[0].signature_def["serving_default"]
    recommend = loaded.signatures["serving_default"]
    defaults = signature_defaults(definition)

    def ask(**inputs):
        given = {**defaults, **inputs}
        return {name: value.numpy() for name, value in recommend(**{k: tf.constant(v) for k, v in given.items()})
                .items()}

    ask.defaults = defaults
    return ask


@pytest.fixture(scope="module")
def world_data(world):
    with open(world / "items.csv", encoding="utf-8") as handle:
        category = {row["item_id"]: row["category"] for row in csv.DictReader(handle)}
    histories: dict[str, list[str]] = {}
    with open(world / "interactions.csv", encoding="utf-8") as handle:
        for row in sorted(csv.DictReader(handle), key=lambda r: r["timestamp"]):
            histories.setdefault(row["user_id"], []).append(row["item_id"])
    users = [u for u, h in histories.items() if len(h) >= 4][:150]
    history = [list(dict.fromkeys(histories[u]))[-5:] for u in users]
    history = [h + [""] * (5 - len(h)) for h in history]
    return category, users, history


def _decode(array) -> list[list[str]]:
    return [[v.decode() for v in row] for row in array]


def test_optional_inputs_are_signature_defaults(model):
    assert sorted(model.defaults) == ["diversity", "exclude", "max_per_category", "search_query"]
    assert model.defaults["diversity"].tolist() == [0.0] and model.defaults["exclude"].shape == (1, 0)


def test_because_names_an_own_history_item_of_the_same_category_far_more_often_than_chance(model, world_data):
    category, users, history = world_data
    out = model(user_id=users, history=history, user_text=[""] * len(users))
    pairs = [(item, why) for items, whys in zip(_decode(out["item_ids"]), _decode(out["because"]))
             for item, why in zip(items, whys) if why]
    assert len(pairs) > 0.8 * len(users) * K
    for row, h in zip(_decode(out["because"]), history):
        assert set(row) <= set(h) | {""}                          # only the requesting user's own items
    same = np.mean([category[item] == category[why] for item, why in pairs])
    shares = np.array(list({c: list(category.values()).count(c) for c in set(category.values())}.values()))
    chance = float(np.sum((shares / shares.sum()) ** 2))
    assert same > max(3 * chance, 0.5), (same, chance)
    assert np.all(out["because_score"][out["because"] != b""] > 0)


def test_explanations_never_reveal_another_users_data(model, world_data):
    _, users, _ = world_data
    out = model(user_id=users[:20], history=[[""]] * 20, user_text=[""] * 20)   # their ids, nothing else
    assert not out["because"].astype(bool).any() and not out["because_words"].astype(bool).any()
    text = ["ultralight tent for weekend camping"] * 20
    words = model(user_id=users[:20], history=[[""]] * 20, user_text=text)["because_words"]
    said = set(" ".join(w.decode() for w in words.ravel()).split())
    assert said <= {"ultralight", "tent", "weekend", "camping"}


def test_diversity_lowers_intra_list_similarity_and_raises_category_coverage(model, world_data, loaded):
    category, users, history = world_data
    vectors = dict(zip((i.decode() for i in loaded.catalog.ids.numpy()), loaded.catalog.vectors.numpy()))
    text = [""] * len(users)
    similarity, coverage, lists = [], [], []
    for diversity in (0.0, 0.3, 0.6, 0.9):
        ids = _decode(model(user_id=users, history=history, user_text=text,
                            diversity=np.full(len(users), diversity, np.float32))["item_ids"])
        lists.append(ids)
        similarity.append(np.mean([_intra_list_similarity([vectors[i] for i in row]) for row in ids]))
        coverage.append(np.mean([len({category[i] for i in row}) for row in ids]))
    assert all(a >= b - 1e-6 for a, b in zip(similarity, similarity[1:])) and similarity[-1] < similarity[0] - 0.05
    assert all(a <= b + 1e-6 for a, b in zip(coverage, coverage[1:])) and coverage[-1] > coverage[0] + 0.5
    plain = _decode(model(user_id=users, history=history, user_text=text)["item_ids"])
    assert plain == lists[0]                                        # diversity 0 = the request without it


def test_max_per_category_and_exclude(model, world_data):
    category, users, history = world_data
    users, history = users[:40], history[:40]
    text = [""] * len(users)
    capped = model(user_id=users, history=history, user_text=text, max_per_category=np.full(40, 2, np.int32))
    for row in _decode(capped["item_ids"]):
        counts = {}
        for item in filter(None, row):
            counts[category[item]] = counts.get(category[item], 0) + 1
        assert max(counts.values()) <= 2 and sum(counts.values()) == K   # the cap still fills every slot
    plain = _decode(model(user_id=users, history=history, user_text=text)["item_ids"])
    gone = [[row[0], row[2]] for row in plain]
    filtered = _decode(model(user_id=users, history=history, user_text=text, exclude=gone)["item_ids"])
    for before, after, out in zip(plain, filtered, gone):
        assert not set(out) & set(after)
        assert [i for i in before if i not in out] == after[:K - 2]   # the rest keeps its order


def _intra_list_similarity(vectors: list[np.ndarray]) -> float:
    matrix = np.stack(vectors)
    pairs = matrix @ matrix.T
    n = len(vectors)
    return float((pairs.sum() - np.trace(pairs)) / (n * (n - 1)))
