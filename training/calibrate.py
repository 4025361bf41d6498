"""Fitting the semantic channel's per-kind weights (and the item-to-item channel's) on the validation split, the
towers frozen.

Why it exists: the channel's weights (towers/semantic_channel.py) are learned with the towers by the in-batch
softmax, which hardly moves them from where they start and, given a larger step, pushes them below what the
ranking wants (docs/quality.md). The score is linear in each of them:

    query · item = u · i + β_kind · cos(q_text, i_text)

so once the towers are trained, each request kind's weight can be set to the value that ranks that kind's
validation cases best. One pass of the towers gives both parts of every case's score; each candidate weight then
costs a sum and a ranking. The towers are not touched, the exported model keeps one index and one dot product, and
the trained and the fitted weights are both recorded (RUN/state.json, metrics.json, the model card).

A kind with fewer than ``MIN_CASES`` validation cases keeps its trained weight: the ranking metric of a few dozen
cases is mostly noise (a generated world's text-only newcomers: 84 cases, whose best weight on the validation split
was the worst on the test split).

The search weight (a request's ``search_query``) is fitted the same way where the data has a search log with a
ground truth (a generated world's: training/search_queries.py): the validation users' queries, each asked alone,
ranked by precision@10 against the items of the queried product type, and with it the weight of the search's words
(``model.lexical_dim``). Elsewhere they keep their defaults.

The item-to-item channel's weight (towers/item_item.py, ``model.item_item_rank``) is fitted the same way: it is 0
while the towers train, and the score is linear in it too. Last, the repeat offset (towers/repeat.py), which only
moves the history's own items, on the protocol that ranks them: the history kept among the candidates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from towers.semantic_channel import DEFAULT_SEARCH_WEIGHT, KINDS
from training import evaluate as ev
from training import search_queries as sq
from training.examples import Examples

log = logging.getLogger("twotower.train")

# The weights tried for each kind: 0 (the channel off for that kind) up to a score that the words dominate.
GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
SEARCH_GRID = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)   # a search query wants the words to weigh most
# The search's words weight (model.lexical_dim) tried as these multiples of its meaning's weight: 0 (words off) to
# words first.
WORDS_RATIOS = (0.0, 0.5, 1.0, 2.0, 4.0)
SEARCH_METRIC = f"precision@{sq.PRECISION_K}"
MIN_CASES = 200
# The item-to-item channel's weights tried (0: the channel off), and the one it gets without enough validation
# cases to fit on: what Amazon Scientific's validation split picks at rank 256 (docs/quality.md).
ITEM_ITEM_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
DEFAULT_ITEM_ITEM_WEIGHT = 1.0
# The repeat offsets tried (towers/repeat.py), as multiples of the spread of the validation scores (their standard
# deviation over the first batch of cases × the catalogue): from never again (16 spreads under: below every other
# item) through 0 (history items scored like any other) to re-bought first.
REPEAT_GRID = (-16.0, -8.0, -4.0, -2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
# Probing weights: with these, the norm of a query's semantic part names its kind (the part is a unit vector
# times its kind's weight, or zeros for a request with neither text nor history).
_PROBE = (1.0, 2.0, 4.0)


def user_vectors(model, cases: Examples, batch_size: int) -> np.ndarray:
    """[N, query width] the towers' query vectors of ``cases``, in batches."""
    width = model.user_tower.item_dim
    return np.concatenate([model.embed_users(
        tf.constant(cases.user_id[s:s + batch_size].astype(str).tolist(), tf.string),
        tf.constant(cases.history[s:s + batch_size].astype(str).tolist(), tf.string)).numpy()
        for s in range(0, len(cases), batch_size)]) if len(cases) else np.zeros((0, width), np.float32)


def _semantic_end(model) -> int:
    """Where a vector's semantic part (the text, then any words) ends: the item-to-item block follows it."""
    return model.user_tower.item_dim - model.user_tower.config.item_item_rank


