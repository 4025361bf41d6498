"""Why an item was recommended, in the graph: the user's own history item or words that match it best.

Why it exists: "because you viewed X" is what makes a recommendation believable, and it must come with the
answer (TF Serving clients get outputs, nothing else). Two kinds, both built only from what the request itself
carries, so an explanation can never reveal anything about another user (not their history, not the profile
text stored for a user id):

- ``strongest_history_item``: for each recommended item, the request's history item whose item-tower vector is
  most similar to it (dot product of unit vectors, i.e. cosine), and that similarity. This is the history item
  contributing most to the item's score: the query pools the history vectors, so its dot product with the
  item is a weighted sum of exactly these similarities. An item never explains itself, and a best similarity
  of 0 or below explains nothing ("").
- ``matching_words``: the words of the request's ``user_text`` that also occur in the item's text (the served
  catalogue keeps each item's normalised words), in the order the user wrote them, at most ``MAX_WORDS``.

Words are normalised by ``text_words``: lower-cased, split on anything that is not a letter or a digit, Chinese
characters one by one (they carry meaning alone; English stop words and one- or two-letter Latin tokens are
dropped). Export applies it to item texts, the graph to request texts: one function, so both sides agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

MAX_WORDS = 5          # matching words returned per item
MAX_QUERY_WORDS = 32   # words of a request text considered
MAX_ITEM_WORDS = 64    # words kept per catalogue item
STOP_WORDS = tuple(sorted(set("""
a about above after again all also am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers him
his how i if in into is it its itself just like looking me more most my need needs no nor not now of off on once
only or other our out over own same she should so some such than that the their them then there these they this
those through to too under until up very want wants was we were what when where which while who whom why will
with would you your yours for new one two set pack
的 了 和 是 在 我 有 与 及 或 也 很 都 就 这 那 个 给 用 为 款 适 合
""".split())))


def text_words(texts: tf.Tensor, limit: int | None = None) -> tf.RaggedTensor:
    """[B] strings → [B, None] normalised words (stop words out; repeats kept, in text order)."""
    text = tf.strings.lower(tf.reshape(texts, [-1]), encoding="utf-8")
    text = tf.strings.regex_replace(text, r"(\p{Han})", r" \1 ")
    text = tf.strings.regex_replace(text, r"[^\p{L}\p{N}]+", " ")
    words = tf.strings.split(text)
    flat = words.flat_values
    han = tf.strings.regex_full_match(flat, r"\p{Han}")
    long_enough = tf.strings.length(flat, unit="UTF8_CHAR") >= 3
    stop = tf.reduce_any(tf.equal(flat[:, None], tf.constant(STOP_WORDS)[None, :]), axis=1)
    kept = tf.ragged.boolean_mask(words, words.with_flat_values((han | long_enough) & ~stop))
    return kept if limit is None else kept[:, :limit]


def item_words(texts: Sequence[str]) -> list[str]:
    """Each item text's distinct normalised words, space-joined (what the served catalogue stores per item)."""
    if not len(texts):
        return []
    rows = text_words(tf.constant(list(texts), tf.string)).to_list()
    return [" ".join(list(dict.fromkeys(w.decode("utf-8") for w in row))[:MAX_ITEM_WORDS]) for row in rows]


def strongest_history_item(item_ids: tf.Tensor, item_vectors: tf.Tensor, history: tf.Tensor,
                           history_vectors: tf.Tensor, history_known: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """item_ids [B, K], item_vectors [B, K, D], history [B, H], history_vectors [B, H, D], history_known [B, H]
    → (history item id [B, K], "" where none; its similarity [B, K], 0 where none)."""
    similarity = tf.matmul(item_vectors, history_vectors, transpose_b=True)   # [B, K, H]; oneDNN's einsum is slower
    usable = history_known[:, None, :] & tf.not_equal(history[:, None, :], item_ids[:, :, None])
    similarity = tf.where(usable, similarity, tf.fill(tf.shape(similarity), float("-inf")))
    best = tf.argmax(similarity, axis=-1, output_type=tf.int32)
    score = tf.reduce_max(similarity, axis=-1)
    found = score > 0.0   # also false for -inf: no usable history item
    because = tf.where(found, tf.gather(history, best, batch_dims=1), tf.zeros_like(item_ids))
    return because, tf.where(found, score, tf.zeros_like(score))


def matching_words(user_text: tf.Tensor, words: tf.Tensor) -> tf.Tensor:
    """user_text [B], words [B, K] (an item's space-joined words) → [B, K] the text's words found in each item,
    space-joined in the text's order, each once, at most MAX_WORDS; "" where none."""
    query = text_words(user_text, MAX_QUERY_WORDS).to_tensor(default_value="")          # [B, U]
    size = tf.shape(query)[1]
    earlier = tf.range(size)[None, :] < tf.range(size)[:, None]                           # [i, j]: j before i
    repeated = tf.reduce_any(tf.equal(query[:, :, None], query[:, None, :]) & earlier[None], axis=2)
    shape = tf.shape(words)
    item = tf.strings.split(tf.reshape(words, [-1])).to_tensor(default_value="")          # [B*K, W]
    item = tf.reshape(item, [shape[0], shape[1], -1])                                      # [B, K, W]
    found = tf.reduce_any(tf.equal(query[:, None, :, None], item[:, :, None, :]), axis=3)  # [B, K, U]
    found &= (~repeated & (query != ""))[:, None, :]
    tokens = tf.reshape(tf.broadcast_to(query[:, None, :], tf.shape(found)), [-1, size])     # [B*K, U]
    matched = tf.ragged.boolean_mask(tokens, tf.reshape(found, [-1, size]))[:, :MAX_WORDS]
    return tf.reshape(tf.strings.reduce_join(matched, axis=1, separator=" "), shape[:2])
