"""The SavedModel's signatures: raw strings in, item ids and scores (or vectors) out, everything in the graph.

Why it exists: a TF Serving client sends ``user_id``, ``history`` and ``user_text`` strings and nothing else,
so tokenisation, id lookups (with OOV), both towers and the index all run inside the SavedModel. BERT runs only
for rows that carry request text: a row without text takes the user's stored profile vector (or none), so an
id-and-history request never pays for the encoder.

Signatures (B = batch, H = history length, any; "" pads a history):
- ``serving_default``: user_id [B], history [B, H], user_text [B] → item_ids [B, K], scores [B, K]; items already
  in the history are excluded. ``recommend_including_history`` is the same without that exclusion.
- ``embed_query``: the same inputs → embedding [B, D].
- ``embed_items``: item_id, title, description, category, brand [B] strings, price [B] float (NaN or ≤ 0 =
  unknown) → embedding [B, D]; works for items never seen in training (their id maps to the OOV row, their text
  is encoded).
- ``score``: the query inputs + candidates [B, C] → scores [B, C], for re-ranking a given candidate list.
"""

from __future__ import annotations

import tensorflow as tf

from towers.text_encoder import TextEncoder
from towers.text_fields import join_text_fields
from training.model import TwoTowerModel

STRING = tf.string
QUERY_SPECS = (tf.TensorSpec([None], STRING, name="user_id"), tf.TensorSpec([None, None], STRING, name="history"),
               tf.TensorSpec([None], STRING, name="user_text"))
ITEM_FIELDS = ("title", "description", "category", "brand")
ITEM_SPECS = (tf.TensorSpec([None], STRING, name="item_id"),
              *(tf.TensorSpec([None], STRING, name=f) for f in ITEM_FIELDS),
              tf.TensorSpec([None], tf.float32, name="price"))


class Recommender(tf.Module):
    """Towers + encoder + index, with one tf.function per signature."""

    def __init__(self, model: TwoTowerModel, encoder: TextEncoder, index: tf.Module, index_k: int, k: int,
                 history_len: int, item_text_columns: list[str]):
        super().__init__(name="recommender")
        self.model = model
        self.encoder = encoder
        self.index = index
        self.index_k = int(index_k)   # neighbours asked of the index: k plus room for excluded history items
        self.k = int(k)
        self.history_len = int(history_len)
        self.item_text_fields = [f for f in item_text_columns if f in ITEM_FIELDS]

    def _user_text_vectors(self, user_id: tf.Tensor, user_text: tf.Tensor) -> tf.Tensor:
        text = tf.strings.strip(user_text)
        has_text = tf.strings.length(text) > 0
        rows = tf.where(has_text)[:, 0]
        dim = self.encoder.dim
        encoded = tf.cond(tf.size(rows) > 0, lambda: self.encoder(tf.gather(text, rows)),
                          lambda: tf.zeros([0, dim], tf.float32))
        from_request = tf.scatter_nd(rows[:, None], encoded, tf.stack([tf.size(text, tf.int64), dim]))
        stored = self.model.user_table(user_id)["text_vec"]
        return tf.where(has_text[:, None], from_request, stored)

    def _query(self, user_id: tf.Tensor, history: tf.Tensor, user_text: tf.Tensor) -> tf.Tensor:
        features = {"user_id": user_id, "history": history[:, -self.history_len:],
                    "user_text_vec": self._user_text_vectors(user_id, user_text)}
        return self.model.user_tower(features, training=False)

    def _top_k(self, user_id, history, user_text, exclude_history: bool) -> dict:
        scores, ids = self.index(self._query(user_id, history, user_text), k=self.index_k)
        if exclude_history:
            seen = tf.reduce_any(tf.equal(ids[:, :, None], history[:, None, :]) & (history[:, None, :] != ""),
                                 axis=-1)
            scores = tf.where(seen, tf.fill(tf.shape(scores), float("-inf")), scores)
        top, position = tf.math.top_k(scores, k=self.k)
        ids = tf.gather(ids, position, batch_dims=1)
        return {"item_ids": tf.ensure_shape(ids, [None, self.k]), "scores": tf.ensure_shape(top, [None, self.k])}

    @tf.function(input_signature=QUERY_SPECS)
    def recommend(self, user_id, history, user_text):
        return self._top_k(user_id, history, user_text, exclude_history=True)

    @tf.function(input_signature=QUERY_SPECS)
    def recommend_including_history(self, user_id, history, user_text):
        return self._top_k(user_id, history, user_text, exclude_history=False)

    @tf.function(input_signature=QUERY_SPECS)
    def embed_query(self, user_id, history, user_text):
        return {"embedding": self._query(user_id, history, user_text)}  # [B, D]: the towers' shapes are static

    @tf.function(input_signature=ITEM_SPECS)
    def embed_items(self, item_id, title, description, category, brand, price):
        given = {"title": title, "description": description, "category": category, "brand": brand}
        text = join_text_fields([given[f] for f in self.item_text_fields])
        features = {"item_id": item_id, "text_vec": self.encoder(text), "category": category, "brand": brand,
                    "price": price}
        return {"embedding": self.model.item_tower(features, training=False)}

    @tf.function(input_signature=(*QUERY_SPECS, tf.TensorSpec([None, None], STRING, name="candidates")))
    def score(self, user_id, history, user_text, candidates):
        queries = self._query(user_id, history, user_text)
        unique, position = tf.unique(tf.reshape(candidates, [-1]))
        vectors = tf.gather(self.model.item_embeddings(unique), position)
        vectors = tf.reshape(vectors, [tf.shape(candidates)[0], tf.shape(candidates)[1], -1])
        return {"scores": tf.einsum("bd,bcd->bc", queries, vectors)}

    def signatures(self) -> dict:
        return {"serving_default": self.recommend, "recommend_including_history": self.recommend_including_history,
                "embed_query": self.embed_query, "embed_items": self.embed_items, "score": self.score}
