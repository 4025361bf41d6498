"""The models a user would pick instead of ours, each from its own library, behind one small interface.

Why it exists: bench/quality.py must rank every model on the same cases with the same full-catalogue protocol
(training.evaluate.ranks), so each peer only has to say how it fits the training interactions and how it scores
the whole catalogue for a batch of evaluation cases. Every peer carries a small grid of hyper-parameters; the
benchmark picks the best setting on the validation split and reports the test split with it.

Peers: popularity, implicit's ALS, BPR and item-kNN (BM25-weighted cosine), EASE (numpy), LightFM WARP (pure, and
with item text features), the TFRS tutorial's ID-only two tower, and text similarity (user = recency-weighted mean
of their history items' vectors from our run's text encoder: MiniLM unless the dataset's config names another).
implicit and lightfm are benchmark-only dependencies (bench/install_peers.sh), never runtime ones.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from training.examples import Examples


@dataclasses.dataclass
class TrainData:
    """The training split as every peer needs it: ids, a user × item matrix, item texts and their vectors."""

    item_ids: list[str]                 # catalogue order = the columns of every score matrix
    user_ids: list[str]                 # users with training interactions = the rows of user_items
    user_items: sp.csr_matrix           # [users, items] interaction counts in the training split
    interactions: tuple[np.ndarray, np.ndarray]  # (user rows, item columns) of each training interaction
    item_texts: list[str]               # the joined item text the towers read
    item_text_vectors: np.ndarray       # [items, dim] L2-normalised vectors of our run's encoder (its cache)
    encoder: str = "minilm"             # that encoder's model.encoder value
    seed: int = 0

    def __post_init__(self) -> None:
        self.item_index = {item: row for row, item in enumerate(self.item_ids)}
        self.user_index = {user: row for row, user in enumerate(self.user_ids)}

    def history_matrix(self, part: Examples) -> sp.csr_matrix:
        """[cases, items] 0/1: the items each case's user had interacted with before its target."""
        rows, cols = [], []
        for row, seen in enumerate(part.exclude):
            known = [self.item_index[i] for i in seen if i in self.item_index]
            rows += [row] * len(known)
            cols += known
        return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(part), len(self.item_ids)))

    def user_rows(self, part: Examples) -> np.ndarray:
        """Training-user row of each case (-1 for a user without training interactions)."""
        return np.array([self.user_index.get(u, -1) for u in part.user_id], np.int64)


class Peer:
    """``fit`` on the training split with one setting of ``grid``, then ``score`` cases × catalogue."""

    name = "peer"
    grid: Sequence[dict] = ({},)

    def fit(self, data: TrainData, **params) -> None:
        self.data = data

    def score(self, part: Examples) -> np.ndarray:
        raise NotImplementedError