def query_parts(model, cases: Examples, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The towers' query vectors of ``cases`` split into (learned part [N, D], unit semantic part [N, T], kind
    [N]: an index into KINDS, or -1 where the request has no semantic part)."""
    semantic = model.user_tower.semantic
    dim = model.user_tower.config.embedding_dim
    trained = semantic.kind_weights().numpy()
    semantic.set_kind_weights(_PROBE)
    try:
        vectors = user_vectors(model, cases, batch_size)
    finally:
        semantic.set_kind_weights(trained)
    learned, text = vectors[:, :dim], vectors[:, dim:_semantic_end(model)]
    norm = np.linalg.norm(text, axis=1)
    kind = np.full(len(norm), -1, np.int64)
    for index, probe in enumerate(_PROBE):
        kind[np.isclose(norm, probe, rtol=1e-3)] = index
    return learned, text / np.maximum(norm, 1e-12)[:, None], kind


def curve(learned: np.ndarray, text: np.ndarray, items_learned: np.ndarray, items_text: np.ndarray,
          cases: Examples, item_index: dict[str, int], metric: str, weights: Sequence[float] = GRID,
          batch_size: int = 1024, own: np.ndarray | None = None) -> list[float]:
    """``metric`` (recall@K or ndcg@K, history excluded as everywhere) of ``cases`` ranked by
    ``learned · items_learned + w · text · items_text``, for each w of ``weights``; with ``own`` (per catalogue
    row) that is taken off an item's ``text · items_text`` for each time it is in the case's history, as evaluate
    takes the item-to-item channel's self-score off (a target the user had before is still ranked)."""
    name, k = metric.split("@")
    k = int(k)
    ranks = np.zeros((len(weights), len(cases)), np.int64)
    for start in range(0, len(cases), batch_size):
        part = ev.slice_cases(cases, start, batch_size)
        stop = start + len(part)
        collaborative = learned[start:stop].astype(np.float64) @ items_learned.T
        words = text[start:stop].astype(np.float64) @ items_text.T
        if own is not None:
            ev.take_own_scores(words, part, item_index, own)
        targets = np.array([item_index[t] for t in part.target])
        for row, weight in enumerate(weights):
            scores = collaborative + weight * words
            target_scores = scores[np.arange(len(part)), targets]
            ev.exclude(scores, part, item_index)
            ranks[row, start:stop] = ev.rank_targets(scores, target_scores, np.random.default_rng(start))
    hit = ranks < k
    gain = hit / np.log2(ranks + 2.0) if name == "ndcg" else hit
    return [float(x) for x in gain.mean(axis=1)] if len(cases) else [0.0] * len(weights)


def calibrate(model, cases: Examples, catalog_ids: Sequence[str], metric: str, batch_size: int = 1024) -> dict:
    """Sets each kind's weight to the one of GRID that ranks its validation ``cases`` best by ``metric`` (ties: the
    weight nearest the trained one); kinds with fewer than MIN_CASES cases keep theirs. Returns what it did: the
    trained and the fitted weights, each kind's case count and its metric at every weight tried."""
    semantic = model.user_tower.semantic
    trained = [float(w) for w in semantic.kind_weights().numpy()]
    items = ev.item_vectors(model, catalog_ids, batch_size)
    dim = model.user_tower.config.embedding_dim
    end = _semantic_end(model)
    items_learned, items_text = items[:, :dim].astype(np.float64), items[:, dim:end].astype(np.float64)
    item_index = {item: row for row, item in enumerate(catalog_ids)}
    learned, text, kind = query_parts(model, cases, batch_size)
    fitted, report = list(trained), {}
    for index, name in enumerate(KINDS):
        mask = kind == index
        count = int(mask.sum())
        entry: dict = {"cases": count, "trained": round(trained[index], 6)}
        if count >= MIN_CASES:
            values = curve(learned[mask], text[mask], items_learned, items_text, cases.subset(mask), item_index,
                           metric, GRID, batch_size)
            best = max(values)
            fitted[index] = min((w for w, v in zip(GRID, values) if v == best),
                                key=lambda w: abs(w - trained[index]))
            entry[metric] = {str(w): round(v, 6) for w, v in zip(GRID, values)}
        elif count:
            entry["kept"] = f"fewer than {MIN_CASES} validation cases"
        entry["fitted"] = round(fitted[index], 6)
        report[name] = entry
    semantic.set_kind_weights(fitted)
    log.info("semantic channel, weights fitted on the validation split (%s): %s", metric,
             ", ".join(f"{name} {report[name]['trained']:.3f} → {report[name]['fitted']:.3f} "
                       f"({report[name]['cases']} cases)" for name in KINDS))
    return {"metric": metric, "kinds": report}


