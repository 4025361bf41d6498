"""Full-catalogue ranking metrics: every item is a candidate, the user's history items are excluded.

Why it exists: sampled-negative metrics flatter a model; production ranks the whole catalogue. Each case's rank
is the number of catalogue items (outside its exclusions) that score strictly above its target. From the ranks:
Recall@K (one target per case, so also the hit rate), NDCG@K and MRR, for all cases, for cases whose target is a
cold item, and for new users. Any scorer works: the trained towers or a baseline such as popularity.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from training.examples import Examples

# scores(cases[start:stop]) → [stop - start, num_catalogue_items]
Scorer = Callable[[Examples], np.ndarray]


def ranks(scorer: Scorer, cases: Examples, item_index: dict[str, int], batch_size: int = 1024,
          progress: bool = False, exclude_history: bool = True) -> np.ndarray:
    """0-based rank of each case's target among all non-excluded catalogue items. ``exclude_history=False``
    ranks the whole catalogue, history items included (how some published numbers were made).

    Ties are broken uniformly at random (seeded): a scorer that gives most items the same score (popularity,
    item-kNN) must not rank its target above all of them for free.
    """
    excluded, kept = both_ranks(scorer, cases, item_index, batch_size, progress, keep=not exclude_history)
    return excluded if exclude_history else kept


def both_ranks(scorer: Scorer, cases: Examples, item_index: dict[str, int], batch_size: int = 1024,
               progress: bool = False, keep: bool = True,
               repeat_offset: float = 0.0) -> tuple[np.ndarray, np.ndarray | None]:
    """(ranks with the history items excluded, ranks with them kept as candidates) from one scoring pass; the
    second is None unless ``keep``. Each protocol breaks ties with its own seeded stream. ``repeat_offset`` (the
    model's: towers/repeat.py) is added to the history items' scores where they are kept, as
    ``recommend_including_history`` does; the first protocol is ``serving_default``'s, which never reaches it (a
    target that repeats a history item stays its candidate, scored without it)."""
    out = np.zeros(len(cases), np.int64)
    kept = np.zeros(len(cases), np.int64) if keep else None
    tie_break, kept_tie_break = np.random.default_rng(0), np.random.default_rng(1)
    bar = tf_keras.utils.Progbar(len(cases), unit_name="user") if progress and len(cases) else None
    for start in range(0, len(cases), batch_size):
        part = slice_cases(cases, start, batch_size)
        scores = np.array(scorer(part), np.float64, copy=True)
        targets = (np.arange(len(part)), [item_index[t] for t in part.target])
        target_scores = scores[targets]
        if kept is not None:
            shifted = scores.copy() if repeat_offset else scores
            add_repeat_offset(shifted, part, item_index, repeat_offset)
            kept[start:start + len(part)] = rank_targets(shifted, shifted[targets], kept_tie_break)
        exclude(scores, part, item_index)
        out[start:start + len(part)] = rank_targets(scores, target_scores, tie_break)
        if bar is not None:
            bar.add(len(part))
    return out, kept


def rank_targets(scores: np.ndarray, target_scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0-based rank of each row's target (scored ``target_scores``, taken before any exclusion) among the row's
    scores: the items that score strictly above it, and a uniformly random share of those that tie."""
    above = (scores > target_scores[:, None]).sum(axis=1)
    ties = np.maximum((scores == target_scores[:, None]).sum(axis=1) - 1, 0)   # other items with its score
    return above + np.floor(rng.random(len(scores)) * (ties + 1)).astype(np.int64)


def exclude(scores: np.ndarray, part: Examples, item_index: dict[str, int]) -> None:
    """Sets the scores of each case's excluded items (its history) to -inf, in place."""
    for i, excluded in enumerate(part.exclude):
        scores[i, [item_index[x] for x in excluded if x in item_index]] = -np.inf


def slice_cases(cases: Examples, start: int, size: int) -> Examples:
    mask = np.zeros(len(cases), bool)
    mask[start:start + size] = True
    return cases.subset(mask)


def summarize(rank: np.ndarray, ks: Sequence[int]) -> dict:
    """Recall@K, NDCG@K for each K, MRR and the number of cases."""
    rank = np.asarray(rank)
    result: dict = {}
    for k in ks:
        hit = rank < k
        result[f"recall@{k}"] = float(hit.mean()) if rank.size else 0.0
        result[f"ndcg@{k}"] = float((hit / np.log2(rank + 2.0)).mean()) if rank.size else 0.0
    result["mrr"] = float((1.0 / (rank + 1.0)).mean()) if rank.size else 0.0
    result["users"] = int(rank.size)
    return result


# metrics.json sub-block → the Examples flag that selects its cases
GROUPS = {"cold_items": "cold_item", "new_users": "new_user", "chinese": "chinese", "cross_lingual": "cross_lingual"}
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LETTER = re.compile(r"[^\W\d_]")