def _factor_scores(user_vectors: np.ndarray, item_vectors: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Dot products; a case whose user the model never saw scores every item 0 (random order, by the ties rule)."""
    scores = user_vectors @ item_vectors.T
    scores[~known] = 0.0
    return scores


class Popularity(Peer):
    name = "popularity"

    def fit(self, data: TrainData, **params) -> None:
        super().fit(data)
        self.counts = np.asarray(data.user_items.sum(axis=0)).ravel().astype(np.float64)

    def score(self, part: Examples) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(part), self.counts.size))


class ImplicitALS(Peer):
    """Weighted matrix factorisation (Hu, Koren & Volinsky 2008). Users are folded in from their full history at
    scoring time (``recalculate_user``), so the test cases see their validation item too, as our towers do."""

    name = "ALS (implicit)"
    grid = tuple({"factors": f, "regularization": r, "alpha": a}
                 for f in (64, 128) for r in (0.01, 0.1) for a in (1.0, 10.0))

    def fit(self, data: TrainData, factors: int = 64, regularization: float = 0.01, alpha: float = 1.0) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        super().fit(data)
        self.model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                             iterations=15, random_state=data.seed)
        self.model.fit(data.user_items, show_progress=False)

    def score(self, part: Examples) -> np.ndarray:
        history = self.data.history_matrix(part)
        users = self.model.recalculate_user(np.arange(len(part)), history)
        return _factor_scores(users, self.model.item_factors, np.asarray(history.sum(axis=1)).ravel() > 0)


class ImplicitBPR(Peer):
    """Bayesian personalised ranking (Rendle et al. 2009). No fold-in exists for it: a case uses the user's
    trained factors."""

    name = "BPR (implicit)"
    grid = tuple({"factors": f, "learning_rate": lr, "regularization": r}
                 for f in (64, 128) for lr in (0.01, 0.05) for r in (0.001, 0.01))

    def fit(self, data: TrainData, factors: int = 64, learning_rate: float = 0.01,
            regularization: float = 0.01) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        super().fit(data)
        self.model = BayesianPersonalizedRanking(factors=factors, learning_rate=learning_rate,
                                                 regularization=regularization, iterations=100,
                                                 random_state=data.seed)
        self.model.fit(data.user_items, show_progress=False)

    def score(self, part: Examples) -> np.ndarray:
        rows = self.data.user_rows(part)
        return _factor_scores(self.model.user_factors[np.maximum(rows, 0)], self.model.item_factors, rows >= 0)


class ItemKNN(Peer):
    """Item-based nearest neighbours (implicit's BM25-weighted cosine): an item scores the sum of its similarities
    to the case's history items."""

    name = "item-kNN (implicit)"
    grid = tuple({"neighbours": k, "bm25": b} for k in (20, 100, 500) for b in (False, True))

    def fit(self, data: TrainData, neighbours: int = 100, bm25: bool = True) -> None:
        from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

        super().fit(data)
        self.model = (BM25Recommender(K=neighbours) if bm25 else CosineRecommender(K=neighbours))
        self.model.fit(data.user_items, show_progress=False)

    def score(self, part: Examples) -> np.ndarray:
        return np.asarray((self.data.history_matrix(part) @ self.model.similarity).todense())


class EASE(Peer):
    """Embarrassingly shallow autoencoder (Steck, WWW 2019): the closed-form linear item-to-item model, whole (no
    library ships it; its closed form is four lines of numpy). Our towers carry it factored as the item-to-item
    channel (towers/item_item.py), so it is the peer that channel must be compared with alone."""

    name = "EASE"
    grid = tuple({"l2": l2} for l2 in (50.0, 200.0, 500.0))

    def fit(self, data: TrainData, l2: float = 200.0) -> None:
        super().fit(data)
        x = (data.user_items > 0).astype(np.float64)
        p = np.linalg.inv((x.T @ x).toarray() + l2 * np.eye(x.shape[1]))
        self.weights = (-p / np.diag(p)[None, :]).astype(np.float32)
        np.fill_diagonal(self.weights, 0.0)

    def score(self, part: Examples) -> np.ndarray:
        return np.asarray(self.data.history_matrix(part) @ self.weights)


def text_tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[\u4e00-\u9fff]", text.lower())


class LightFMWarp(Peer):
    """LightFM (Kula 2015) with the WARP loss; ``text=True`` adds the words of each item's text as item features
    (words on at least two items, each item keeping its identity feature), the hybrid mode LightFM is known for."""

    name = "LightFM WARP"
    grid = tuple({"components": c, "epochs": e, "learning_rate": 0.05} for c in (64, 128) for e in (20, 50))

    def __init__(self, text: bool = False):
        self.text = text
        if text:
            self.name = "LightFM WARP + text"

    def fit(self, data: TrainData, components: int = 64, epochs: int = 20, learning_rate: float = 0.05) -> None:
        from lightfm import LightFM

        super().fit(data)
        self.item_features = self._item_features(data) if self.text else None
        self.model = LightFM(no_components=components, loss="warp", learning_rate=learning_rate,
                             random_state=data.seed)
        users, items = data.interactions
        matrix = sp.coo_matrix((np.ones(len(users), np.float32), (users, items)),
                               shape=(len(data.user_ids), len(data.item_ids)))
        self.model.fit(matrix.tocsr().tocoo(), item_features=self.item_features, epochs=epochs, num_threads=2)
        item_bias, item_vectors = self.model.get_item_representations(self.item_features)
        user_bias, user_vectors = self.model.get_user_representations()
        self.items = np.hstack([item_vectors, item_bias[:, None], np.ones((len(item_bias), 1), np.float32)])
        self.users = np.hstack([user_vectors, np.ones((len(user_bias), 1), np.float32), user_bias[:, None]])

    @staticmethod
    def _item_features(data: TrainData) -> sp.csr_matrix:
        tokens = [sorted(set(text_tokens(t))) for t in data.item_texts]
        counts = Counter(w for words in tokens for w in words)
        vocab = {w: i for i, w in enumerate(sorted(w for w, c in counts.items() if c >= 2))}
        rows, cols, values = list(range(len(tokens))), list(range(len(tokens))), [1.0] * len(tokens)
        for row, words in enumerate(tokens):
            kept = [vocab[w] for w in words if w in vocab]
            for col in kept:   # identity weight 1, the words share another 1 (LightFM sums feature vectors)
                rows.append(row)
                cols.append(len(tokens) + col)
                values.append(1.0 / len(kept))
        return sp.csr_matrix((np.array(values, np.float32), (rows, cols)),
                             shape=(len(tokens), len(tokens) + len(vocab)))

    def score(self, part: Examples) -> np.ndarray:
        rows = self.data.user_rows(part)
        return _factor_scores(self.users[np.maximum(rows, 0)], self.items, rows >= 0)


class TFRSIdTwoTower(Peer):
    """The TFRS retrieval tutorial's model: a user-id embedding and an item-id embedding trained with
    ``tfrs.tasks.Retrieval`` (in-batch softmax), nothing else."""

    name = "TFRS two tower (ids only)"
    grid = tuple({"dim": d, "epochs": e} for d in (32, 64) for e in (5, 20))

    def fit(self, data: TrainData, dim: int = 64, epochs: int = 5, batch_size: int = 1024,
            learning_rate: float = 0.1) -> None:
        import tensorflow as tf
        import tensorflow_recommenders as tfrs
        import tf_keras

        super().fit(data)
        tf_keras.utils.set_random_seed(data.seed)
        users = tf_keras.Sequential([tf_keras.layers.StringLookup(vocabulary=data.user_ids, mask_token=None),
                                     tf_keras.layers.Embedding(len(data.user_ids) + 1, dim)])
        items = tf_keras.Sequential([tf_keras.layers.StringLookup(vocabulary=data.item_ids, mask_token=None),
                                     tf_keras.layers.Embedding(len(data.item_ids) + 1, dim)])

        class Tutorial(tfrs.Model):
            def __init__(self):
                super().__init__()
                self.users, self.items, self.task = users, items, tfrs.tasks.Retrieval()

            def compute_loss(self, features, training=False):
                return self.task(self.users(features["user"]), self.items(features["item"]))

        model = Tutorial()
        model.compile(optimizer=tf_keras.optimizers.Adagrad(learning_rate))
        user_rows, item_cols = data.interactions
        frame = {"user": np.array(data.user_ids, object)[user_rows], "item": np.array(data.item_ids, object)[item_cols]}
        order = np.random.default_rng(data.seed).permutation(len(user_rows))
        dataset = tf.data.Dataset.from_tensor_slices({k: v[order].astype(str) for k, v in frame.items()})
        model.fit(dataset.shuffle(100_000, seed=data.seed).batch(batch_size), epochs=epochs, verbose=0)
        self.item_vectors = items(tf.constant(data.item_ids)).numpy()
        self.user_vectors = users(tf.constant(data.user_ids)).numpy()

    def score(self, part: Examples) -> np.ndarray:
        rows = self.data.user_rows(part)
        return _factor_scores(self.user_vectors[np.maximum(rows, 0)], self.item_vectors, rows >= 0)


# model.encoder → how the tables name its text-similarity peer
ENCODER_LABELS = {"minilm": "MiniLM", "tiny": "tiny BERT"}


class TextSimilarity(Peer):
    """No training at all: a user is the recency-weighted mean of their last ``recent`` history items' vectors from
    our run's text encoder, and items rank by cosine to it. What that encoder alone gives; named after it."""

    name = "text similarity"
    grid = tuple({"recent": r, "decay": d} for r in (1, 5, 20) for d in (1.0, 0.7))

    def fit(self, data: TrainData, recent: int = 5, decay: float = 1.0) -> None:
        super().fit(data)
        self.recent, self.decay = recent, decay
        self.name = f"{ENCODER_LABELS.get(data.encoder, data.encoder)} text similarity"

    def score(self, part: Examples) -> np.ndarray:
        vectors = self.data.item_text_vectors
        history = part.history[:, -self.recent:]
        weights = self.decay ** np.arange(history.shape[1] - 1, -1, -1, dtype=np.float64)
        users = np.zeros((len(part), vectors.shape[1]), np.float32)
        for row, items in enumerate(history):
            known = [(self.data.item_index[i], w) for i, w in zip(items, weights) if i in self.data.item_index]
            if known:
                index, weight = zip(*known)
                users[row] = np.average(vectors[list(index)], axis=0, weights=weight)
        return users @ vectors.T


def all_peers(with_text: bool) -> list[Peer]:
    peers: list[Peer] = [Popularity(), ImplicitALS(), ImplicitBPR(), ItemKNN(), EASE(), LightFMWarp(),
                         TFRSIdTwoTower()]
    if with_text:
        peers += [LightFMWarp(text=True), TextSimilarity()]
    return peers