def _fit_chinese_words(semantic, asked, meaning: np.ndarray, words: np.ndarray, ratio: float, k: int,
                       search_weight: float) -> dict:
    """The words' weight of Chinese searches: the best of WORDS_RATIOS times the search weight on the Chinese
    validation queries alone (ties: nearest the one all searches got); that one where there are fewer than
    MIN_CASES. A Chinese query's characters match Chinese titles only, so in a catalogue mostly in another
    language its meaning may do better without them (docs/encoders.md)."""
    chinese = np.asarray(asked.chinese, bool)
    report: dict = {"queries": int(chinese.sum())}
    if chinese.sum() < MIN_CASES:
        semantic.set_chinese_words_weight(search_weight * ratio)
        report.update(kept=f"fewer than {MIN_CASES} Chinese validation queries", fitted=round(search_weight * ratio, 6))
        return report
    rows = np.flatnonzero(chinese)
    values = [sq.summarize(sq.top_rows(meaning[rows] + r * words[rows], k, np.random.default_rng(0)),
                           asked.relevant[rows])[SEARCH_METRIC] for r in WORDS_RATIOS]
    best = max(values)
    chosen = min((r for r, v in zip(WORDS_RATIOS, values) if v == best), key=lambda r: abs(r - ratio))
    semantic.set_chinese_words_weight(search_weight * chosen)
    log.info("semantic channel, Chinese searches' words weight fitted on %d validation queries (%s): %.2f of the "
             "search weight (%.4f; %.4f at the %.2f all searches got)", len(rows), SEARCH_METRIC, chosen, best,
             values[WORDS_RATIOS.index(ratio)], ratio)
    return {**report, "fitted": round(search_weight * chosen, 6), "ratio": chosen,
            SEARCH_METRIC: {f"words {r}x": round(v, 6) for r, v in zip(WORDS_RATIOS, values)}}


def fit_search_weight(model, prepared, valid: Examples, config: dict) -> dict | None:
    """Sets the search weight to the one of SEARCH_GRID that ranks the validation users' search queries best
    (SEARCH_METRIC), and with ``model.lexical_dim`` the words' weight to the best of WORDS_RATIOS times it (ties:
    the pair nearest the defaults); None where the data has no search log to fit them on (they keep their
    defaults). Returns the metric at every pair tried."""
    asked = sq.split_queries(prepared, valid, config)
    if asked is None:
        return None
    semantic = model.user_tower.semantic
    has_words = model.user_tower.lexical is not None
    report: dict = {"queries": len(asked), "metric": SEARCH_METRIC}
    if len(asked) < MIN_CASES:
        report["kept"] = f"fewer than {MIN_CASES} validation queries"
        report["fitted"] = round(float(semantic.search_weight().numpy()), 6)
        if has_words:
            report["fitted_words"] = round(float(semantic.words_weight().numpy()), 6)
        return report
    catalog_ids = prepared.artifacts.catalog["item_id"].tolist()
    items = ev.item_vectors(model, catalog_ids, config["evaluation"]["batch_size"]).astype(np.float64)
    dim, text_dim = model.user_tower.config.embedding_dim, model.user_tower.text_dim
    features = sq.request_features(model, config, asked.text, sq.text_vectors(asked.text, config, prepared),
                                   search=True)
    default = float(semantic.search_weight().numpy())
    default_words = float(semantic.words_weight().numpy()) if has_words else 0.0
    default_chinese = float(semantic.chinese_words_factor.numpy()) if has_words else 1.0
    semantic.set_search_weight(1.0)   # the query's search part is then its unit text vector (and its words')
    if has_words:
        semantic.set_words_weight(1.0)
        semantic.chinese_words_factor.assign(1.0)
    try:
        queries = sq.request_vectors(model, features).astype(np.float64)
    finally:
        semantic.set_search_weight(default)
        if has_words:
            semantic.set_words_weight(default_words)
            semantic.chinese_words_factor.assign(default_chinese)
    meaning = slice(dim, dim + text_dim)
    collaborative = queries[:, :dim] @ items[:, :dim].T
    text = queries[:, meaning] @ items[:, meaning].T
    words = queries[:, dim + text_dim:_semantic_end(model)] @ items[:, dim + text_dim:_semantic_end(model)].T
    k = min(sq.RECALL_K, len(catalog_ids))
    pairs = [(w, r) for w in SEARCH_GRID for r in (WORDS_RATIOS if has_words else (0.0,))]
    values = [sq.summarize(sq.top_rows(collaborative + w * (text + r * words), k, np.random.default_rng(0)),
                           asked.relevant)[SEARCH_METRIC] for w, r in pairs]
    best = max(values)
    default_ratio = default_words / default if has_words else 0.0
    fitted, ratio = min((pair for pair, v in zip(pairs, values) if v == best),
                        key=lambda p: (abs(p[0] - DEFAULT_SEARCH_WEIGHT), abs(p[1] - default_ratio)))
    semantic.set_search_weight(fitted)
    log.info("semantic channel, search weight fitted on %d validation search queries (%s): %.3f → %.3f (%.4f)",
             len(asked), SEARCH_METRIC, default, fitted, best)
    report.update({"default": round(default, 6), "fitted": round(fitted, 6)})
    if has_words:
        semantic.set_words_weight(fitted * ratio)
        log.info("semantic channel, the search's words weight fitted: %.3f → %.3f (%.2f of the search weight)",
                 default_words, fitted * ratio, ratio)
        report.update({"default_words": round(default_words, 6), "fitted_words": round(fitted * ratio, 6)})
        report["chinese"] = _fit_chinese_words(semantic, asked, collaborative + fitted * text, fitted * words, ratio,
                                               k, fitted)
    grid = {(f"{w}, words {r}x" if has_words else str(w)): round(v, 6) for (w, r), v in zip(pairs, values)}
    return {**report, SEARCH_METRIC: grid}


