"""The item-to-item channel: EASE's closed-form item weights, factored so that one dot product still scores.

Why it exists: the towers learn a smooth collaborative space, and what they smooth away is the sharp, item-level
"bought with" signal that a linear item-to-item model keeps. EASE (Steck, "Embarrassingly Shallow Autoencoders
for Sparse Data", WWW 2019) fits that model in closed form from the training interactions: with X the user ×
item matrix, G = XᵀX and P = (G + λI)⁻¹, the weight of item i for item j is -P_ij / P_jj (no item scores
itself). Its score for a user is the sum over the history of those weights. On Amazon Scientific it ranks close to
the towers alone, and added to them it lifts recall@10 and ndcg@10 by about a tenth (docs/quality.md): the two
make different mistakes.

To keep one nearest-neighbour search over one index, the weights are made symmetric, S_ij = -P_ij / √(P_ii P_jj),
and factored: with G = Q Σ Qᵀ, -P = Q diag(s/λ) Qᵀ - I/λ where s = σ / (σ + λ), so off the diagonal

    S ≈ E Eᵀ,    E = diag(P)^-½ · Q_r · diag(√(s_r / λ))      (the r components of largest σ)

Every catalogue item gets its row of E as a block of its vector; a query gets the sum of its history items' blocks
times a weight fitted on the validation split (training/calibrate.py), so ``query · item`` adds
``weight · Σ_h S_hi``. An item without training interactions (a cold listing, an ``index add`` item) has no row
of E; a zero block would bury it under every item that has one, so it borrows: the mean block of the
``item_item_neighbours`` items nearest it in the item tower's learned space (``borrowed_blocks``; the trainer
fills the catalogue's cold rows before the weight is fitted, the export's ``embed_items`` an unknown item's), and is
then scored by the histories its look-alikes are bought with. The diagonal of E Eᵀ (an item with itself) only
touches the history's own items: ``serving_default`` excludes them, and wherever they stay candidates it is taken
off (``ItemItemQuery.own``).

Up to ``DENSE_LIMIT`` items G is decomposed whole (numpy); above, the r largest components come from a truncated
SVD of the sparse X (scipy) and diag(P) from those components only.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import tensorflow as tf
import tf_keras

DENSE_LIMIT = 8192   # items: G (n × n, float64) is 512 MB here and its eigendecomposition a few minutes on 2 cores


def item_item_factors(users: np.ndarray, items: np.ndarray, num_items: int, rank: int, l2: float) -> np.ndarray:
    """[num_items, rank] float32: E above, from the training interactions given as parallel arrays of user and item
    rows (repeats count once). Items never interacted with get zero rows; components beyond the data's own rank
    are zero."""
    if rank <= 0 or l2 <= 0:
        raise ValueError(f"item_item_factors: rank ({rank}) and l2 ({l2}) must be positive")
    factors = np.zeros((num_items, rank), np.float32)
    if len(items) == 0:
        return factors
    user_rows = np.unique(users, return_inverse=True)[1]
    x = scipy.sparse.csr_matrix((np.ones(len(items)), (user_rows, items)), shape=(user_rows.max() + 1, num_items))
    x.data[:] = 1.0   # duplicates summed by the constructor: binary again
    seen = np.flatnonzero(np.asarray(x.sum(axis=0)).ravel() > 0)
    x = x[:, seen]
    n = len(seen)
    if n <= DENSE_LIMIT or rank >= n - 1:
        gram = (x.T @ x).toarray()
        sigma, q = np.linalg.eigh(gram)
        diag_p = (q ** 2) @ (1.0 / (np.maximum(sigma, 0.0) + l2))
        order = np.argsort(-sigma)[:rank]
        sigma, q = np.maximum(sigma[order], 0.0), q[:, order]
    else:
        k = min(rank, min(x.shape) - 1)   # svds finds fewer components than the matrix's smaller side
        _, singular, vt = scipy.sparse.linalg.svds(x.astype(np.float64), k=k, random_state=0)
        order = np.argsort(-singular)
        sigma, q = singular[order] ** 2, vt[order].T
        diag_p = (1.0 - (q ** 2) @ (sigma / (sigma + l2))) / l2
    shrink = np.sqrt(sigma / (sigma + l2) / l2)
    block = q * shrink[None, :] / np.sqrt(diag_p)[:, None]
    factors[seen, :block.shape[1]] = block
    return factors


def borrowed_blocks(vectors: tf.Tensor, catalogue: tf.Tensor, rank: int, learned_dim: int,
                    neighbours: int) -> tf.Tensor:
    """[B, rank]: for item vectors [B, D], the mean item-to-item block of their ``neighbours`` nearest items among
    the ``catalogue`` [N, D] items that have a block (a non-zero one), nearest by the cosine of the learned part
    (the first ``learned_dim`` dimensions; both vectors end with their block). Zeros where there is none to borrow
    from. On the generated world a plain mean of 20 ranked cold items best (docs/quality.md, "Cold items borrow
    their look-alikes' blocks")."""
    blocks = catalogue[:, -rank:]
    has_block = tf.reduce_any(tf.not_equal(blocks, 0.0), axis=-1)
    keys = tf.math.l2_normalize(tf.boolean_mask(catalogue[:, :learned_dim], has_block), axis=-1)
    blocks = tf.boolean_mask(blocks, has_block)
    queries = tf.math.l2_normalize(vectors[:, :learned_dim], axis=-1)
    k = tf.minimum(neighbours, tf.shape(keys)[0])
    _, nearest = tf.math.top_k(tf.matmul(queries, keys, transpose_b=True), k=k)
    return tf.reduce_sum(tf.gather(blocks, nearest), axis=1) / tf.cast(tf.maximum(k, 1), blocks.dtype)


class ItemItemQuery(tf_keras.layers.Layer):
    """The query's block: history items' blocks [B, H, r] and mask [B, H] → weight · their sum [B, r] (EASE sums
    over the history, unweighted: a recency-weighted mean ranked lower on Amazon Scientific). The weight is not
    trained by the loss (it starts at 0, so the towers train as without the channel); training/calibrate.py sets
    it on the validation split.

    The factored product E Eᵀ has a diagonal that EASE has not: a history item scores ``own`` (weight · |E_i|²) with
    itself for each time it is in the history. Where history items stay candidates (evaluate's ``history_kept``,
    ``recommend_including_history``, ``score``), that is taken off their scores, so the channel never pushes what
    the user already has."""

    def __init__(self, rank: int, neighbours: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.rank, self.neighbours = int(rank), int(neighbours)   # neighbours: see borrowed_blocks (recorded only)
        self.weight = self.add_weight(name="weight", shape=[], initializer="zeros", trainable=False)

    def set_weight(self, weight: float) -> None:
        self.weight.assign(float(weight))

    def describe(self) -> dict:
        """The channel as metrics.json and the model card record it: its rank, its weight, and how many nearest
        items an item without a block of its own borrows from."""
        return {"rank": self.rank, "weight": round(float(self.weight.numpy()), 6), "neighbours": self.neighbours}

    def call(self, blocks: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        # a product and a sum, not an einsum: oneDNN's einsum costs a served request ~0.1-0.2 ms on these small
        # shapes (docs/benchmarks.md)
        return self.weight * tf.reduce_sum(blocks * tf.cast(mask, blocks.dtype)[..., None], axis=1)

    def prefixes(self, blocks: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """[B, H, r]: at each position, ``call`` of the history up to and including it."""
        return self.weight * tf.cumsum(blocks * tf.cast(mask, blocks.dtype)[..., None], axis=1)

    def own(self, item_vectors: tf.Tensor) -> tf.Tensor:
        """[...] weight · |E_i|² of item vectors [..., D] that end with their block: an item's score with itself."""
        return self.weight * tf.reduce_sum(tf.square(item_vectors[..., -self.rank:]), axis=-1)
