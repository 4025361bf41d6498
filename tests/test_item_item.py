"""The item-to-item channel's factors (towers/item_item.py): EASE's symmetric item weights, exactly where the
catalogue is decomposed whole, closely from the truncated SVD above DENSE_LIMIT; and the config rules around it."""

import numpy as np
import pytest

from towers import item_item
from towers.config import TowerConfig


def _interactions(seed: int = 0, users: int = 400, items: int = 60, clusters: int = 4):
    """Users who buy within one of a few clusters of items (a low-rank co-occurrence, as shops have), and items
    56-59 that nobody bought."""
    rng = np.random.default_rng(seed)
    user = np.repeat(np.arange(users), 6)
    cluster = rng.integers(0, clusters, users)[user]
    item = cluster * 14 + rng.integers(0, 14, len(user))
    return user, item, items


def _symmetric_ease(user, item, items, l2):
    x = np.zeros((user.max() + 1, items))
    x[user, item] = 1.0
    seen = x.sum(0) > 0
    p = np.linalg.inv(x[:, seen].T @ x[:, seen] + l2 * np.eye(seen.sum()))
    s = -p / np.sqrt(np.outer(np.diag(p), np.diag(p)))
    np.fill_diagonal(s, 0.0)
    return s, seen


def _off_diagonal(factors, seen):
    product = (factors @ factors.T)[np.ix_(seen, seen)]
    np.fill_diagonal(product, 0.0)
    return product


def test_full_rank_factors_are_the_symmetric_ease_weights_and_unseen_items_get_zeros():
    user, item, items = _interactions()
    factors = item_item.item_item_factors(user, item, items, rank=64, l2=5.0)
    exact, seen = _symmetric_ease(user, item, items, 5.0)
    assert factors.shape == (items, 64) and factors.dtype == np.float32
    np.testing.assert_allclose(_off_diagonal(factors.astype(np.float64), seen), exact, atol=1e-5)
    assert not factors[~seen].any() and seen.sum() == 56
    # repeated interactions count once: the same factors
    again = item_item.item_item_factors(np.concatenate([user, user[:50]]), np.concatenate([item, item[:50]]),
                                        items, rank=64, l2=5.0)
    np.testing.assert_allclose(again, factors, atol=1e-6)


def test_truncated_svd_path_keeps_the_weights_that_matter(monkeypatch):
    """Above DENSE_LIMIT items the largest components come from scipy's truncated SVD of the sparse interactions and
    diag(P) from those components only: the same weights as the whole decomposition's at that rank up to a scale
    (the channel's fitted weight absorbs it), and like EASE's, high within a cluster of items bought together."""
    user, item, items = _interactions()
    exact, seen = _symmetric_ease(user, item, items, 20.0)
    dense = _off_diagonal(item_item.item_item_factors(user, item, items, rank=8, l2=20.0).astype(np.float64), seen)
    monkeypatch.setattr(item_item, "DENSE_LIMIT", 10)
    factors = item_item.item_item_factors(user, item, items, rank=8, l2=20.0)
    sparse = _off_diagonal(factors.astype(np.float64), seen)
    assert np.corrcoef(sparse.ravel(), dense.ravel())[0, 1] > 0.99
    cluster = np.arange(seen.sum()) // 14
    together = cluster[:, None] == cluster[None, :]
    np.fill_diagonal(together, False)
    for weights in (exact, dense, sparse):
        assert weights[together].mean() > 0.03 > abs(weights[~together & ~np.eye(len(cluster), dtype=bool)].mean())
    assert not factors[~seen].any()


def test_the_svd_path_asks_no_more_components_than_the_data_has(monkeypatch):
    """A large catalogue with fewer users than the rank: the truncated SVD finds at most min(users, items) - 1
    components; the rest of the block is zeros."""
    monkeypatch.setattr(item_item, "DENSE_LIMIT", 10)
    user, item = np.repeat(np.arange(4), 3), np.array([0, 1, 2, 2, 3, 4, 5, 6, 7, 20, 25, 29])   # 11 items, 4 users
    factors = item_item.item_item_factors(user, item, 30, rank=8, l2=1.0)
    assert factors.shape == (30, 8) and not factors[:, 3:].any() and np.abs(factors[np.unique(item), :3]).sum(1).all()


def test_no_interactions_give_zero_factors_and_bad_settings_are_refused():
    assert not item_item.item_item_factors(np.array([], int), np.array([], int), 5, rank=3, l2=1.0).any()
    with pytest.raises(ValueError, match="rank"):
        item_item.item_item_factors(np.array([0]), np.array([0]), 5, rank=0, l2=1.0)
    with pytest.raises(ValueError, match="model.item_item_rank needs 'history'"):
        TowerConfig(item_item_rank=8, user_features=["text", "id"])


def test_an_item_without_a_block_borrows_the_mean_block_of_its_nearest_items_that_have_one():
    """borrowed_blocks: nearness is the cosine of the learned part (the first dimensions), only items with a
    non-zero block lend, fewer of them than asked means all of them, none means zeros."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    learned, blocks = rng.normal(size=(30, 6)), rng.normal(size=(30, 4))
    blocks[[3, 7]] = 0.0   # two catalogue items without training interactions
    middle = rng.normal(size=(30, 5))   # e.g. the semantic channel's text: not used for nearness
    catalogue = np.concatenate([learned, middle, blocks], axis=1).astype(np.float32)
    queries = np.concatenate([rng.normal(size=(5, 6)), rng.normal(size=(5, 5)), np.zeros((5, 4))], 1)
    queries[0, :6] = learned[3] * 7.0   # nearest to an item without a block: it lends nothing
    got = item_item.borrowed_blocks(tf.constant(queries, tf.float32), tf.constant(catalogue), rank=4,
                                    learned_dim=6, neighbours=3).numpy()
    unit = learned / np.linalg.norm(learned, axis=1, keepdims=True)
    lenders = np.setdiff1d(np.arange(30), [3, 7])
    for row, query in enumerate(queries):
        cosine = unit[lenders] @ (query[:6] / np.linalg.norm(query[:6]))
        np.testing.assert_allclose(got[row], blocks[lenders[np.argsort(-cosine)[:3]]].mean(0), atol=1e-5)
    everyone = item_item.borrowed_blocks(tf.constant(queries, tf.float32), tf.constant(catalogue), 4, 6, 100)
    np.testing.assert_allclose(everyone.numpy(), np.broadcast_to(blocks[lenders].mean(0), (5, 4)), atol=1e-5)
    catalogue[:, -4:] = 0.0
    nobody = item_item.borrowed_blocks(tf.constant(queries, tf.float32), tf.constant(catalogue), 4, 6, 3)
    assert nobody.shape == (5, 4) and not nobody.numpy().any()