def fit_item_item_weight(model, cases: Examples, catalog_ids: Sequence[str], metric: str,
                         batch_size: int = 1024) -> dict:
    """Sets the item-to-item channel's weight (towers/item_item.py; 0 while the towers trained) to the one of
    ITEM_ITEM_GRID that ranks the validation ``cases`` best by ``metric``, the rest of the score as it stands (the
    semantic weights already fitted; ties: the smaller weight), or to DEFAULT_ITEM_ITEM_WEIGHT with fewer than
    MIN_CASES cases. Returns what it did and the metric at every weight tried."""
    layer = model.user_tower.item_item
    rank = model.user_tower.config.item_item_rank
    report: dict = {"metric": metric, "cases": len(cases)}
    if len(cases) < MIN_CASES:
        layer.set_weight(DEFAULT_ITEM_ITEM_WEIGHT)
        report.update(kept=f"fewer than {MIN_CASES} validation cases", fitted=DEFAULT_ITEM_ITEM_WEIGHT)
        log.info("item-to-item channel: weight %.3f (fewer than %d validation cases to fit it on)",
                 DEFAULT_ITEM_ITEM_WEIGHT, MIN_CASES)
        return report
    items = ev.item_vectors(model, catalog_ids, batch_size).astype(np.float64)
    layer.set_weight(1.0)   # the query's block is then the plain sum of its history's blocks
    try:
        queries = user_vectors(model, cases, batch_size).astype(np.float64)
        own = layer.own(tf.constant(items, tf.float32)).numpy().astype(np.float64)
    finally:
        layer.set_weight(0.0)
    item_index = {item: row for row, item in enumerate(catalog_ids)}
    values = curve(queries[:, :-rank], queries[:, -rank:], items[:, :-rank], items[:, -rank:], cases, item_index,
                   metric, ITEM_ITEM_GRID, batch_size, own=own)
    best = max(values)
    fitted = min(w for w, v in zip(ITEM_ITEM_GRID, values) if v == best)
    layer.set_weight(fitted)
    log.info("item-to-item channel, weight fitted on the validation split (%s): %.3f (%.4f; %.4f without it)",
             metric, fitted, best, values[0])
    return {**report, "fitted": fitted, metric: {str(w): round(v, 6) for w, v in zip(ITEM_ITEM_GRID, values)}}


