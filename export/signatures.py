"""The SavedModel's signatures: raw strings in, item ids, scores and explanations (or vectors) out, in the graph.

Why it exists: a TF Serving client sends ``user_id``, ``history`` and ``user_text`` strings and nothing else,
so tokenisation, id lookups (with OOV), both towers, the index, filters, diversity and explanations all run inside
the SavedModel. BERT runs only for rows that carry request text: a row without text takes the user's stored
profile vector (or none), so an id-and-history request never pays for the encoder. History items are looked up
in the served catalogue (``export/catalog.py``), which holds every item's vector, so the item tower runs only
for ``embed_items``.

Signatures (B = batch, H = history length, any; "" pads a history):
- ``serving_default``: user_id [B], history [B, H], user_text [B], and the optional inputs below → item_ids
  [B, K], scores [B, K], because [B, K], because_score [B, K], because_words [B, K]; items already in the history
  are excluded. ``recommend_including_history`` is the same without that exclusion.
- ``embed_query``: user_id, history, user_text (, search_query) → embedding [B, D].
- ``embed_items``: item_id, title, description, category, brand [B] strings, price [B] float (NaN or ≤ 0 =
  unknown) → embedding [B, D]; works for items never seen in training (their id maps to the OOV row, their text
  is encoded).
- ``score``: user_id, history, user_text (, search_query) + candidates [B, C] → scores [B, C] (-inf for ids not in
  the catalogue),
  for re-ranking a given candidate list.

Optional inputs (SignatureDef ``defaults``; TF Serving fills a missing one from there, and so does
``twotower serve``): ``diversity`` float [B] (0 = off), ``exclude`` string [B, E] (ids never returned),
``max_per_category`` int32 [B] (0 = no cap), and in every query signature ``search_query`` string [B] ("" = none):
what the shopper typed into a search box, as opposed to ``user_text``, the user's own text. It goes to the
semantic channel's search part (towers/semantic_channel.py), where the words weigh far more than a user's text
does; a model without the channel reads it as request text, joined after ``user_text``. A default has one row and
the graph broadcasts it to the batch, as it does any of these inputs sent with one row. A model exported before
``search_query`` existed keeps its signatures without it (``index add`` saves a loaded one again).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2

from export.catalog import ServedCatalog
from export.diversity import group_ids, rerank
from export.explain import matching_words, strongest_history_item
from export.packed_encoder import PackedWeights
from ingest.privacy import HashKey, hash_ids
from towers import script_centering
from towers.feature_table import FeatureTable
from towers.item_item import borrowed_blocks
from towers.item_tower import ItemTower
from towers.text_encoder import TextEncoder
from towers.text_fields import join_text_fields
from towers.user_tower import UserTower

# Every function of the export is plain graph code (its branches on tensors are written as tf.cond / while_loop),
# so AutoGraph has nothing to convert; without it, the first export in a process (every `twotower export`) no longer
# waits while AutoGraph rewrites each Keras layer's and transformer's call it reaches (~15% of a demo export:
# docs/benchmarks.md), and control flow it would have converted silently fails at trace time instead.
graph_function = functools.partial(tf.function, autograph=False)


def unlowered_cond(predicate: tf.Tensor, true_fn, false_fn):
    """``tf.cond`` kept as one ``If`` op that calls the branch taken as a function, instead of being lowered to
    Switch and Merge nodes. For a branch that captures many tensors (BERT's ~200 weights) a lowered cond puts a
    Switch node in front of each, and every request pays for all of them, whichever branch it takes
    (docs/benchmarks.md)."""
    graph = tf.compat.v1.get_default_graph()
    before = len(graph.get_operations())
    outputs = tf.cond(predicate, true_fn, false_fn)
    for op in graph.get_operations()[before:]:
        if op.type in ("If", "StatelessIf"):
            op._set_attr("_lower_using_switch_merge", attr_value_pb2.AttrValue(b=False))
    return outputs


STRING = tf.string
QUERY_SPECS = (tf.TensorSpec([None], STRING, name="user_id"), tf.TensorSpec([None, None], STRING, name="history"),
               tf.TensorSpec([None], STRING, name="user_text"))
SEARCH_SPEC = tf.TensorSpec([None], STRING, name="search_query")
CANDIDATES_SPEC = tf.TensorSpec([None, None], STRING, name="candidates")
OPTIONAL_SPECS = (tf.TensorSpec([None], tf.float32, name="diversity"),
                  tf.TensorSpec([None, None], STRING, name="exclude"),
                  tf.TensorSpec([None], tf.int32, name="max_per_category"))
ITEM_FIELDS = ("title", "description", "category", "brand")
ITEM_SPECS = (tf.TensorSpec([None], STRING, name="item_id"),
              *(tf.TensorSpec([None], STRING, name=f) for f in ITEM_FIELDS),
              tf.TensorSpec([None], tf.float32, name="price"))
RECOMMEND_OUTPUTS = ("item_ids", "scores", "because", "because_score", "because_words")
DIVERSITY_POOL = 3   # diversity re-ranks the top 3 × K candidates ...
CAP_POOL = 10        # ... and max_per_category the top 10 × K (at least CAP_POOL_MIN): one category can fill
CAP_POOL_MIN = 500   # the top 3 × K


def request_text(user_text: tf.Tensor, search_query: tf.Tensor) -> tf.Tensor:
    """A request's words: ``user_text`` and ``search_query`` joined ([B] strings, either may be empty)."""
    return tf.strings.strip(tf.strings.join([user_text, search_query], separator=" "))


# B008 below: tensor defaults are the point: tf.saved_model.save records them as the SignatureDef's defaults. With
# ``search`` false (a loaded model exported before ``search_query``), the input is left out of the signature: the
# wrapped function does not take it, and its Python default is never used.
NO_SEARCH = tf.constant([""])


def takes_search(function) -> bool:
    """Whether a query function (the Recommender's, or a loaded export's) takes ``search_query``."""
    return any(spec.name == SEARCH_SPEC.name for spec in function.input_signature)


def _if_search(search: bool, value) -> tuple:
    """``(value,)`` where the model reads searches, else ``()``: the trailing ``search_query`` spec of a signature
    and the argument it passes on."""
    return (value,) if search else ()


def recommend_signature(recommend: Callable, search: bool = True) -> tf.function:
    """The serving signature over ``recommend(user_id, history, user_text, diversity, exclude, max_per_category,
    search_query)``: the optional inputs get tensor defaults, which ``tf.saved_model.save`` records in
    ``SignatureDef.defaults``. Export wraps the Recommender's functions with it, and ``index add`` wraps a loaded
    model's the same way."""

    def signature(user_id, history, user_text, diversity=tf.constant([0.0]),  # noqa: B008
                  exclude=tf.constant([[]], STRING), max_per_category=tf.constant([0]),  # noqa: B008
                  search_query=NO_SEARCH):
        checks = [  # refused (INVALID_ARGUMENT naming the input), never clamped
            tf.debugging.Assert(tf.reduce_all((diversity >= 0.0) & (diversity <= 1.0)),
                                ["input tensor 'diversity' must be in [0, 1] (0 = off), got", diversity]),
            tf.debugging.Assert(tf.reduce_all(max_per_category >= 0),
                                ["input tensor 'max_per_category' must be >= 0 (0 = no cap), got", max_per_category])]
        with tf.control_dependencies(checks):
            return recommend(user_id, history, user_text, diversity, exclude, max_per_category,
                             *_if_search(search, search_query))

    return graph_function(signature,
                          input_signature=(*QUERY_SPECS, *OPTIONAL_SPECS, *_if_search(search, SEARCH_SPEC)))


def embed_query_signature(embed_query: Callable, search: bool = True) -> tf.function:
    """``embed_query(user_id, history, user_text, search_query)`` with ``search_query`` optional."""
    def signature(user_id, history, user_text, search_query=NO_SEARCH):
        return embed_query(user_id, history, user_text, *_if_search(search, search_query))

    return graph_function(signature, input_signature=(*QUERY_SPECS, *_if_search(search, SEARCH_SPEC)))


def score_signature(score: Callable, search: bool = True) -> tf.function:
    """``score(user_id, history, user_text, candidates, search_query)`` with ``search_query`` optional."""
    def signature(user_id, history, user_text, candidates, search_query=NO_SEARCH):
        return score(user_id, history, user_text, candidates, *_if_search(search, search_query))

    return graph_function(signature,
                          input_signature=(*QUERY_SPECS, CANDIDATES_SPEC, *_if_search(search, SEARCH_SPEC)))


class Recommender(tf.Module):
    """Towers + encoder + served catalogue + index, with one tf.function per signature."""

    def __init__(self, user_tower: UserTower, item_tower: ItemTower, user_table: FeatureTable, encoder: TextEncoder,
                 catalog: ServedCatalog, index: tf.Module, k: int, history_len: int, item_text_columns: list[str],
                 user_id_key: HashKey | None = None):
        super().__init__(name="recommender")
        self.user_tower = user_tower
        self.item_tower = item_tower
        self.user_table = user_table
        # A Transformers BERT serves from one packed variable (export/packed_encoder.py): its own variables are
        # then not saved, its tokenizer (whose resources the graph uses) is
        self.packed = PackedWeights(encoder.bert, name="packed_encoder") if encoder.hub is None else None
        self.encoder = encoder if self.packed is None else self._no_dependency(encoder)
        self.tokenizer = None if self.packed is None else encoder.tokenizer
        self.catalog = catalog
        self.index = index
        self.k = int(k)
        self.history_len = int(history_len)
        self.item_text_fields = [f for f in item_text_columns if f in ITEM_FIELDS]
        self.repeat_offset = user_tower.repeat.value()   # a constant of the served graph (towers/repeat.py)
        self.user_id_key = None if user_id_key is None else tuple(int(w) for w in user_id_key)

    # Queries -------------------------------------------------------------------------------------------------
    # The encoder and the query side are tf.functions of their own, traced once and called by every signature:
    # traced inline, BERT and the user tower were built five times per export (half of its time).
    @graph_function(input_signature=(tf.TensorSpec([None], STRING, name="text"),))
    def _encode(self, text):
        with self.packed.substituted() if self.packed is not None else contextlib.nullcontext():
            return self.encoder(text)

    @graph_function(input_signature=(*QUERY_SPECS, SEARCH_SPEC))
    def _query_and_history(self, user_id, history, user_text, search_query):
        """The query vectors [B, D] and the request's history as ``_history`` gives it."""
        recent = self._history(history)
        search_query = tf.broadcast_to(search_query, tf.shape(user_id))
        return self._query(user_id, recent, user_text, search_query), recent

    def _user_ids(self, user_id: tf.Tensor) -> tf.Tensor:
        """Raw ids as clients send them → the ids the model was trained with (hashed: ``data.hash_user_ids``)."""
        return user_id if self.user_id_key is None else hash_ids(user_id, HashKey(self.user_id_key))

    def _text_vectors(self, text: tf.Tensor, words: tf.Tensor | None = None
                      ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
        """The encoder's vectors [B, T] of the rows with text (BERT runs for those only; zeros elsewhere), which
        rows have text [B], and, given ``words`` (strings), their lexical vectors (towers/lexical.py), computed in
        the same branch (a request without any text computes neither); None without ``words``."""
        text = tf.strings.strip(text)
        has_text = tf.strings.length(text) > 0
        rows = tf.where(has_text)[:, 0]
        dim = self.encoder.dim
        lexical = self.user_tower.lexical

        def encoded():
            vectors = self._encode(tf.gather(text, rows))
            return vectors if words is None else (vectors, lexical(words))

        def nothing():
            vectors = tf.zeros([0, dim], tf.float32)
            return vectors if words is None else (vectors, tf.zeros([tf.size(words), lexical.dim], tf.float32))
        branch = unlowered_cond(tf.size(rows) > 0, encoded, nothing)
        found, words_vectors = branch if words is not None else (branch, None)
        vectors = tf.scatter_nd(rows[:, None], found, tf.stack([tf.size(text, tf.int64), dim]))
        return vectors, has_text, words_vectors

    def _user_text_vectors(self, user_id: tf.Tensor, from_request: tf.Tensor, has_text: tf.Tensor) -> tf.Tensor:
        """The request's user_text vectors where it has text, else the user table's."""
        stored = self.user_table(user_id)["text_vec"]
        return tf.where(has_text[:, None], from_request, stored)

    def _history(self, history: tf.Tensor) -> dict:
        """The last ``history_len`` items: ids, their catalogue vectors and which of them the catalogue knows."""
        recent = history[:, -self.history_len:]
        rows = self.catalog.rows(recent)
        return {"ids": recent, "rows": rows, "vectors": self.catalog.vectors_of(rows), "known": rows >= 0}

    def _query(self, user_id: tf.Tensor, history: dict, user_text: tf.Tensor, search_query: tf.Tensor) -> tf.Tensor:
        user_id = self._user_ids(user_id)
        features = {"user_id": user_id, "history": history["ids"], "history_vec": history["vectors"],
                    "history_known": history["known"]}
        if self.user_tower.semantic is not None:
            # Both texts through one `_text_vectors`: one branch that holds BERT, whose ~100 captured weights cost a
            # request that has neither text a forwarding node each (docs/benchmarks.md).
            batch = tf.shape(user_text)[0]
            words = search_query if self.user_tower.lexical is not None else None   # its words (towers/lexical.py)
            vectors, has_text, words = self._text_vectors(tf.concat([user_text, search_query], axis=0), words)
            if words is not None:
                features["search_words"] = words
                features["search_chinese"] = script_centering.chinese(search_query)   # its words' weight
            features["search_text_vec"] = vectors[batch:]
            vectors, has_text = vectors[:batch], has_text[:batch]
        elif self.user_tower.text_projection is not None:   # no search part: the search is request text too
            vectors, has_text, _ = self._text_vectors(request_text(user_text, search_query))
        else:   # a tower that reads no text (a history or id model without the channel): no BERT in the query path
            return self.user_tower(features, training=False)
        features["user_text_vec"] = self._user_text_vectors(user_id, vectors, has_text)
        return self.user_tower(features, training=False)

    # Recommendations -----------------------------------------------------------------------------------------
    @graph_function(input_signature=(*QUERY_SPECS, *OPTIONAL_SPECS, SEARCH_SPEC,
                                     tf.TensorSpec([], tf.bool, name="exclude_history")))
    def _recommend(self, user_id, history, user_text, diversity, exclude, max_per_category, search_query,
                   exclude_history):
        """Both recommend signatures (traced once): ``exclude_history`` adds the request's history to ``exclude``."""
        queries, recent = self._query_and_history(user_id, history, user_text, search_query)
        batch = tf.shape(user_id)[0]
        diversity = tf.broadcast_to(diversity, [batch])
        max_per_category = tf.broadcast_to(max_per_category, [batch])
        exclude = tf.broadcast_to(exclude, [batch, tf.shape(exclude)[1]])
        blocked_ids = tf.concat([tf.where(exclude_history, history, ""), exclude], axis=1)
        capped = tf.reduce_any(max_per_category > 0)
        rerank_rows = tf.reduce_any(diversity > 0.0) | capped
        size = self.catalog.size()
        # history items may drop out of the top: excluded, or lowered by their own item-to-item score or the offset
        lowered = exclude_history | (self.user_tower.item_item is not None or self.repeat_offset < 0.0)
        pool = tf.where(capped, max(CAP_POOL * self.k, CAP_POOL_MIN),
                        tf.where(rerank_rows, DIVERSITY_POOL * self.k, self.k)) + tf.shape(exclude)[1] + \
            tf.where(lowered, tf.shape(history)[1], 0)
        scores, rows = self.index(queries, tf.minimum(pool, size))
        rows = tf.cast(rows, tf.int64)
        if self.repeat_offset > 0.0:   # a history item may rise into the top from outside the index's answer
            scores, rows = tf.cond(exclude_history, lambda: (scores, rows),
                                   lambda: self._with_history(queries, scores, rows, recent))
        ids = tf.gather(self.catalog.ids, rows)
        scores = scores + self._history_scores(rows, recent)
        blocked = tf.reduce_any(tf.equal(ids[:, :, None], blocked_ids[:, None, :]) & (blocked_ids[:, None, :] != ""),
                                axis=-1)
        relevance = tf.where(blocked, tf.fill(tf.shape(scores), float("-inf")), scores)
        k = self.k

        def diversified():
            return rerank(relevance, self.catalog.vectors_of(rows), group_ids(tf.gather(self.catalog.category, rows)),
                          diversity, max_per_category, k)

        def ranked():
            top, position = tf.math.top_k(relevance, k=k)
            return position, tf.math.is_finite(top)

        position, valid = tf.cond(rerank_rows, diversified, ranked)
        chosen = tf.where(valid, tf.gather(rows, position, batch_dims=1), tf.constant(-1, tf.int64))
        item_ids = tf.where(valid, tf.gather(ids, position, batch_dims=1), "")
        top = tf.where(valid, tf.gather(scores, position, batch_dims=1), float("-inf"))
        because, because_score = strongest_history_item(item_ids, self.catalog.vectors_of(chosen), recent["ids"],
                                                        recent["vectors"], recent["known"])
        words = tf.where(valid, tf.gather(self.catalog.words, tf.maximum(chosen, 0)), "")
        text = request_text(user_text, tf.broadcast_to(search_query, [batch]))
        because_words = tf.cond(tf.reduce_any(tf.strings.length(text) > 0),
                                lambda: matching_words(text, words), lambda: tf.zeros_like(words))
        outputs = (item_ids, top, because, because_score, because_words)
        return {name: tf.ensure_shape(value, [None, k]) for name, value in zip(RECOMMEND_OUTPUTS, outputs)}

    @graph_function(input_signature=(*QUERY_SPECS, *OPTIONAL_SPECS, SEARCH_SPEC))
    def recommend(self, user_id, history, user_text, diversity, exclude, max_per_category, search_query):
        return self._recommend(user_id, history, user_text, diversity, exclude, max_per_category, search_query,
                               tf.constant(True))

    @graph_function(input_signature=(*QUERY_SPECS, *OPTIONAL_SPECS, SEARCH_SPEC))
    def recommend_including_history(self, user_id, history, user_text, diversity, exclude, max_per_category,
                                    search_query):
        return self._recommend(user_id, history, user_text, diversity, exclude, max_per_category, search_query,
                               tf.constant(False))

    # Vectors and scores --------------------------------------------------------------------------------------
    @graph_function(input_signature=(*QUERY_SPECS, SEARCH_SPEC))
    def embed_query(self, user_id, history, user_text, search_query):
        return {"embedding": self._query_and_history(user_id, history, user_text, search_query)[0]}  # [B, D]

    @graph_function(input_signature=ITEM_SPECS)
    def embed_items(self, item_id, title, description, category, brand, price):
        given = {"title": title, "description": description, "category": category, "brand": brand}
        text = join_text_fields([given[f] for f in self.item_text_fields])
        features = {"item_id": item_id, "text": text, "category": category, "brand": brand, "price": price}
        if self.item_tower.text_projection is not None:   # an item tower without text runs no BERT
            features["text_vec"] = self._encode(text)
        config = self.item_tower.config
        rank = config.item_item_rank
        if not rank:
            return {"embedding": self.item_tower(features, training=False)}
        # a catalogue item's item-to-item block is its own; any other item borrows its nearest items' (item_item.py)
        rows = self.catalog.rows(item_id)
        features["item_item_vec"] = self.catalog.vectors_of(rows)[:, -rank:]
        vectors = self.item_tower(features, training=False)
        if not config.item_item_neighbours:
            return {"embedding": vectors}
        borrowed = borrowed_blocks(vectors, self.catalog.vectors, rank, config.embedding_dim,
                                   config.item_item_neighbours)
        block = tf.where((rows >= 0)[:, None], vectors[:, -rank:], borrowed)
        return {"embedding": tf.concat([vectors[:, :-rank], block], axis=-1)}

    @graph_function(input_signature=(*QUERY_SPECS, CANDIDATES_SPEC, SEARCH_SPEC))
    def score(self, user_id, history, user_text, candidates, search_query):
        queries, recent = self._query_and_history(user_id, history, user_text, search_query)
        rows = self.catalog.rows(candidates)
        scores = tf.reduce_sum(self.catalog.vectors_of(rows) * queries[:, None, :], axis=-1)   # no einsum: item_item.py
        scores = scores + self._history_scores(rows, recent)
        return {"scores": tf.where(rows >= 0, scores, float("-inf"))}

    def _history_scores(self, rows: tf.Tensor, history: dict) -> tf.Tensor | float:
        """[B, C] what the candidates (catalogue ``rows``) that are in the request's ``history`` (``_history``) get
        beyond the dot product, as evaluate scores them: the repeat offset once (towers/repeat.py), less the
        item-to-item channel's score of the item with itself for each time it is there (towers/item_item.py); 0
        with neither. The self-scores are read from the history's own vectors, which the query has already
        gathered: a candidate scored this way is one of them, so the candidates' own vectors are never fetched."""
        if self.user_tower.item_item is None and self.repeat_offset == 0.0:
            return 0.0
        same = tf.equal(rows[:, :, None], history["rows"][:, None, :]) & history["known"][:, None, :]   # [B, C, H]
        extra = 0.0
        if self.user_tower.item_item is not None:
            own = self.user_tower.item_item.own(history["vectors"])                               # [B, H]
            extra = -tf.reduce_sum(tf.cast(same, tf.float32) * own[:, None, :], axis=-1)
        if self.repeat_offset != 0.0:
            extra += self.repeat_offset * tf.cast(tf.reduce_any(same, axis=-1), tf.float32)
        return extra

    def _with_history(self, queries: tf.Tensor, scores: tf.Tensor, rows: tf.Tensor,
                      history: dict) -> tuple[tf.Tensor, tf.Tensor]:
        """The index's candidates (``scores``, ``rows`` [B, C]) followed by the request's history items [B, H]
        scored exactly by the queries: each known one once, if the index did not already answer it; -inf (row 0)
        in the places of the others. With a positive repeat offset a history item outside the index's answer may
        still belong in the top."""
        own_rows = history["rows"]
        position = tf.range(tf.shape(own_rows)[1])
        earlier = tf.reduce_any(tf.equal(own_rows[:, :, None], own_rows[:, None, :])
                                & (position[None, :] < position[:, None])[None], axis=-1)
        answered = tf.reduce_any(tf.equal(own_rows[:, :, None], rows[:, None, :]), axis=-1)
        fresh = history["known"] & ~earlier & ~answered
        own_scores = tf.reduce_sum(history["vectors"] * queries[:, None, :], axis=-1)
        return (tf.concat([scores, tf.where(fresh, own_scores, float("-inf"))], axis=1),
                tf.concat([rows, tf.where(fresh, tf.cast(own_rows, rows.dtype), tf.zeros_like(rows[:, :1]))], axis=1))


def serving_signatures(module) -> dict:
    """The signature map of a Recommender, or of one loaded from a SavedModel (``index add`` saves it again)."""
    search = takes_search(module.recommend)
    return {"serving_default": recommend_signature(module.recommend, search),
            "recommend_including_history": recommend_signature(module.recommend_including_history, search),
            "embed_query": embed_query_signature(module.embed_query, search),
            "embed_items": module.embed_items, "score": score_signature(module.score, search)}
