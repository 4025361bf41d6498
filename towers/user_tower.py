"""The user tower: the user's own text ⊕ pooled history items ⊕ user-id embedding → unit vector.

Why it exists: it turns whatever a request knows about a user into a query vector in the item space. History
items go through the item tower itself (looked up in the catalogue table by id), so a user is described with
the same text features as the items; the pooled history is also added to the output as a residual, which keeps
a user with little else to go on next to what they viewed. Every part is optional per request: a new user with
text only, a known id with no text, an unknown id with a history all get a vector. With the `causal` history
encoder, training asks for the vector of every prefix of a sequence at once (``every_position``); a request gets
the last one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf
import tf_keras

from towers import script_centering
from towers.config import TowerConfig
from towers.feature_table import FeatureTable
from towers.history_attention import HistoryAttention
from towers.history_causal import CausalHistory
from towers.history_pooling import HistoryPooling
from towers.id_embedding import IdEmbedding
from towers.item_item import ItemItemQuery
from towers.item_tower import ItemTower
from towers.mlp import ProjectionHead
from towers.repeat import RepeatOffset
from towers.seeded_mask import SeededMask
from towers.semantic_channel import SemanticQuery
from towers.text_encoder import TextEncoder
from towers.tracking import forget


class UserTower(tf_keras.Model):
    """features {user_id [B], history [B, H] ("" = padding, most recent last), user_text_vec [B, T] |
    user_text [B]} → [B, embedding_dim], or with ``semantic_channel`` [B, embedding_dim + T] (semantic_channel.py),
    where a search request may add ``search_text_vec`` [B, T] | ``search_text`` [B] (the channel's search part).
    With ``lexical_dim`` the output ends with the search's words block [B, lexical_dim] (zeros without a search),
    which needs the raw ``search_text`` (beside ``search_text_vec`` where that is given). With ``item_item_rank``
    the output ends with the weighted sum of the history items' item-to-item blocks [B, item_item_rank]
    (towers/item_item.py), except in training, where neither tower carries the blocks (their weight is 0 then).

    Instead of ``history``, a caller that already holds the history items' vectors (the exported model keeps every
    catalogue item's vector) passes ``history_vec`` [B, H, D] and ``history_known`` [B, H]; the catalogue table and
    the item tower are then not called at all.
    """

    def __init__(self, config: TowerConfig, id_vocabulary: Sequence[str], item_tower: ItemTower,
                 catalog: FeatureTable, text_dim: int, encoder: TextEncoder | None = None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        features = set(config.user_features)
        self.item_tower = item_tower if "history" in features else None
        self.catalog = catalog if "history" in features else None
        self.pooling = HistoryPooling(config.history_decay, name="history_pooling")
        sequence = {"attention": HistoryAttention, "causal": CausalHistory}.get(config.history_encoder)
        self.attention = (sequence(config.embedding_dim, config.history_layers, config.history_heads,
                                   config.history_len, config.history_dropout, config.seed,
                                   name=f"history_{config.history_encoder}")
                          if sequence is not None and self.item_tower is not None else None)
        self.encoder = encoder if "text" in features else None
        self.text_dim = int(text_dim)
        self.text_projection = (tf_keras.layers.Dense(config.text_projection_dim, name="text_projection")
                                if "text" in features else None)
        self.user_id = (IdEmbedding(id_vocabulary, config.id_dim, config.id_dropout, config.seed + 1,
                                    name="user_id") if "id" in features else None)
        self.head = ProjectionHead(config.hidden_units, config.embedding_dim, name="head")
        # A share of training examples of users with text is shown as a brand-new user (history and id hidden,
        # only the user's text left), so that a text-only request (a search query, a profile) lands somewhere
        # sensible.
        self.cold_user = SeededMask(config.cold_user_dropout, config.seed + 3, name="cold_user_dropout")
        self.semantic = (SemanticQuery(words=bool(config.lexical_dim), name="semantic_channel")
                         if config.semantic_channel else None)
        self.lexical = item_tower.lexical   # the items' own: the same idf, the same sketch
        self.item_item = (ItemItemQuery(config.item_item_rank, config.item_item_neighbours, name="item_item")
                          if config.item_item_rank else None)
        self.repeat = RepeatOffset(name="repeat")   # applied to scores, not to the vector (towers/repeat.py)

    def drop_catalog(self) -> None:
        """Forgets the catalogue table, for a caller that always passes ``history_vec`` (the exported model), so
        that a SavedModel does not carry every item's text features a second time. A call without ``history_vec``
        then counts every history item as unknown."""
        forget(self, "catalog")   # not saved either

    def drop_encoder(self) -> None:
        """Forgets the text encoder, for a caller that always passes text vectors (the exported model encodes text
        itself, from its own copy of the weights: export/packed_encoder.py), so that the tower does not carry the
        encoder's weights into a SavedModel. A call with raw text then fails with a clear error."""
        forget(self, "encoder")

    def history_vectors(self, history: tf.Tensor, training: bool | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """[B, H] ids → ([B, H, D] item-tower vectors, [B, H] mask of catalogue items). Each distinct id in
        the batch goes through the item tower once."""
        if self.catalog is None:
            shape = tf.shape(history)
            return tf.zeros([shape[0], shape[1], self.item_dim]), tf.zeros(shape, tf.bool)
        flat = tf.reshape(history, [-1])
        unique, position = tf.unique(flat)
        features = self.catalog(unique)
        features["item_id"] = unique
        vectors = tf.gather(self.item_tower(features, training=training), position)
        shape = tf.shape(history)
        vectors = tf.reshape(vectors, [shape[0], shape[1], vectors.shape[-1]])   # item_dim; less the block in training
        mask = tf.gather(features["known"], position)
        return vectors, tf.reshape(mask, tf.shape(history))

    @property
    def item_dim(self) -> int:
        """The item tower's output width: the learned vector, then (semantic channel) the item's text vector, then
        (``lexical_dim``) its words, then (``item_item_rank``, not in training) its item-to-item block."""
        return self.config.embedding_dim + (self.text_dim if self.semantic is not None else 0) + \
            self.config.lexical_dim + self.config.item_item_rank

    def text_vector(self, features: Mapping[str, tf.Tensor], name: str = "user_text") -> tuple[tf.Tensor, tf.Tensor]:
        """([B, T] text vector, [B, 1] has-text flag) of feature ``name`` (``NAME_vec``: the encoder's vectors, or
        ``NAME``: raw strings); zeros where the row has no text."""
        if f"{name}_vec" in features:
            vector = features[f"{name}_vec"]
            has_text = tf.reduce_any(tf.not_equal(vector, 0.0), axis=-1, keepdims=True)
        else:
            text = tf.reshape(features[name], [-1])
            has_text = tf.strings.length(tf.strings.strip(text))[:, None] > 0
            if self.encoder is None:
                raise ValueError(f"user tower: features carry raw '{name}' but the tower has no text encoder")
            vector = self.encoder(text) * tf.cast(has_text, tf.float32)
        return vector, tf.cast(has_text, tf.float32)

    @property
    def causal(self) -> bool:
        """The history encoder gives a summary per prefix (``every_position`` training)."""
        return isinstance(self.attention, CausalHistory)

    def call(self, features: Mapping[str, tf.Tensor], training: bool | None = None,
             every_position: bool = False) -> tf.Tensor:
        """[B, out]; with ``every_position`` (the `causal` history encoder) [B, H, out]: the vector of each prefix
        of the history, what a request with that prefix as its history gets."""
        if every_position and not self.causal:
            raise ValueError("user tower: every_position needs model.history_encoder 'causal'")
        parts, residual, history_text, has_history, item_item = [], None, None, None, None
        user_id = features["user_id"]
        text = self.text_vector(features) if self.text_projection is not None else None
        # Only a user with text can be shown as a text-only newcomer: without text nothing would be left.
        cold = self.cold_user(tf.shape(user_id), training=training)                  # [B]
        cold = cold & (text[1][:, 0] > 0) if text is not None else tf.zeros_like(cold)
        if self.item_tower is not None:
            if "history_vec" in features:
                vectors, mask = features["history_vec"], features["history_known"]
            else:
                vectors, mask = self.history_vectors(features["history"], training=training)
            mask = mask & ~cold[:, None]
            if self.item_item is not None and not training:   # [.., block] per item (ItemTower; not in training)
                blocks = vectors[..., -self.config.item_item_rank:]   # the parts before it are sliced below
                item_item = (self.item_item.prefixes if every_position else self.item_item)(blocks, mask)
            # [learned, text] per item (ItemTower; text with the semantic channel): both get the same
            # recency-weighted mean, which is taken number by number, so one pooling serves both parts
            dim = self.config.embedding_dim
            pool = self.pooling.prefixes if every_position else self.pooling
            pooled, count = pool(vectors[..., :dim + (self.text_dim if self.semantic is not None else 0)], mask)
            residual, vectors = pooled[..., :dim], vectors[..., :dim]
            if self.semantic is not None:
                history_text, has_history = pooled[..., dim:], tf.cast(count > 0, tf.float32)
            if self.causal:   # the blocks correct each prefix's recency-weighted mean: untrained, they answer it
                change = self.attention(vectors, mask, training=training, change=True)
                residual = residual + (change if every_position else change[:, -1])
            elif self.attention is not None:
                residual = self.attention(vectors, mask, training=training)
            if every_position:   # one row per (user, prefix) from here on, user after user: [B * H, ...]
                length = tf.shape(vectors)[1]
                residual, count = _rows(residual), _rows(count)
                history_text = None if history_text is None else _rows(history_text)
                item_item = None if item_item is None else _rows(item_item)
                has_history = None if has_history is None else _rows(has_history)
            parts += [residual, count]
        # per-user parts, repeated for every prefix of the history under every_position
        steps = (lambda x: tf.repeat(x, length, axis=0)) if every_position else (lambda x: x)
        if text is not None:
            vector, has_text = text
            parts += [steps(self.text_projection(vector) * has_text), steps(has_text)]
            text = steps(vector), steps(has_text)
        if self.user_id is not None:
            parts.append(steps(self.user_id(tf.where(cold, "", user_id), training=training)))
        out = self.head(tf.concat(parts, axis=-1), residual=residual)
        if self.semantic is not None:
            has_text = text[1] if text is not None else tf.zeros_like(out[:, :1])
            semantic = self.semantic(text[0] if text is not None else None, has_text, history_text, has_history)
            searched = "search_text_vec" in features or "search_text" in features   # a search (serving only)
            if searched:
                semantic = semantic + steps(self.semantic.search(self.text_vector(features, "search_text")[0]))
            tail = [semantic]
            if self.lexical is not None:
                if searched and "search_text" not in features and "search_words" not in features:
                    raise ValueError("user tower: a search request to a model with model.lexical_dim needs the raw "
                                     "'search_text' (its words) or their 'search_words' beside 'search_text_vec'")
                if not searched:
                    words = tf.zeros([tf.shape(out)[0], self.config.lexical_dim])
                else:   # search_words: the lexical vectors, computed by the caller (the export, with the text's)
                    chinese = features.get("search_chinese")   # the search's script, given by the export
                    if chinese is None and "search_text" in features:
                        chinese = script_centering.chinese(features["search_text"])
                    words = self.semantic.words(steps(features["search_words"] if "search_words" in features else
                                                      self.lexical(features["search_text"])),
                                                None if chinese is None else steps(chinese))
                tail.append(words)
        else:
            tail = []
        if item_item is not None:   # summed apart above, last in the query
            tail.append(item_item)
        out = tf.concat([out, *tail], axis=-1) if tail else out
        return tf.reshape(out, [-1, length, out.shape[-1]]) if every_position else out


def _rows(x: tf.Tensor) -> tf.Tensor:
    """[B, H, F] → [B * H, F]."""
    return tf.reshape(x, [-1, x.shape[-1]])
