"""Format ``amazon_scientific``: UniSRec's Amazon 2018 "Industrial & Scientific" in RecBole atomic files
(``data.path`` = the folder).

Why it exists: a public benchmark to measure against published numbers. Each user's full sequence is rebuilt by
chaining the leave-one-out rows (train prefixes, valid, test), so it is exact even where RecBole truncated the
history lists to 50 items; timestamps are positions 0..n-1 and the given split marks last = test,
second-to-last = valid, the rest train. ``max_users`` keeps the first N users in id order.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque

from ..schema import DataError, Dataset, DropReport
from .common import (
    SLICE_REASON,
    dataset_dir,
    drop_unknown_items,
    items_frame,
    need_file,
    read_tsv,
    sequences_to_frame,
    slice_users,
)

_SCI_TEXT = re.compile(r"(?P<title>.*?)\. (?P<cat>(?:Industrial & Scientific\b[^.]*)?)\. (?P<brand>.*?)\.?\s*",
                       re.S)
_SCI_ROOT = "Industrial & Scientific"
_HISTORY_MAX = 50


def split_scientific_text(text: str) -> tuple[str, str, str, bool]:
    """UniSRec's "title. categories. brand. " -> (title, category, brand, ok).

    The category part always starts with the root "Industrial & Scientific" (or is empty), which anchors the
    split even where titles or brands contain ". " ("Mr. Heater", "J.V. Converting"); `ok` is False where the text
    does not have that shape, and then title is the whole text. The root is removed from the category (every item
    has it). A title that is only HTML debris (" Industrial & Scientific />", 29 items) is rebuilt from brand and
    category, and `ok` is False for it too.
    """
    text = " ".join(text.split())
    m = _SCI_TEXT.fullmatch(text)
    if m is None:
        return text, "", "", False
    title = re.sub(r"\s*/>\s*$", "", m["title"]).strip()
    category = m["cat"][len(_SCI_ROOT):].strip() if m["cat"] else ""
    brand = m["brand"].strip()
    if title in ("", _SCI_ROOT):
        return " ".join(x for x in (brand, category) if x) or text, category, brand, False
    return title, category, brand, True


def load(cfg: dict, on_bad_rows: str, max_users: int | None) -> Dataset:
    """The Scientific folder as a Dataset with its leave-one-out split (see the module docstring)."""
    d = dataset_dir(cfg, "amazon_scientific")
    report = DropReport()
    f_text, f_i2i, f_u2i = (need_file(d, f"Scientific.{x}") for x in ("text", "item2index", "user2index"))
    f_inter = {s: need_file(d, f"Scientific.{s}.inter") for s in ("train", "valid", "test")}

    i2i = read_tsv(f_i2i, ["asin", "idx"])
    u2i = read_tsv(f_u2i, ["user", "idx"])
    idx2asin = dict(zip(i2i["idx"].str.strip(), i2i["asin"].str.strip()))
    idx2user = dict(zip(u2i["idx"].str.strip(), u2i["user"].str.strip()))
    for path, df, what in ((f_i2i, i2i, "item"), (f_u2i, u2i, "user")):
        dup = df.iloc[:, 1].duplicated(keep=False) | df.iloc[:, 0].duplicated(keep=False)
        if dup.any():
            raise DataError(f"{path}: duplicate {what} id/index, e.g. {df[dup].iloc[0].tolist()}")

    text = read_tsv(f_text, ["asin", "text"])
    text["asin"] = text["asin"].str.strip()
    text = text.drop_duplicates("asin", keep="first")
    ids, titles, cats, brands = [], [], [], []
    unsplit = []
    for asin, t in zip(text["asin"], text["text"]):
        if not t.strip():
            continue
        title, cat, brand, ok = split_scientific_text(t)
        if not ok:
            unsplit.append(asin)
        ids.append(asin)
        titles.append(title)
        cats.append(cat)
        brands.append(brand)
    report.warn(str(f_text), "title rebuilt from brand/category (text not in 'title. categories. brand.' shape)",
                len(unsplit), unsplit[0] if unsplit else None)
    items = items_frame(ids, titles, categories=cats, brands=brands)
    no_text = sorted(set(idx2asin.values()) - set(items["item_id"]))
    if no_text:
        if on_bad_rows == "error":
            raise DataError(f"{f_text}: {len(no_text)} item(s) of {f_i2i.name} have no text row, "
                            f"e.g. {no_text[:5]} [on_bad_rows: error]")
        report.drop(str(f_i2i), "no item text", len(no_text), no_text[0])
    if items.empty:
        raise DataError(f"{f_text}: no items with text")

    # Each inter file: user index, history (space-separated item indices, the last <=50), target item index.
    rows: dict[str, dict[str, list]] = {}
    for split, path in f_inter.items():
        df = read_tsv(path, ["user", "history", "target"], header=True)
        if df.empty:
            raise DataError(f"{path}: no rows")
        rows[split] = df
    user_order = sorted(rows["test"]["user"].str.strip().unique(), key=lambda u: (len(u), u))
    keep_users = slice_users(user_order, max_users)

    by_user: dict[str, list] = defaultdict(list)  # user -> [(history tuple, target, split, line), ...]
    for split, df in rows.items():
        for line, (u, h, t) in enumerate(zip(df["user"].str.strip(), df["history"], df["target"].str.strip()),
                                         start=2):
            by_user[u].append((tuple(h.split()), t, split, line))

    user_ids, sequences = [], []
    sliced = 0
    for u in user_order:
        seq = _rebuild_sequence(u, by_user[u], f_inter)
        if keep_users is not None and u not in keep_users:
            sliced += len(seq)
            continue
        if u not in idx2user:
            raise DataError(f"{f_inter['test']}: user index {u} is not in {f_u2i}")
        missing = [i for i in seq if i not in idx2asin]
        if missing:
            raise DataError(f"{f_inter['test']}: user {u}: item index {missing[0]} is not in {f_i2i}")
        user_ids.append(idx2user[u])
        sequences.append([idx2asin[i] for i in seq])
    extra_users = set(by_user) - set(user_order)
    if extra_users:
        raise DataError(f"{f_inter['train']}: user(s) {sorted(extra_users)[:5]} have train/valid rows but no row "
                        f"in {f_inter['test'].name}")
    report.drop(str(f_inter["test"].parent / "Scientific.*.inter"), SLICE_REASON, sliced)

    inter, given = sequences_to_frame(user_ids, sequences, event="review")
    inter, given = drop_unknown_items(inter, given, items, str(f_text), report, on_bad_rows)
    return Dataset(items=items, interactions=inter, users=None, given_split=given, report=report,
                   name="amazon_scientific")


def _rebuild_sequence(user: str, user_rows: list, files: dict) -> list[str]:
    """One user's full item sequence (item indices) from their leave-one-out rows.

    Every row is (history window, target): the window is the last <=50 items before the target. Starting from the
    shortest history, the row whose window equals the last 50 items built so far gives the next item; this is
    exact even for users with more than 51 items, whose test/valid histories are truncated. The result must use
    every row, end with the valid then the test target, and agree with every row's window; otherwise DataError.
    """
    if not user_rows:
        raise DataError(f"{files['train']}: user {user} has no rows")
    nexts: dict[tuple, deque] = defaultdict(deque)
    for hist, target, _, _ in sorted(user_rows, key=lambda r: (len(r[0]), r[2] != "train", -r[3])):
        nexts[hist].append(target)
    start = min(user_rows, key=lambda r: (len(r[0]), r[2] != "train", -r[3]))
    seq = list(start[0])
    used = 0
    while True:
        key = tuple(seq[-_HISTORY_MAX:])
        q = nexts.get(key)
        if not q:
            break
        seq.append(q.popleft())
        used += 1
    by_split = {s: [r for r in user_rows if r[2] == s] for s in ("valid", "test")}
    for s in ("valid", "test"):
        if len(by_split[s]) != 1:
            raise DataError(f"{files[s]}: user {user} has {len(by_split[s])} rows (expected exactly 1)")
    problems = []
    if used != len(user_rows):
        problems.append(f"only {used} of its {len(user_rows)} rows chain into one sequence")
    if len(seq) < 2 or seq[-1] != by_split["test"][0][1]:
        problems.append(f"last item {seq[-1] if seq else None} != test target {by_split['test'][0][1]}")
    if len(seq) < 2 or seq[-2] != by_split["valid"][0][1]:
        problems.append(f"second-to-last item {seq[-2] if len(seq) > 1 else None} != valid target "
                        f"{by_split['valid'][0][1]}")
    if problems:
        s = "test" if "test" in problems[-1] else "valid"
        raise DataError(f"{files[s]}: user {user} (line {by_split[s][0][3]}): cannot rebuild a consistent "
                        f"sequence: {'; '.join(problems)}")
    return seq
