"""From interactions and their split labels to training examples and evaluation cases.

Why it exists: both training and evaluation ask "what did this user do before this moment?". Here it is
answered once: a training example is (user, the previous ``history_len`` items, the item they went to next);
an evaluation case is one target per user in the split with everything before it as history, its history
items to exclude from the ranking, and whether the target is a cold item or the user is new.
"""

from __future__ import annotations

import dataclasses
import logging
import typing

import numpy as np
import pandas as pd

log = logging.getLogger("twotower.examples")


@dataclasses.dataclass
class Examples:
    """Rows of (user_id, history [H] most recent last, "" padded, target, weight), plus evaluation facts; or
    windows of next-item steps (``training_sequences``: target and weight [H])."""

    user_id: np.ndarray
    history: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    exclude: list[np.ndarray] = dataclasses.field(default_factory=list)  # per row, items not to rank
    cold_item: np.ndarray | None = None  # target never seen in training interactions
    new_user: np.ndarray | None = None   # user had no training interactions
    chinese: np.ndarray | None = None    # the user's text or the target item's text is mostly Chinese
    cross_lingual: np.ndarray | None = None   # the user's text is not Chinese, the target item's text is

    def __len__(self) -> int:
        return len(self.target)

    def steps(self) -> int:
        """Next-item examples: the rows, or with ``training_sequences``' windows the steps that have a target."""
        return int(np.count_nonzero(self.target != ""))

    def subset(self, mask: np.ndarray) -> Examples:
        index = np.flatnonzero(mask)
        return Examples(self.user_id[index], self.history[index], self.target[index], self.weight[index],
                        [self.exclude[i] for i in index] if self.exclude else [],
                        None if self.cold_item is None else self.cold_item[index],
                        None if self.new_user is None else self.new_user[index],
                        None if self.chinese is None else self.chinese[index],
                        None if self.cross_lingual is None else self.cross_lingual[index])


def _pad(history: list[str], length: int) -> list[str]:
    history = history[-length:]
    return [""] * (length - len(history)) + history


def training_examples(interactions: pd.DataFrame, labels: pd.Series, history_len: int) -> Examples:
    """One example per training interaction; its history is the user's previous training items."""
    train = interactions[labels.to_numpy() == "train"]
    users, histories, targets, weights = [], [], [], []
    for user, group in train.groupby("user_id", sort=False):
        items = group["item_id"].tolist()
        for position, (item, weight) in enumerate(zip(items, group["weight"].tolist())):
            users.append(user)
            histories.append(_pad(items[max(0, position - history_len):position], history_len))
            targets.append(item)
            weights.append(weight)
    return Examples(np.array(users, dtype=object), np.array(histories, dtype=object).reshape(-1, history_len),
                    np.array(targets, dtype=object), np.array(weights, np.float32))


def training_sequences(interactions: pd.DataFrame, labels: pd.Series, history_len: int) -> Examples:
    """Each user's training sequence cut into windows of ``history_len`` next-item steps, for the `causal` history
    encoder: row r holds history [H] (the items before each step: "" where there is none yet, then the items in
    order) and target [H] (the item of each step, "" after the sequence ends), weight [H] (0 there). Step t of a
    window is the example (the window's items before t, its target) that ``training_examples`` makes, with the
    history cut at the window's start, so the same targets are taught, all steps of a window in one pass."""
    train = interactions[labels.to_numpy() == "train"]
    users, histories, targets, weights = [], [], [], []
    for user, group in train.groupby("user_id", sort=False):
        items, item_weights = group["item_id"].tolist(), group["weight"].tolist()
        before = [""] + items
        for start in range(0, len(items), history_len):
            stop = min(start + history_len, len(items))
            pad = [""] * (history_len - (stop - start))
            users.append(user)
            histories.append(before[start:stop] + pad)
            targets.append(items[start:stop] + pad)
            weights.append(item_weights[start:stop] + [0.0] * len(pad))
    shape = (-1, history_len)
    return Examples(np.array(users, dtype=object), np.array(histories, dtype=object).reshape(shape),
                    np.array(targets, dtype=object).reshape(shape), np.array(weights, np.float32).reshape(shape))


class CaseRows(typing.NamedTuple):
    """Evaluation cases of many users as row numbers and item codes (see :func:`case_rows`)."""

    row: np.ndarray              # [n] the target's row
    history: np.ndarray          # [n, history_len] int32: item code + 1 of the items before the target, 0 pads
    exclude_offsets: np.ndarray  # [n + 1] case i excludes exclude[exclude_offsets[i]:exclude_offsets[i + 1]]
    exclude: np.ndarray          # item codes: the user's earlier items other than the target, first seen first
    new_user: np.ndarray         # [n] bool: the user has no training row


