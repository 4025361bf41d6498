"""The tower building blocks and the towers: lookups with OOV, dropout, pooling, unit vectors, every input path."""

import numpy as np
import pytest
import tensorflow as tf

from towers.config import TowerConfig
from towers.feature_table import FeatureTable
from towers.history_pooling import HistoryPooling
from towers.id_embedding import IdEmbedding
from towers.item_tower import ItemTower, price_statistics
from towers.text_encoder import TextEncoder, make_tiny_bert
from towers.text_fields import join_columns
from towers.user_tower import UserTower

ITEMS = ["a", "b", "c", "d"]
TEXTS = ["red camping tent", "blue camping stove", "steel travel mug", "green tea leaves"]
ITEM_ITEM = np.array([[1.0, 0.5], [0.2, -1.0], [0.0, 2.0], [0.0, 0.0]], np.float32)   # per item of ITEMS


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return TextEncoder(make_tiny_bert(tmp_path_factory.mktemp("tiny"), TEXTS * 2, seed=1), max_length=16)


def test_feature_table_returns_rows_and_defaults_for_unknown_keys():
    table = FeatureTable(["x", "y"], {"vec": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
                                      "name": np.array(["ex", "why"], object)})
    out = table(tf.constant([["y", "zzz"]]))
    np.testing.assert_array_equal(out["vec"].numpy(), [[[3, 4], [0, 0]]])
    assert out["name"].numpy().tolist() == [[b"why", b""]]
    assert out["known"].numpy().tolist() == [[True, False]]
    empty = FeatureTable([], {"vec": np.zeros((0, 2), np.float32)})
    assert empty(tf.constant(["x"]))["known"].numpy().tolist() == [False]
    with pytest.raises(ValueError, match="duplicate"):
        FeatureTable(["x", "x"], {"vec": np.zeros((2, 1))})


def test_id_embedding_maps_unknown_and_padding_to_the_oov_row():
    layer = IdEmbedding(["u1", "u2"], 4)
    out = layer(tf.constant(["u1", "nobody", "", "u2"])).numpy()
    np.testing.assert_array_equal(out[1], out[2])  # unknown id and padding share row 0
    assert not np.allclose(out[0], out[1]) and not np.allclose(out[0], out[3])


def test_id_dropout_is_seeded_by_call_count():
    ids = tf.constant(["u1"] * 2000)
    first, second = IdEmbedding(["u1"], 4, dropout=0.3, seed=5), IdEmbedding(["u1"], 4, dropout=0.3, seed=5)
    a = first(ids, training=True).numpy()
    second(ids[:1])  # builds it; inference draws no mask
    second.set_weights(first.get_weights())
    second.dropout.calls.assign(0)  # as a resumed run whose checkpoint was taken before that call
    b = second(ids, training=True).numpy()
    oov = first(tf.constant(["?"])).numpy()[0]
    dropped = np.all(np.isclose(a, oov), axis=1)
    assert 0.25 < dropped.mean() < 0.35  # about the configured share goes to OOV
    np.testing.assert_array_equal(a, b)  # same seed and call count → same mask (resume-safe)
    assert not np.all(np.isclose(first(ids, training=False).numpy(), oov), axis=1).any()


def test_history_pooling_masks_weights_recency_and_handles_empty():
    vectors = tf.constant([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], [[1.0, 1.0]] * 3])
    mask = tf.constant([[True, True, False], [False, False, False]])
    pooled, count = HistoryPooling(decay=0.5)(vectors, mask)
    # positions 0 and 1 have ages 2 and 1: weights 0.25 and 0.5; position 2 is masked
    np.testing.assert_allclose(pooled.numpy()[0], [0.25 / 0.75, 0.5 / 0.75], atol=1e-6)
    np.testing.assert_array_equal(pooled.numpy()[1], [0.0, 0.0])
    np.testing.assert_allclose(count.numpy()[:, 0], [np.log(3.0), 0.0], atol=1e-6)


