"""The item tower: an item's text vector ⊕ id embedding ⊕ category/brand/price features → unit vector.

Why it exists: it is the one function from "what we know about an item" to its retrieval vector. It takes its
text either as a precomputed vector (``text_vec``, the frozen-encoder fast path) or as a raw string (``text``,
which it encodes itself), so training, evaluation and the exported model share the same weights and code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from towers.config import TowerConfig
from towers.id_embedding import IdEmbedding
from towers.lexical import LexicalVectors
from towers.mlp import ProjectionHead
from towers.seeded_mask import SeededMask
from towers.text_encoder import TextEncoder
from towers.tracking import forget


class ItemTower(tf_keras.Model):
    """features {item_id, text_vec | text, category, brand, price} [B] → [B, embedding_dim], or with
    ``semantic_channel`` [B, embedding_dim + text dim]: the learned vector, then the item's unit text vector; with
    ``lexical_dim`` too, then the item's lexical vector (towers/lexical.py: ``words_vec`` [B, W] where given, else
    computed from the raw ``text``); with ``item_item_rank`` last the item's item-to-item block
    (``item_item_vec`` [B, r] where given, else zeros: an item without training interactions), except in training
    (the channel's weight is 0 then)."""

    def __init__(self, config: TowerConfig, id_vocabulary: Sequence[str], category_vocabulary: Sequence[str],
                 brand_vocabulary: Sequence[str], price_log_mean_std: tuple[float, float],
                 text_dim: int, encoder: TextEncoder | None = None, lexical: LexicalVectors | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.config = config
        if bool(config.lexical_dim) != (lexical is not None):
            raise ValueError("item tower: model.lexical_dim and the lexical layer go together")
        self.lexical = lexical
        features = set(config.item_features)
        self.encoder = encoder if "text" in features else None
        self.text_projection = (tf_keras.layers.Dense(config.text_projection_dim, name="text_projection")
                                if "text" in features else None)
        self.text_dim = int(text_dim)
        self.item_id = (IdEmbedding(id_vocabulary, config.id_dim, config.id_dropout, config.seed, name="item_id")
                        if "id" in features else None)
        self.category = (IdEmbedding(category_vocabulary, config.categorical_dim, name="category")
                         if "category" in features else None)
        self.brand = (IdEmbedding(brand_vocabulary, config.categorical_dim, name="brand")
                      if "brand" in features else None)
        self.price_log_mean_std = tuple(float(x) for x in price_log_mean_std)
        self.use_price = "price" in features
        # Known prices are hidden as often as ids are, so an item whose price is unknown (a new listing, a shop
        # without prices) is not out of distribution.
        self.price_dropout = SeededMask(config.id_dropout, config.seed + 2, name="price_dropout")
        self.head = ProjectionHead(config.hidden_units, config.embedding_dim, name="head")

    def drop_encoder(self) -> None:
        """Forgets the text encoder, for a caller that always passes text vectors (the exported model encodes text
        itself, from its own copy of the weights: export/packed_encoder.py), so that the tower does not carry the
        encoder's weights into a SavedModel. A call with raw text then fails with a clear error."""
        forget(self, "encoder")

    def text_vector(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        if "text_vec" in features:
            return features["text_vec"]
        if self.encoder is None:
            raise ValueError("item tower: features carry raw 'text' but the tower has no text encoder")
        return self.encoder(features["text"])

    def call(self, features: Mapping[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        parts = []
        text = self.text_vector(features) if self.text_projection is not None else None
        if text is not None:
            parts.append(self.text_projection(text))
        if self.item_id is not None:
            parts.append(self.item_id(features["item_id"], training=training))
        if self.category is not None:
            parts.append(self.category(features["category"]))
        if self.brand is not None:
            parts.append(self.brand(features["brand"]))
        if self.use_price:
            price = tf.cast(features["price"], tf.float32)
            missing = tf.math.is_nan(price) | (price <= 0) | self.price_dropout(tf.shape(price), training=training)
            mean, std = self.price_log_mean_std
            scaled = (tf.math.log1p(tf.where(missing, tf.zeros_like(price), price)) - mean) / std
            parts.append(tf.stack([tf.where(missing, tf.zeros_like(scaled), scaled),
                                   tf.cast(missing, tf.float32)], axis=-1))
        learned = self.head(tf.concat(parts, axis=-1))
        parts = [learned]
        if self.config.semantic_channel:
            # [learned, text]: the user tower's [u, β·q_text] dotted with it adds β·cos(q_text, item text)
            parts.append(tf.math.l2_normalize(text, axis=-1))
            if self.lexical is not None:   # [.., words]: a search's [.., β_words·s_words] adds its words' match
                parts.append(features["words_vec"] if "words_vec" in features else self.lexical(features["text"]))
        # [.., block]: the query's weighted sum of its history's blocks (item_item.py). Not while training: the
        # channel's weight is 0 then, and the block only doubled a step's time (docs/benchmarks.md).
        if self.config.item_item_rank and not training:
            parts.append(features["item_item_vec"] if "item_item_vec" in features else
                         tf.zeros([tf.shape(learned)[0], self.config.item_item_rank]))
        return tf.concat(parts, axis=-1) if len(parts) > 1 else learned


def price_statistics(prices: np.ndarray) -> tuple[float, float]:
    """Mean and std of log1p(price) over the known, positive prices (0, 1 when there are none)."""
    prices = np.asarray(prices, np.float64)
    known = np.log1p(prices[np.isfinite(prices) & (prices > 0)])
    if known.size == 0:
        return 0.0, 1.0
    return float(known.mean()), float(max(known.std(), 1e-3))