def case_rows(user: np.ndarray, items: np.ndarray, labels: np.ndarray, split: str, history_len: int,
              novel_only: bool) -> CaseRows:
    """One evaluation case per user with a ``split`` row, for the rows of many users at once (no loop over users).

    ``user`` numbers each row's user, every user's rows together and in time order; ``items`` holds each row's item
    code (>= 0); ``labels`` each row's split. Per user with a ``split`` row: the first such row (the first whose
    item is new to the user when ``novel_only``, for time windows where repeats are common) is the target; its
    history is the previous ``history_len`` items of any split; its exclusions are the user's earlier items other
    than the target. Users without such a row get no case.
    """
    n = len(items)
    start = np.r_[0, np.flatnonzero(user[1:] != user[:-1]) + 1]
    first_row = start[np.searchsorted(start, np.arange(n), side="right") - 1]
    candidate = labels == split
    if novel_only:
        key = user.astype(np.int64) * (int(items.max(initial=0)) + 1) + items
        _, first_sighting = np.unique(key, return_index=True)
        fresh = np.zeros(n, bool)
        fresh[first_sighting] = True
        candidate &= fresh
    rows = np.flatnonzero(candidate)
    rows = rows[np.r_[True, user[rows][1:] != user[rows][:-1]]] if len(rows) else rows
    back = rows[:, None] - np.arange(history_len, 0, -1)[None, :]
    history = np.where(back >= first_row[rows][:, None], items[np.maximum(back, 0)] + 1, 0).astype(np.int32)
    lengths = rows - first_row[rows]
    case = np.repeat(np.arange(len(rows)), lengths)
    earlier = items[np.repeat(first_row[rows], lengths) + np.arange(lengths.sum()) - np.repeat(
        np.cumsum(lengths) - lengths, lengths)] if len(rows) else np.zeros(0, np.int64)
    keep = earlier != items[rows][case]
    case, earlier = case[keep], earlier[keep]
    width = int(items.max(initial=0)) + 1
    _, first = np.unique(case.astype(np.int64) * width + earlier, return_index=True)
    first.sort()   # each (case, item) at its first sighting, in row order: grouped by case, first seen first
    offsets = np.searchsorted(case[first], np.arange(len(rows) + 1))
    trained = np.zeros(int(user.max(initial=-1)) + 1, bool)
    trained[user[labels == "train"]] = True
    return CaseRows(rows, history, offsets, earlier[first], ~trained[user[rows]])


def evaluation_cases(interactions: pd.DataFrame, labels: pd.Series, split: str, history_len: int,
                     novel_only: bool) -> tuple[Examples, dict]:
    """One case per user with an interaction labelled ``split`` (:func:`case_rows`), users in order of first
    appearance.

    The target is the user's first interaction in the split whose item they have not interacted with before
    (``novel_only``, for time windows where repeats are common) or simply the first one (leave-last-out). The
    history is everything before it, in any split. Returns the cases and counts of users skipped, with reasons.
    """
    user_codes, user_ids = pd.factorize(interactions["user_id"].to_numpy(object), sort=False)
    order = np.argsort(user_codes, kind="stable")   # each user's rows together, in their order
    item_codes, item_ids = pd.factorize(interactions["item_id"].to_numpy(object), sort=False)
    user, items, label = user_codes[order], item_codes[order].astype(np.int64), labels.to_numpy()[order]
    found = case_rows(user, items, label, split, history_len, novel_only)
    names = np.array(["", *item_ids], dtype=object)   # item code + 1 -> id, "" pads
    targets = items[found.row]
    excluded = names[found.exclude + 1]
    offsets = found.exclude_offsets
    cases = Examples(np.asarray(user_ids, dtype=object)[user[found.row]],
                     names[found.history].reshape(-1, history_len), names[targets + 1],
                     np.ones(len(targets), np.float32),
                     [excluded[offsets[i]:offsets[i + 1]] for i in range(len(targets))],
                     ~np.isin(targets, items[label == "train"]), found.new_user)
    skipped = {"no novel item in the split": len(np.unique(user[label == split])) - len(cases)}
    for reason, count in skipped.items():
        if count:
            log.info("%s: %d user(s) not evaluated: %s", split, count, reason)
    return cases, skipped