def test_join_columns_skips_empty_fields():
    assert join_columns([["Tent.", "保温杯。"], ["", "steel"], ["Outdoor", ""]]) == ["Tent. Outdoor", "保温杯. steel"]


def _towers(encoder, item_features=("text", "id", "category", "brand", "price"),
            user_features=("text", "history", "id"), **settings):
    config = TowerConfig(embedding_dim=8, hidden_units=(16,), id_dim=4, categorical_dim=3,
                         text_projection_dim=8, item_features=item_features, user_features=user_features, **settings)
    vectors = encoder.encode(TEXTS, progress=False)
    columns = {"text_vec": vectors, "category": np.array(["x", "x", "y", "z"], object),
               "brand": np.array(["p", "q", "", "p"], object), "price": np.array([10.0, np.nan, 3.0, 0.0], np.float32)}
    if config.item_item_rank:
        columns["item_item_vec"] = ITEM_ITEM[:, :config.item_item_rank]
    catalog = FeatureTable(ITEMS, columns)
    item = ItemTower(config, ITEMS[:3], ["x", "y", "z"], ["p", "q"], price_statistics(np.array([10.0, 3.0])),
                     encoder.dim, encoder)
    user = UserTower(config, ["u1"], item, catalog, encoder.dim, encoder)
    return item, user, catalog, vectors


