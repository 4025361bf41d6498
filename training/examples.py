"""From interactions and their split labels to training examples and evaluation cases.

Why it exists: both training and evaluation ask "what did this user do before this moment?". Here it is
answered once: a training example is (user, the previous ``history_len`` items, the item they went to next);
an evaluation case is one target per user in the split with everything before it as history, its history
items to exclude from the ranking, and whether the target is a cold item or the user is new.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

log = logging.getLogger("twotower.examples")


@dataclasses.dataclass
class Examples:
    """Rows of (user_id, history [H] most recent last, "" padded, target, weight), plus evaluation facts."""

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

    def subset(self, mask: np.ndarray) -> "Examples":
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


def evaluation_cases(interactions: pd.DataFrame, labels: pd.Series, split: str, history_len: int,
                     novel_only: bool) -> tuple[Examples, dict]:
    """One case per user with an interaction labelled ``split``.

    The target is the user's first interaction in the split whose item they have not interacted with before
    (``novel_only``, for time windows where repeats are common) or simply the first one (leave-last-out). The
    history is everything before it, in any split. Returns the cases and counts of users skipped, with reasons.
    """
    label = labels.to_numpy()
    train_items = set(interactions.loc[label == "train", "item_id"])
    train_users = set(interactions.loc[label == "train", "user_id"])
    frame = interactions.assign(_label=label)
    users, histories, targets, weights, excludes, cold, new = [], [], [], [], [], [], []
    skipped = {"no novel item in the split": 0}
    for user, group in frame.groupby("user_id", sort=False):
        in_split = np.flatnonzero(group["_label"].to_numpy() == split)
        if in_split.size == 0:
            continue
        items = group["item_id"].tolist()
        chosen = None
        for position in in_split:
            if not novel_only or items[position] not in items[:position]:
                chosen = position
                break
        if chosen is None:
            skipped["no novel item in the split"] += 1
            continue
        target = items[chosen]
        seen = list(dict.fromkeys(items[:chosen]))
        users.append(user)
        histories.append(_pad(items[:chosen], history_len))
        targets.append(target)
        weights.append(1.0)
        excludes.append(np.array([i for i in seen if i != target], dtype=object))
        cold.append(target not in train_items)
        new.append(user not in train_users)
    cases = Examples(np.array(users, dtype=object), np.array(histories, dtype=object).reshape(-1, history_len),
                     np.array(targets, dtype=object), np.array(weights, np.float32), excludes,
                     np.array(cold, bool), np.array(new, bool))
    for reason, count in skipped.items():
        if count:
            log.info("%s: %d user(s) not evaluated: %s", split, count, reason)
    return cases, skipped