def mostly_chinese(text: str) -> bool:
    """More than half of the text's letters are CJK ideographs."""
    letters = len(LETTER.findall(text))
    return letters > 0 and len(CJK.findall(text)) > letters / 2


def report(rank: np.ndarray, cases: Examples, ks: Sequence[int], kept: np.ndarray | None = None) -> dict:
    """The overall block, and the same block for each of GROUPS (cold-item targets, new users, Chinese text)
    where there are any; with
    ``kept`` (ranks with history items left among the candidates, the protocol of most published numbers), a
    ``history_kept`` sub-block of the same shape."""
    block = summarize(rank, ks)
    for group, flag in GROUPS.items():
        mask = getattr(cases, flag)
        if mask is not None and mask.any():
            block[group] = summarize(rank[mask], ks)
    if kept is not None:
        block["history_kept"] = report(kept, cases, ks)
    return block


def popularity_scorer(item_counts: np.ndarray) -> Scorer:
    """The baseline every recommender must beat: rank items by their number of training interactions."""
    counts = np.asarray(item_counts, np.float64)
    return lambda part: np.broadcast_to(counts, (len(part), counts.size))


def item_vectors(model, catalog_ids: Sequence[str], batch_size: int = 1024) -> np.ndarray:
    """[items, D] the trained item tower's vectors of ``catalog_ids``, in batches."""
    vectors = [model.embed_items(tf.constant(list(catalog_ids[i:i + batch_size]), tf.string)).numpy()
               for i in range(0, len(catalog_ids), batch_size)]
    return np.concatenate(vectors) if vectors else np.zeros((0, 1), np.float32)


def model_scorer(model, catalog_ids: Sequence[str], batch_size: int = 1024) -> Scorer:
    """Scores from the trained towers: item vectors are computed once, user vectors per batch of cases. With the
    item-to-item channel a history item's score with itself is taken off, once per time it is in the history
    (towers/item_item.py; only the history_kept protocol ranks those items, and a repeated target). The repeat
    offset is not in them: ``both_ranks`` adds it where history items are kept (towers/repeat.py)."""
    items = item_vectors(model, catalog_ids, batch_size)
    channel = model.user_tower.item_item
    own = channel.own(items).numpy() if channel is not None else None
    index = {item: row for row, item in enumerate(catalog_ids)}

    def score(part: Examples) -> np.ndarray:
        users = model.embed_users(tf.constant(part.user_id.astype(str).tolist(), tf.string),
                                  tf.constant(part.history.astype(str).tolist(), tf.string)).numpy()
        scores = users @ items.T
        if own is not None:
            take_own_scores(scores, part, index, own)
        return scores

    return score


def take_own_scores(scores: np.ndarray, part: Examples, item_index: dict[str, int], own: np.ndarray) -> None:
    """Takes each history item's score with itself (``own``, per catalogue row) off its score, once for each time
    it is in the case's history, in place: the item-to-item channel's self-score (towers/item_item.py)."""
    for row, history in enumerate(part.history):
        for item in history:
            if item in item_index:
                scores[row, item_index[item]] -= own[item_index[item]]


def history_mask(part: Examples, item_index: dict[str, int], num_items: int) -> np.ndarray:
    """[cases, num_items] bool: which catalogue items are in each case's history."""
    mask = np.zeros((len(part), num_items), bool)
    for row, history in enumerate(part.history):
        mask[row, [item_index[item] for item in history if item in item_index]] = True
    return mask


def add_repeat_offset(scores: np.ndarray, part: Examples, item_index: dict[str, int], offset: float) -> None:
    """Adds ``offset`` (towers/repeat.py) to the score of each item in the case's history, once however often it
    is there, in place."""
    if offset != 0.0:
        scores[history_mask(part, item_index, scores.shape[1])] += offset


def format_table(split: str, block: dict, ks: Sequence[int]) -> str:
    """A plain-text table: rows = model / baselines × all users / cold items / new users."""
    columns = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")] + ["mrr", "users"]
    rows = []

    def add(name: str, metrics: dict) -> None:
        rows.append([name] + [f"{metrics[c]:.4f}" if c != "users" else str(metrics[c]) for c in columns])
        for group in GROUPS:
            if group in metrics:
                rows.append([f"  {group.replace('_', ' ')}"] +
                            [f"{metrics[group][c]:.4f}" if c != "users" else str(metrics[group][c])
                             for c in columns])

    add("two-tower", block)
    for name, metrics in block.get("baselines", {}).items():
        add(name, metrics)
    if "history_kept" in block:   # the published protocol: history items stay among the candidates
        add("two-tower, history kept", {k: v for k, v in block["history_kept"].items() if k != "new_users"})
        for name, metrics in block.get("baselines", {}).items():
            if "history_kept" in metrics:
                add(f"{name}, history kept", {k: v for k, v in metrics["history_kept"].items()
                                              if k != "new_users"})
    header = [f"[{split}]"] + columns
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                       enumerate(zip(row, widths))) for row in [header] + rows]
    return "\n".join(lines)
