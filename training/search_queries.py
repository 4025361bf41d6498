"""Text-only requests that read like search, scored against a generated world's own ground truth.

Why it exists: the generated users' ``search_queries`` name a product type ("lightweight tent", "帐篷推荐"), and
the generator knows which items are of that type (``search_queries.csv``, ingest/formats/generated.py). Sending
each query alone (no user id, no history; the query as the served signatures' ``search_query``) and ranking the full
catalogue measures what a search box would get from the model: precision@10 and recall@50 against those items, for
the trained towers, for the raw text encoder's own similarity (cosine between the query's and each item's text
vector, the run's encoder, no training) and for popularity; with the semantic channel, also for the query sent as
``user_text`` (what a client that knows no ``search_query`` gets). The queries of the validation users are the
search log that the channel's search weight is fitted on (training/calibrate.py), those of the test users what it
is measured on.

precision@10 is the share of the top 10 that is relevant, out of min(10, the query's relevant items): a type with
fewer than 10 items can still score 1.0. Ties (popularity's equal counts) are broken at random, seeded.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from ingest.formats.generated import SEARCH_QUERIES, read_search_queries
from ingest.privacy import hash_column, key_from_config
from towers import script_centering
from towers.text_cache import TextVectorCache
from towers.text_encoder import TextEncoder
from training import evaluate as ev
from training.examples import Examples

log = logging.getLogger("twotower.evaluate")

PRECISION_K = 10
RECALL_K = 50
AS_USER_TEXT = "two-tower, as user_text"
# scores(query rows) → [len(rows), catalogue items]
QueryScorer = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class QueryCases:
    """The queries to ask: their text, whose they are, and each one's relevant catalogue rows."""

    text: list[str]
    user_id: np.ndarray        # [Q] str
    relevant: np.ndarray       # [Q, catalogue items] bool
    new_user: np.ndarray       # [Q] bool: the query's user has no training interaction
    chinese: np.ndarray        # [Q] bool: the query is mostly Chinese

    def __len__(self) -> int:
        return len(self.text)


def query_cases(table, catalog_ids: Sequence[str], users: Sequence[str],
                new_users: Sequence[str] = ()) -> QueryCases:
    """The queries of ``users`` (a ground-truth table as ``read_search_queries`` returns it) whose product type has
    at least one item in the catalogue."""
    row_of = {item: row for row, item in enumerate(catalog_ids)}
    asked = table[table["user_id"].isin(set(users))]
    relevant = np.zeros((len(asked), len(row_of)), bool)
    for i, items in enumerate(asked["relevant"]):
        relevant[i, [row_of[x] for x in items if x in row_of]] = True
    keep = relevant.any(axis=1)
    texts = asked["query"].astype(str).tolist()
    new = set(new_users)
    return QueryCases(text=[t for t, k in zip(texts, keep) if k],
                      user_id=asked["user_id"].to_numpy(str)[keep], relevant=relevant[keep],
                      new_user=np.array([u in new for u in asked["user_id"]], bool)[keep],
                      chinese=np.array([ev.mostly_chinese(t) for t in texts], bool)[keep])