def test_item_tower_text_vector_and_raw_text_paths_agree(encoder):
    item, _, catalog, _ = _towers(encoder)
    features = catalog(tf.constant(ITEMS))
    features["item_id"] = tf.constant(ITEMS)
    from_vectors = item(features).numpy()
    raw = dict(features)
    raw.pop("text_vec")
    raw["text"] = tf.constant(TEXTS)
    np.testing.assert_allclose(item(raw).numpy(), from_vectors, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(from_vectors, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(from_vectors).all()  # NaN and zero prices are "missing", not poison


def test_user_tower_answers_every_kind_of_user(encoder):
    _, user, _, vectors = _towers(encoder)
    history = tf.constant([["", "a", "b"], ["", "", ""], ["", "", "nope"], ["", "", ""]])
    out = user({"user_id": tf.constant(["u1", "new", "ghost", "u1"]), "history": history,
                "user_text": tf.constant(["", "camping tent please", "", ""])}).numpy()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(out[0], out[3])  # history moves the vector
    # an unknown history item is masked out: the same as an empty history for the same (unknown) user
    same = user({"user_id": tf.constant(["ghost"]), "history": tf.constant([["", "", ""]]),
                 "user_text": tf.constant([""])}).numpy()
    np.testing.assert_allclose(out[2], same[0], atol=1e-6)
    # cached text vectors and raw text give the same user vector
    cached = user({"user_id": tf.constant(["new"]), "history": tf.constant([["", "", ""]]),
                   "user_text_vec": encoder.encode(["camping tent please"], progress=False)}).numpy()
    np.testing.assert_allclose(cached[0], out[1], atol=1e-5)


def test_id_only_towers_need_no_text(encoder):
    item, user, catalog, _ = _towers(encoder, item_features=("id",), user_features=("id",))
    assert item.encoder is None and user.item_tower is None
    features = {"item_id": tf.constant(["a", "unseen"])}
    out = item(features).numpy()
    assert out.shape == (2, 8)
    with pytest.raises(ValueError, match="unknown or empty"):
        TowerConfig(item_features=("text", "colour"))


def test_history_attention_reads_order_ignores_padding_and_unknown_items():
    from towers.history_attention import HistoryAttention

    layer = HistoryAttention(dim=8, layers=2, heads=2, max_len=6)
    rng = np.random.default_rng(0)
    items = tf.constant(rng.normal(size=(1, 3, 8)), tf.float32)
    mask = tf.ones((1, 3), tf.bool)
    out = layer(items, mask).numpy()
    swapped = layer(tf.reverse(items, axis=[1]), mask).numpy()
    assert not np.allclose(out, swapped, atol=1e-4)           # order matters (mean pooling could not tell)
    # front padding and an unknown (masked) item anywhere change nothing; the readout is the last real item
    noise = tf.constant(rng.normal(size=(1, 2, 8)), tf.float32)
    padded = tf.concat([noise, items], axis=1)
    np.testing.assert_allclose(layer(padded, tf.constant([[False, False, True, True, True]])).numpy(), out,
                               atol=1e-5)
    unknown_between = tf.concat([items[:, :2], noise[:, :1], items[:, 2:], noise[:, 1:]], axis=1)
    np.testing.assert_allclose(layer(unknown_between, tf.constant([[True, True, False, True, False]])).numpy(),
                               out, atol=1e-5)
    np.testing.assert_array_equal(layer(items, tf.zeros((1, 3), tf.bool)).numpy(), np.zeros((1, 8)))


def test_causal_history_gives_each_prefix_what_that_prefix_alone_gets():
    """Step t reads items ≤ t only; a prefix as a served (front-padded) history gets the same vector; the last row is
    the whole history's; order matters; padding and unknown items shift nothing; no real item yet → zeros."""
    from towers.history_causal import CausalHistory

    layer = CausalHistory(dim=8, layers=2, heads=2, max_len=6)
    layer.build(None)
    layer.gates.assign(np.full((2, 2), 0.5, np.float32))     # open the ReZero gates: the blocks count
    rng = np.random.default_rng(0)
    items = tf.constant(rng.normal(size=(1, 4, 8)), tf.float32)
    every = layer(items, tf.ones((1, 4), tf.bool)).numpy()
    for t in range(4):
        served = tf.concat([tf.zeros((1, 3 - t, 8)), items[:, :t + 1]], axis=1)
        front_padded = tf.constant([[False] * (3 - t) + [True] * (t + 1)])
        np.testing.assert_allclose(layer(served, front_padded).numpy()[0, -1], every[0, t], atol=1e-5)
    changed = tf.concat([items[:, :2], tf.constant(rng.normal(size=(1, 2, 8)), tf.float32)], axis=1)
    after = layer(changed, tf.ones((1, 4), tf.bool)).numpy()
    np.testing.assert_allclose(after[0, :2], every[0, :2], atol=1e-6)            # the future changes nothing
    assert not np.allclose(after[0, 3], every[0, 3], atol=1e-4)
    swapped = layer(tf.reverse(items, axis=[1]), tf.ones((1, 4), tf.bool)).numpy()
    assert not np.allclose(swapped[0, -1], every[0, -1], atol=1e-4)              # order matters
    # an unknown item (masked) reads the prefix before it; a window starting on nothing gives zeros there
    holes = layer(tf.concat([tf.zeros((1, 1, 8)), items[:, :2], tf.ones((1, 1, 8))], axis=1),
                  tf.constant([[False, True, True, False]])).numpy()
    np.testing.assert_array_equal(holes[0, 0], np.zeros(8))
    np.testing.assert_allclose(holes[0, 3], holes[0, 2], atol=1e-6)
    np.testing.assert_allclose(holes[0, 2], every[0, 1], atol=1e-5)
    # change=True: what the blocks (and the position) added to the latest item's own vector
    change = layer(items, tf.ones((1, 4), tf.bool), change=True).numpy()
    np.testing.assert_allclose(change + items.numpy(), every, atol=1e-5)
    assert np.abs(change).max() > 1e-3


def test_history_pooling_prefixes_are_the_pooling_of_each_prefix():
    rng = np.random.default_rng(1)
    vectors = tf.constant(rng.normal(size=(2, 4, 3)), tf.float32)
    mask = tf.constant([[False, True, True, True], [True, False, True, False]])
    pooling = HistoryPooling(decay=0.5)
    pooled, count = pooling.prefixes(vectors, mask)
    for t in range(4):
        one, n = pooling(vectors[:, :t + 1], mask[:, :t + 1])
        np.testing.assert_allclose(pooled.numpy()[:, t], one.numpy(), atol=1e-6)
        np.testing.assert_allclose(count.numpy()[:, t], n.numpy(), atol=1e-6)


def test_causal_user_tower_every_position_ends_on_the_served_vector(encoder):
    """Training's per-step vectors (every_position) and a request's vector come from one tower: a step's vector is
    the request with the history up to it, text and id included."""
    _, user, _, _ = _towers(encoder, history_encoder="causal", history_len=3)
    request = {"user_id": tf.constant(["u1", "new"]), "history": tf.constant([["a", "b", "c"], ["", "", "b"]]),
               "user_text": tf.constant(["", "camping tent"])}
    every = user(request, every_position=True).numpy()
    assert every.shape == (2, 3, 8)
    np.testing.assert_allclose(every[:, -1], user(request).numpy(), atol=1e-5)
    prefix = user({"user_id": tf.constant(["u1"]), "history": tf.constant([["", "a", "b"]]),
                   "user_text": tf.constant([""])}).numpy()
    np.testing.assert_allclose(every[0, 1], prefix[0], atol=1e-5)
    with pytest.raises(ValueError, match="every_position needs model.history_encoder 'causal'"):
        _towers(encoder)[1](request, every_position=True)


def test_seeded_dropout_is_inverted_and_resume_safe():
    from towers.seeded_mask import SeededDropout

    x = tf.ones((4000,))
    first, second = SeededDropout(0.25, seed=3), SeededDropout(0.25, seed=3)
    a = first(x, training=True).numpy()
    assert abs((a == 0).mean() - 0.25) < 0.03 and np.allclose(a[a != 0], 1 / 0.75)
    np.testing.assert_array_equal(second(x, training=True).numpy(), a)   # same seed, same call count
    np.testing.assert_array_equal(first(x, training=False).numpy(), x.numpy())


@pytest.mark.parametrize("settings", [{"semantic_channel": True}, {"history_encoder": "causal", "history_len": 3}])
def test_item_item_block_adds_the_weighted_sum_of_the_history_blocks(encoder, settings):
    """model.item_item_rank: the item vector ends with the item's block, the query with weight · the sum of its
    history's blocks (masked: padding, unknown items), so the dot product adds weight · Σ_h E_h · E_i; at weight 0
    (training) the rest of the vectors is what they are without the channel. With the causal encoder the last
    position of training's every_position is the served vector."""
    item, user, catalog, _ = _towers(encoder, item_item_rank=2, **settings)
    features = catalog(tf.constant(ITEMS + ["new"]))
    features["item_id"] = tf.constant(ITEMS + ["new"])
    items = item(features).numpy()
    np.testing.assert_array_equal(items[:, -2:], np.concatenate([ITEM_ITEM, [[0.0, 0.0]]]))   # "new": zeros
    request = {"user_id": tf.constant(["u1", "new"]), "history": tf.constant([["a", "b", "c"], ["", "nope", "b"]]),
               "user_text": tf.constant(["", "camping tent"])}
    off = user(request).numpy()
    assert user.item_item.weight.numpy() == 0.0 and not off[:, -2:].any()
    user.item_item.set_weight(3.0)
    on = user(request).numpy()
    np.testing.assert_allclose(on[:, :-2], off[:, :-2], atol=1e-6)
    np.testing.assert_allclose(on[:, -2:], 3.0 * np.array([ITEM_ITEM[:3].sum(0), ITEM_ITEM[1]]), atol=1e-6)
    np.testing.assert_allclose(on @ items.T - off @ items.T, on[:, -2:] @ items[:, -2:].T, atol=1e-5)
    if settings.get("history_encoder") == "causal":
        every = user(request, every_position=True).numpy()
        np.testing.assert_allclose(every[:, -1], on, atol=1e-5)
        np.testing.assert_allclose(every[0, 0, -2:], 3.0 * ITEM_ITEM[0], atol=1e-6)