def fit_repeat_offset(model, cases: Examples, catalog_ids: Sequence[str], metric: str,
                      batch_size: int = 1024) -> dict:
    """Sets the repeat offset (towers/repeat.py) to the one of REPEAT_GRID (times the scores' spread) that ranks the
    validation ``cases`` best by ``metric`` with their history items kept among the candidates, the rest of the
    score as it stands; leaves it 0 with fewer than MIN_CASES cases. Where several offsets tie (once every history
    item is below the targets, any lower one ranks the same: MovieLens ties from -0.5 to -16 spreads), the middle
    of them, by distance from 0 (nearer 0 of two middles), so that the choice is not the plateau's edge. Returns what it
    did, the spread, and the metric at every offset tried (keyed by the multiple of the spread)."""
    layer = model.user_tower.repeat
    layer.set_offset(0.0)
    report: dict = {"metric": metric, "cases": len(cases), "protocol": "history_kept"}
    if len(cases) < MIN_CASES:
        report.update(kept=f"fewer than {MIN_CASES} validation cases", fitted=0.0)
        log.info("repeat offset: 0 (fewer than %d validation cases to fit it on)", MIN_CASES)
        return report
    name, k = metric.split("@")
    k = int(k)
    scorer = ev.model_scorer(model, catalog_ids, batch_size)
    item_index = {item: row for row, item in enumerate(catalog_ids)}
    spread, ranks, repeats = None, np.zeros((len(REPEAT_GRID), len(cases)), np.int64), 0
    for start in range(0, len(cases), batch_size):
        part = ev.slice_cases(cases, start, batch_size)
        scores = np.asarray(scorer(part), np.float64)
        if spread is None:
            spread = float(scores.std()) or 1.0
        ranks[:, start:start + len(part)], found = _repeat_ranks(scores, part, item_index,
                                                                 [m * spread for m in REPEAT_GRID])
        repeats += found
    hit = ranks < k
    gain = hit / np.log2(ranks + 2.0) if name == "ndcg" else hit
    values = [float(x) for x in gain.mean(axis=1)]
    best = max(values)
    tied = sorted((m for m, v in zip(REPEAT_GRID, values) if v == best), key=abs)
    multiple = tied[(len(tied) - 1) // 2]   # a plateau's middle (nearer 0 of two): its edge may not hold on test
    layer.set_offset(multiple * spread)
    log.info("repeat offset fitted on the validation split, history kept (%s): %.4f = %g x the scores' spread "
             "(%.4f; %.4f at 0); %d of %d targets were in their history", metric, multiple * spread, multiple,
             best, values[REPEAT_GRID.index(0.0)], repeats, len(cases))
    return {**report, "spread": round(spread, 6), "fitted_multiple": multiple, "fitted": round(multiple * spread, 6),
            "targets_in_history": repeats, metric: {str(m): round(v, 6) for m, v in zip(REPEAT_GRID, values)}}


def _repeat_ranks(scores: np.ndarray, part: Examples, item_index: dict[str, int],
                  offsets: Sequence[float]) -> tuple[np.ndarray, int]:
    """([offsets, cases] each target's 0-based rank among the whole catalogue when ``offset`` is added to the
    scores of the case's history items, counting the items strictly above it; how many targets are history items).
    The items outside the history are counted once; only a target that is itself a history item moves with the
    offset, and those rows are recounted for each."""
    cases = len(part)
    history = ev.history_mask(part, item_index, scores.shape[1])
    targets = np.array([item_index[t] for t in part.target])
    target = scores[np.arange(cases), targets]
    repeat = history[np.arange(cases), targets]
    others_above = ((scores > target[:, None]) & ~history).sum(axis=1)
    rows, cols = np.nonzero(history)
    out = np.zeros((len(offsets), cases), np.int64)
    for i, offset in enumerate(offsets):
        threshold = target + offset * repeat
        above = others_above.copy()
        if repeat.any():
            moved = scores[repeat] > threshold[repeat][:, None]
            above[repeat] = (moved & ~history[repeat]).sum(axis=1)
        np.add.at(above, rows, scores[rows, cols] + offset > threshold[rows])
        out[i] = above
    return out, int(repeat.sum())