def top_rows(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """[Q, k] catalogue rows of the k best scores per query, best first; ties in random (``rng``) order.

    Only each row's k best and the items tied with its k-th are sorted (the same rows as sorting every row whole,
    which took 0.3 s a call on the demo world, ~19 s of its training's search-weight fit); the tie-breaking draws
    are made for the whole matrix either way, so the same ``rng`` breaks the same ties."""
    negative = -np.asarray(scores, np.float64)    # ascending order of it is best first
    noise = rng.random(negative.shape)
    width = negative.shape[1]
    if 0 < k < width:
        kth = np.partition(negative, k - 1, axis=1)[:, k - 1:k]         # [Q, 1] each row's k-th best, negated
        width = max(k, int((negative <= kth).sum(axis=1).max()))        # k plus the most ties at the k-th
    if width >= negative.shape[1]:
        return np.lexsort((noise, negative), axis=-1)[:, :k]
    pick = np.argpartition(negative, width - 1, axis=1)[:, :width]     # every row's items at or above its k-th
    order = np.lexsort((np.take_along_axis(noise, pick, axis=1), np.take_along_axis(negative, pick, axis=1)),
                       axis=-1)
    return np.take_along_axis(pick, order, axis=1)[:, :k]


def summarize(top: np.ndarray, relevant: np.ndarray) -> dict:
    """precision@PRECISION_K, recall@RECALL_K and the number of queries, from ranked rows [Q, >= RECALL_K]."""
    if not len(top):
        return {f"precision@{PRECISION_K}": 0.0, f"recall@{RECALL_K}": 0.0, "queries": 0}
    hit = np.take_along_axis(relevant, top, axis=1)
    total = relevant.sum(axis=1)
    precision = hit[:, :PRECISION_K].sum(axis=1) / np.minimum(PRECISION_K, total)
    recall = hit[:, :RECALL_K].sum(axis=1) / total
    return {f"precision@{PRECISION_K}": float(precision.mean()), f"recall@{RECALL_K}": float(recall.mean()),
            "queries": int(len(top))}


def score(scorer: QueryScorer, cases: QueryCases, batch_size: int = 1024) -> dict:
    """One scorer's block: all queries, and those of new users and the Chinese ones where there are any."""
    rng = np.random.default_rng(0)
    k = min(RECALL_K, cases.relevant.shape[1])
    parts = [top_rows(scorer(np.arange(start, min(start + batch_size, len(cases)))), k, rng)
             for start in range(0, len(cases), batch_size)]
    return report(np.concatenate(parts) if parts else np.zeros((0, k), np.int64), cases)


def report(top: np.ndarray, cases: QueryCases) -> dict:
    """The block of ranked rows [Q, >= RECALL_K]: all queries, and those of new users and the Chinese ones where
    there are any."""
    block = summarize(top, cases.relevant)
    for group, name in (("new_user", "new_users"), ("chinese", "chinese")):
        mask = getattr(cases, group)
        if mask.any():
            block[name] = summarize(top[mask], cases.relevant[mask])
    return block


def report_ids(item_ids: np.ndarray, cases: QueryCases, catalog_ids: Sequence[str]) -> dict:
    """:func:`report` of answers given as item ids [Q, k] (a served model's), ``catalog_ids`` being the columns of
    ``cases.relevant``; an id outside them (or "" padding) counts as not relevant."""
    row_of = {item: row for row, item in enumerate(catalog_ids)}
    outside = len(catalog_ids)
    rows = np.vectorize(lambda item: row_of.get(item, outside), otypes=[np.int64])(item_ids)
    relevant = np.concatenate([cases.relevant, np.zeros((len(cases), 1), bool)], axis=1)
    return report(rows, dataclasses.replace(cases, relevant=relevant))


def seeded_titles(catalog, count: int, seed: int = 0) -> list[str]:
    """``count`` titles of the catalogue (a frame with ``title``), the non-empty ones in a seeded order: search
    requests that have an answer, for checks and samples that need a few (export/parity.py, export/writer.py)."""
    titles = catalog["title"].astype(str).str.strip()
    titles = titles[titles != ""]
    return titles.iloc[np.random.default_rng(seed).permutation(len(titles))[:count]].tolist()


def request_features(model, config: dict, texts: list[str], vectors: np.ndarray, search: bool) -> dict:
    """The user tower's features of text-only requests (no user id, no history): ``texts`` as the request's
    ``search_query`` (``search``; a model without the semantic channel reads it as request text, as the export
    does) or as its ``user_text``, given as the encoder's ``vectors`` (frozen encoder) or as raw strings."""
    frozen = config["model"]["encoder_mode"] == "frozen"
    raw = np.array(texts, object)
    empty = np.zeros_like(vectors) if frozen else np.array([""] * len(texts), object)
    as_search = search and model.user_tower.semantic is not None
    given = vectors if frozen else raw
    user, searched = (empty, given) if as_search else (given, None)
    features = {"user_text_vec" if frozen else "user_text": user}
    if searched is not None:
        if frozen:
            features["search_text_vec"] = searched
        features["search_text"] = raw   # the encoder's input where no vectors are given; its words (lexical_dim)
    return features


def request_vectors(model, query_features: dict[str, np.ndarray], rows: np.ndarray | None = None,
                    batch_size: int = 1024) -> np.ndarray:
    """The model's query vectors [len(rows), D] of text-only requests: no user id, no history, only the
    ``query_features`` (``request_features``) of ``rows`` (all of them by default)."""
    if rows is None:
        rows = np.arange(len(next(iter(query_features.values()))))
    parts = []
    for start in range(0, len(rows), batch_size):
        part = rows[start:start + batch_size]
        features = {"user_id": tf.constant([""] * len(part)), "history": tf.constant([[""]] * len(part)),
                    **{name: tf.constant(values[part]) for name, values in query_features.items()}}
        parts.append(model.user_tower(features, training=False).numpy())
    return np.concatenate(parts) if parts else np.zeros((0, model.user_tower.item_dim), np.float32)


def text_request_scorer(model, item_vectors: np.ndarray, query_features: dict[str, np.ndarray]) -> QueryScorer:
    """Scores of the model's query path for text-only requests (:func:`request_vectors`), dotted with
    ``item_vectors``."""
    return lambda rows: request_vectors(model, query_features, rows) @ item_vectors.T


def cosine_scorer(query_vectors: np.ndarray, item_vectors: np.ndarray) -> QueryScorer:
    """The text encoder alone: cosine between each query's vector and each item's."""
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    queries, items = unit(query_vectors), unit(item_vectors)
    return lambda rows: queries[rows] @ items.T


def popularity_scorer(item_counts: np.ndarray) -> QueryScorer:
    counts = np.asarray(item_counts, np.float64)
    return lambda rows: np.broadcast_to(counts, (len(rows), counts.size))


def text_vectors(texts: list[str], config: dict, prepared) -> np.ndarray:
    """[len(texts), T] vectors of the run's text encoder (its frozen weights), through the run's text cache, centred
    per script where the run's model.text_centering is on (as the served encoder centres them)."""
    model = config["model"]
    cache = TextVectorCache(config["training"]["text_cache_dir"], prepared.artifacts.encoder["fingerprint"])
    encoder: list[TextEncoder] = []

    def encode(new: list[str]) -> np.ndarray:
        if not encoder:
            encoder.append(TextEncoder(prepared.source, max_length=model["max_seq_len"]))
        log.info("encoding %d search queries (cached in %s)", len(new), cache.directory)
        return encoder[0].encode(new, batch_size=config["training"]["encode_batch_size"], progress=False)

    vectors, _ = cache.get(texts, encode)
    vectors = np.asarray(vectors, np.float32).reshape(len(texts), -1)
    centering = prepared.artifacts.text_centering
    return vectors if centering is None else script_centering.center_texts(vectors, texts, centering)


def split_queries(prepared, cases: Examples, config: dict) -> QueryCases | None:
    """The search queries of a split's evaluation users (``cases``' users; their queries are also in their own
    training text when ``data.user_text_columns`` names ``search_queries``, the new users' never reached a
    gradient) over the run's catalogue; None where the data is no generated world with a ground truth, or no
    query's product type is in the catalogue."""
    if config["data"]["format"] != "generated":
        return None
    table = read_search_queries(Path(config["data"]["path"]))
    if table is None:
        log.info("%s has no %s (written by an older twotower generate): no search-query block",
                 config["data"]["path"], SEARCH_QUERIES)
        return None
    key = key_from_config(config["data"])
    if key is not None:    # the split's users carry hashed ids (data.hash_user_ids): hash the ground truth's alike
        table["user_id"] = hash_column(table["user_id"].to_numpy(), key)
    catalog_ids = prepared.artifacts.catalog["item_id"].tolist()
    new_users = cases.user_id[cases.new_user] if cases.new_user is not None else []
    asked = query_cases(table, catalog_ids, np.unique(cases.user_id.astype(str)), new_users.astype(str))
    return asked if len(asked) else None


def evaluate_split(model, prepared, cases: Examples, config: dict) -> dict | None:
    """The ``search_queries`` block of a split (``split_queries``), asked as text-only requests of ``model``; None
    where there are no such queries."""
    asked = split_queries(prepared, cases, config)
    if asked is None:
        return None
    named = scorers(model, prepared, config, asked.text)
    return {"users": int(len(np.unique(asked.user_id))),
            "relevant_per_query": float(asked.relevant.sum(axis=1).mean()),
            "two-tower": score(named.pop("two-tower"), asked),
            "baselines": {name: score(scorer, asked) for name, scorer in named.items()}}


def scorers(model, prepared, config: dict, texts: list[str]) -> dict[str, QueryScorer]:
    """The scorers of text-only requests ``texts`` over the run's catalogue: ``two-tower`` (the model's query
    path, each text as ``search_query``), ``two-tower, as user_text`` (with the semantic channel: the text as
    ``user_text`` instead), ``text similarity (<encoder>)`` (the run's raw encoder) and ``popularity``."""
    queries = text_vectors(texts, config, prepared)
    catalog = prepared.artifacts.catalog
    items = prepared.artifacts.item_text_vectors
    if items is None:
        items = text_vectors(catalog["text"].astype(str).tolist(), config, prepared)
    learned = ev.item_vectors(model, catalog["item_id"].tolist(), config["evaluation"]["batch_size"])
    named = {"two-tower": text_request_scorer(model, learned, request_features(model, config, texts, queries, True))}
    if model.user_tower.semantic is not None:
        named[AS_USER_TEXT] = text_request_scorer(model, learned,
                                                  request_features(model, config, texts, queries, False))
    return {**named, f"text similarity ({config['model']['encoder']})": cosine_scorer(queries, items),
            "popularity": popularity_scorer(prepared.artifacts.item_counts)}


def format_table(split: str, block: dict) -> str:
    """The search-query block as plain text: rows = model / baselines × all queries / new users / Chinese."""
    columns = [f"precision@{PRECISION_K}", f"recall@{RECALL_K}", "queries"]
    rows = []
    for name, metrics in [("two-tower", block["two-tower"]), *block["baselines"].items()]:
        for label, values in ((name, metrics), *((f"  {g.replace('_', ' ')}", metrics[g])
                                                 for g in ("new_users", "chinese") if g in metrics)):
            rows.append([label] + [f"{values[c]:.4f}" if c != "queries" else str(values[c]) for c in columns])
    header = [f"[{split}] search queries, text only ({block['users']} users)"] + columns
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths))) for row in [header] + rows)
