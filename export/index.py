"""The retrieval index stored in the SavedModel: TFRS's ScaNN layer, tuned to a recall target, or brute force.

Why it exists: ScaNN's speed comes from parameters (leaves, leaves searched, reordering) that depend on the
catalogue; picked by hand they either waste time or lose recall. ``tune_scann`` tries configurations from the
fastest up and keeps the first whose recall@K against exact brute force, on a sample of real query vectors,
reaches the target; the measured figure goes into the model card. Brute force (``tfrs`` BruteForce, a matmul
and top-k) uses core ops only, so stock TF Serving loads it; it is also the fallback below ScaNN's minimum
catalogue size (asymmetric hashing needs at least 16 items).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

log = logging.getLogger("twotower.export")
INDEX_TYPES = ("scann", "brute-force")
SCANN_MIN_ITEMS = 16


@dataclasses.dataclass
class IndexReport:
    """What the model card records about the index."""

    type: str
    k: int
    items: int
    recall_at_k: float | None = None     # vs brute force on sample queries (1.0 for brute force)
    queries: int = 0
    params: dict = dataclasses.field(default_factory=dict)
    tried: list = dataclasses.field(default_factory=list)
    build_seconds: float = 0.0


def exact_top_k(queries: np.ndarray, items: np.ndarray, k: int, chunk_elements: int = 1 << 26) -> np.ndarray:
    """Rows of the exact top-``k`` items per query, best first; queries go in chunks of at most ``chunk_elements``
    scores (a 1M-item catalogue would otherwise need a queries × items score matrix and its argpartition)."""
    step = max(1, chunk_elements // max(items.shape[0], 1))
    if len(queries) > step:
        return np.concatenate([exact_top_k(queries[i:i + step], items, k, chunk_elements)
                               for i in range(0, len(queries), step)])
    scores = queries @ items.T
    k = min(k, items.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def recall_against_exact(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact top-K rows that the approximate top-K found."""
    hits = [len(set(a.tolist()) & set(e.tolist())) / max(len(e), 1) for a, e in zip(approx, exact)]
    return float(np.mean(hits)) if hits else 1.0


def brute_force(items: np.ndarray, identifiers: np.ndarray, k: int) -> tfrs.layers.factorized_top_k.BruteForce:
    layer = tfrs.layers.factorized_top_k.BruteForce(k=k, name="brute_force_index")
    layer.index(tf.constant(items), tf.constant(identifiers))
    return layer


def scann(items: np.ndarray, identifiers: np.ndarray | None, k: int, num_leaves: int, leaves_to_search: int,
          reorder: int | None) -> tfrs.layers.factorized_top_k.ScaNN:
    layer = tfrs.layers.factorized_top_k.ScaNN(k=k, num_leaves=num_leaves, num_leaves_to_search=leaves_to_search,
                                               num_reordering_candidates=reorder, name="scann_index")
    layer.index(tf.constant(items), None if identifiers is None else tf.constant(identifiers))
    return layer


def scann_candidates(n_items: int, k: int) -> list[dict]:
    """Configurations from fastest to most exhaustive for a catalogue of ``n_items``."""
    leaves = max(2, min(n_items // 8, int(round(math.sqrt(n_items)))))
    reorder = min(n_items, max(4 * k, 100))
    out = []
    for fraction in (0.02, 0.05, 0.1, 0.2, 0.35, 0.6, 1.0):
        search = max(1, min(leaves, int(math.ceil(leaves * fraction))))
        for rerank in (reorder, min(n_items, 4 * reorder)):
            config = {"num_leaves": leaves, "leaves_to_search": search, "reorder": rerank}
            if config not in out:
                out.append(config)
    return out


def tune_scann(items: np.ndarray, queries: np.ndarray, k: int, target: float = 0.95,
               candidates: list[dict] | None = None, identifiers: np.ndarray | None = None):
    """The first (fastest) configuration whose recall@k vs brute force on ``queries`` reaches ``target``.

    Returns (configuration, its recall, every try, the index layer that was measured). ScaNN's clustering is
    random, so a rebuild of the same configuration can land a few points lower: ship the measured layer, not a
    rebuild. ``candidates`` (default ``scann_candidates(len(items), k)``) lets a caller try fewer configurations;
    ``identifiers`` become the layer's returned ids (row numbers otherwise).
    """
    exact = exact_top_k(queries, items, k)
    rows = None if identifiers is None else {item: row for row, item in enumerate(identifiers.tolist())}
    tried, best = [], None
    for config in scann_candidates(len(items), k) if candidates is None else candidates:
        layer = scann(items, identifiers, k, config["num_leaves"], config["leaves_to_search"], config["reorder"])
        _, found = layer(tf.constant(queries), k=min(k, len(items)))
        found = found.numpy()
        if rows is not None:
            found = np.vectorize(lambda i: rows[i.decode() if isinstance(i, bytes) else i])(found)
        recall = recall_against_exact(found, exact)
        tried.append({**config, "recall": recall})
        log.info("ScaNN %s: recall@%d %.4f", config, k, recall)
        if best is None or recall > best[1]:
            best = (config, recall, layer)
        if recall >= target:
            return config, recall, tried, layer
    return best[0], best[1], tried, best[2]


def build_index(kind: str, items: np.ndarray, identifiers: np.ndarray, queries: np.ndarray, k: int,
                target: float = 0.95, margin: float = 0.02):
    """(index layer, report). ``k`` is how many neighbours the index returns per query.

    ScaNN is tuned to ``target + margin`` on the sample queries, so that queries it was not tuned on (every
    real request) still see about ``target``; the report keeps the recall measured on the sample.
    """
    if kind not in INDEX_TYPES:
        raise ValueError(f"--index must be one of {', '.join(INDEX_TYPES)}, got {kind!r}")
    started = time.time()
    k = min(k, len(items))
    if kind == "scann" and len(items) < SCANN_MIN_ITEMS:
        log.warning("catalogue has %d items (< %d, ScaNN's minimum): using brute force", len(items),
                    SCANN_MIN_ITEMS)
        kind = "brute-force"
    if kind == "brute-force":
        layer = brute_force(items, identifiers, k)
        report = IndexReport("brute-force", k, len(items), 1.0, len(queries))
    else:
        config, recall, tried, layer = tune_scann(items, queries, k, min(target + margin, 0.999),
                                                  identifiers=identifiers)
        if recall < target:
            log.warning("no ScaNN configuration reached recall@%d %.2f (best %.4f)", k, target, recall)
        report = IndexReport("scann", k, len(items), recall, len(queries), config, tried)
    report.build_seconds = time.time() - started
    return layer, report
