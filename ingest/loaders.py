"""`load_dataset(cfg)`: the `data` block of a config -> a normalised :class:`~ingest.schema.Dataset`.

Formats (``cfg["format"]``):

``files``
    The shop's own files (``items``, ``interactions``, optional ``users``; CSV/TSV, Parquet or JSONL), read and
    validated by :mod:`ingest.validate`.
``amazon_scientific``
    UniSRec's Amazon 2018 "Industrial & Scientific" in RecBole atomic files (``cfg["path"]`` = the folder).
    Each user's full sequence is rebuilt by chaining the leave-one-out rows (train prefixes, valid, test), so it
    is exact even where RecBole truncated the history lists to 50 items; timestamps are positions 0..n-1 and
    ``given_split`` marks last = test, second-to-last = valid, the rest train.
``amazon_beauty``
    The S3-Rec / P5 Amazon 2014 Beauty 5-core (``Beauty.txt`` sequences; brand/category names recovered for each
    item from ``Beauty_item2attributes.json`` + ``datamaps.json``). Timestamps are positions; ``given_split`` is
    the published leave-one-out split.
``movielens_100k``
    GroupLens MovieLens 100K: ratings as interactions (weight = rating, event "rating"), titles and genres as item
    text, age/gender/occupation as user features.

``max_users`` (optional int) keeps only the first N users -- in order of first appearance for ``files``, in id
order for the research datasets -- and counts the rows it leaves out under the reason "max_users slice".
Relative paths are relative to the current working directory.
"""

from __future__ import annotations

import csv
import html
import json
import re
import time
from collections import Counter, defaultdict, deque
from pathlib import Path

import numpy as np
import pandas as pd

from .privacy import hash_dataset, key_from_config
from .schema import INTERACTION_COLUMNS, ITEM_COLUMNS, Dataset, DataError, DropReport, log
from .validate import (ON_BAD_ROWS, REQUIRED_COLUMNS, first_users, normalize_interactions, normalize_items,
                       normalize_users, read_table)

SLICE_REASON = "max_users slice"
_RECBOLE_HEADER = re.compile(r"\w+:(token|token_seq|float|float_seq)")


def load_dataset(cfg: dict) -> Dataset:
    """Load the dataset that the config's `data` block describes (see the module docstring)."""
    if not isinstance(cfg, dict):
        raise DataError(f"the data block of the config must be a mapping; got {type(cfg).__name__}")
    fmt = cfg.get("format", "files")
    if fmt not in LOADERS:
        raise DataError(f"data.format {fmt!r} is not known; valid formats: {', '.join(LOADERS)}")
    on_bad_rows = cfg.get("on_bad_rows", "drop")
    if on_bad_rows not in ON_BAD_ROWS:
        raise DataError(f"data.on_bad_rows must be one of {', '.join(ON_BAD_ROWS)}; got {on_bad_rows!r}")
    max_users = cfg.get("max_users")
    if max_users is not None and (isinstance(max_users, bool) or not isinstance(max_users, (int, np.integer))
                                  or max_users < 1):
        raise DataError(f"data.max_users must be a positive integer or null; got {max_users!r}")
    key = key_from_config(cfg)   # before reading anything: a missing salt fails fast
    t0 = time.perf_counter()
    ds = LOADERS[fmt](cfg, on_bad_rows, max_users)
    if key is not None:
        ds = hash_dataset(ds, key)
    _check_dataset(ds)
    log.info("loaded %s: %d items, %d users, %d interactions in %.2fs (dropped %d row(s))", ds.name,
             len(ds.items), ds.interactions["user_id"].nunique(), len(ds.interactions),
             time.perf_counter() - t0, ds.report.total)
    return ds


# ---------------------------------------------------------------------------------------------------------------
# The shop's own files


def _load_files(cfg: dict, on_bad_rows: str, max_users: int | None) -> Dataset:
    for key in ("items", "interactions"):
        if not cfg.get(key):
            raise DataError(f"data.{key} (path to the {key} file) is required for format 'files'")
    report = DropReport()
    items_path, inter_path = Path(cfg["items"]), Path(cfg["interactions"])

    raw_items = read_table(items_path, required=REQUIRED_COLUMNS["items"], kind="items")
    items = normalize_items(raw_items, str(items_path), report, on_bad_rows)

    raw_inter = read_table(inter_path, required=REQUIRED_COLUMNS["interactions"], kind="interactions")
    kept_users = None
    keep = first_users(raw_inter["user_id"].astype(str).str.strip(), max_users)
    if keep is not None:
        report.drop(str(inter_path), SLICE_REASON, int((~keep).sum()))
        attrs = dict(raw_inter.attrs)
        raw_inter = raw_inter[keep]
        raw_inter.attrs.update(attrs)
        kept_users = set(raw_inter["user_id"].astype(str).str.strip())
    interactions = normalize_interactions(raw_inter, items, str(inter_path), report, on_bad_rows,
                                          cfg.get("timestamp_unit", "auto"))

    users = None
    if cfg.get("users"):
        users_path = Path(cfg["users"])
        raw_users = read_table(users_path, required=REQUIRED_COLUMNS["users"], kind="users")
        users = normalize_users(raw_users, str(users_path), report, on_bad_rows)
        if kept_users is not None:
            in_slice = users["user_id"].isin(kept_users)
            report.drop(str(users_path), SLICE_REASON, int((~in_slice).sum()))
            users = users[in_slice].reset_index(drop=True)
    name = cfg.get("name") or inter_path.stem
    return Dataset(items=items, interactions=interactions, users=users, report=report, name=name)


# ---------------------------------------------------------------------------------------------------------------
# Shared research datasets: helpers


def _dataset_dir(cfg: dict, fmt: str) -> Path:
    if not cfg.get("path"):
        raise DataError(f"data.path (the dataset folder) is required for format {fmt!r}")
    d = Path(cfg["path"])
    if not d.is_dir():
        raise DataError(f"{fmt} dataset folder not found: {d}")
    return d


def _need(d: Path, name: str) -> Path:
    p = d / name
    if not p.is_file():
        raise DataError(f"{p.parent.name} dataset file not found: {p}")
    return p


def _read_tsv(path: Path, names: list[str], header: str = "auto", encoding: str = "utf-8",
              sep: str = "\t") -> pd.DataFrame:
    """A plain delimited file without quoting. header="auto": skip a RecBole `field:type` header line if present."""
    try:
        df = pd.read_csv(path, sep=sep, header=None, names=names, dtype=str, keep_default_na=False,
                         na_filter=False, quoting=csv.QUOTE_NONE, encoding=encoding, index_col=False)
    except (UnicodeDecodeError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    if header == "auto" and len(df) and any(_RECBOLE_HEADER.fullmatch(str(v).strip()) for v in df.iloc[0]):
        df = df.iloc[1:]
    elif header is True:
        df = df.iloc[1:]
    return df.reset_index(drop=True)


def _sequences_to_frame(user_ids: list[str], sequences: list[list[str]], event: str) -> tuple[pd.DataFrame,
                                                                                               pd.Series]:
    """Per-user ordered item lists -> interactions (timestamp = position) and the leave-one-out split."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    n = int(lengths.sum())
    pos = np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    from_end = np.repeat(lengths, lengths) - pos  # 1 = last
    split = np.where(from_end == 1, "test", np.where(from_end == 2, "valid", "train"))
    split[np.repeat(lengths < 3, lengths)] = "train"
    inter = pd.DataFrame({
        "user_id": pd.Series(np.repeat(np.asarray(user_ids, dtype=object), lengths), dtype=str),
        "item_id": pd.Series([i for s in sequences for i in s], dtype=str),
        "timestamp": pos.astype(np.int64),
        "event": pd.Series([event] * n, dtype=str),
        "weight": np.ones(n, dtype=float),
    })
    inter["__split"] = split
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    given = pd.Series(inter.pop("__split").to_numpy(), index=inter.index, name="split", dtype=str)
    return inter, given


def _drop_unknown_items(inter: pd.DataFrame, given: pd.Series | None, items: pd.DataFrame, source: str,
                        report: DropReport, on_bad_rows: str) -> tuple[pd.DataFrame, pd.Series | None]:
    unknown = ~inter["item_id"].isin(set(items["item_id"]))
    if unknown.any():
        first = inter[unknown].iloc[0]
        example = f"item {first['item_id']}"   # never a user id: logs stay free of them (data.hash_user_ids)
        if on_bad_rows == "error":
            raise DataError(f"{source}: {int(unknown.sum())} interaction(s) with an item that has no usable "
                            f"item row (field 'item_id'), e.g. {example} [on_bad_rows: error]")
        report.drop(source, "unknown item", int(unknown.sum()), example)
        inter = inter[~unknown].reset_index(drop=True)
        if given is not None:
            given = pd.Series(given[~unknown].to_numpy(), index=inter.index, name="split", dtype=str)
    return inter, given


def _slice_users(order: list[str], max_users: int | None) -> set[str] | None:
    return None if max_users is None else set(order[:max_users])


def _items_frame(ids, titles, descriptions=None, categories=None, brands=None, extra=None) -> pd.DataFrame:
    n = len(ids)
    blank = [""] * n
    cols = {"item_id": ids, "title": titles, "description": descriptions or blank, "category": categories or blank,
            "brand": brands or blank}
    df = pd.DataFrame({k: pd.Series(v, dtype=str) for k, v in cols.items()})
    df["price"] = np.full(n, np.nan)
    for k, v in (extra or {}).items():
        df[k] = pd.Series(v, dtype=str)
    return df


# ---------------------------------------------------------------------------------------------------------------
# Amazon Scientific (UniSRec / RecBole atomic files)

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


def _load_amazon_scientific(cfg: dict, on_bad_rows: str, max_users: int | None) -> Dataset:
    d = _dataset_dir(cfg, "amazon_scientific")
    report = DropReport()
    f_text, f_i2i, f_u2i = (_need(d, f"Scientific.{x}") for x in ("text", "item2index", "user2index"))
    f_inter = {s: _need(d, f"Scientific.{s}.inter") for s in ("train", "valid", "test")}

    i2i = _read_tsv(f_i2i, ["asin", "idx"])
    u2i = _read_tsv(f_u2i, ["user", "idx"])
    idx2asin = dict(zip(i2i["idx"].str.strip(), i2i["asin"].str.strip()))
    idx2user = dict(zip(u2i["idx"].str.strip(), u2i["user"].str.strip()))
    for path, df, what in ((f_i2i, i2i, "item"), (f_u2i, u2i, "user")):
        dup = df.iloc[:, 1].duplicated(keep=False) | df.iloc[:, 0].duplicated(keep=False)
        if dup.any():
            raise DataError(f"{path}: duplicate {what} id/index, e.g. {df[dup].iloc[0].tolist()}")

    text = _read_tsv(f_text, ["asin", "text"])
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
    items = _items_frame(ids, titles, categories=cats, brands=brands)
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
        df = _read_tsv(path, ["user", "history", "target"], header=True)
        if df.empty:
            raise DataError(f"{path}: no rows")
        rows[split] = df
    user_order = sorted(rows["test"]["user"].str.strip().unique(), key=lambda u: (len(u), u))
    keep_users = _slice_users(user_order, max_users)

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

    inter, given = _sequences_to_frame(user_ids, sequences, event="review")
    inter, given = _drop_unknown_items(inter, given, items, str(f_text), report, on_bad_rows)
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
    for hist, target, split, line in sorted(user_rows, key=lambda r: (len(r[0]), r[2] != "train", -r[3])):
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


# ---------------------------------------------------------------------------------------------------------------
# Amazon Beauty (S3-Rec / P5)

# S3-Rec kept brand/category names that occur on >= 5 items and numbered them in first-appearance order, while
# datamaps.json numbers all 2,320 names the same way; so S3-Rec's attribute k is the k-th datamaps attribute with
# attributeid2num >= 5 (checked: all 637 counts agree).
_S3REC_ATTRIBUTE_CORE = 5
_NO_BRAND = {"", "unknown", "n/a", "na", "none", "generic"}


def beauty_attribute_names(datamaps: dict, item2attributes: dict) -> dict[int, str] | None:
    """S3-Rec attribute id -> name, or None when the datamaps counts do not line up with S3-Rec's ids."""
    num = {int(k): int(v) for k, v in datamaps.get("attributeid2num", {}).items()}
    id2attr = datamaps.get("id2attribute", {})
    counts = Counter(int(a) for attrs in item2attributes.values() for a in attrs)
    kept = [k for k in sorted(num) if num[k] >= _S3REC_ATTRIBUTE_CORE]
    mapping = {i + 1: k for i, k in enumerate(kept)}
    if not counts or set(counts) - set(mapping) or any(counts[i] != num[mapping[i]] for i in counts):
        return None
    return {i: html.unescape(str(id2attr.get(str(k), ""))).strip() for i, k in mapping.items()}


def _load_amazon_beauty(cfg: dict, on_bad_rows: str, max_users: int | None) -> Dataset:
    d = _dataset_dir(cfg, "amazon_beauty")
    report = DropReport()
    f_seq, f_maps, f_attr = (_need(d, n) for n in ("Beauty.txt", "datamaps.json", "Beauty_item2attributes.json"))
    try:
        datamaps = json.loads(f_maps.read_text(encoding="utf-8"))
        item2attr = json.loads(f_attr.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{d}: cannot read the JSON maps: {e}") from None
    id2item, id2user = datamaps.get("id2item"), datamaps.get("id2user")
    if not isinstance(id2item, dict) or not isinstance(id2user, dict):
        raise DataError(f"{f_maps}: expected 'id2item' and 'id2user' mappings")

    names = beauty_attribute_names(datamaps, item2attr)
    if names is None:
        report.warn(str(f_attr), "attribute ids do not line up with datamaps.json names; titles are placeholders",
                    len(id2item))
        names = {}
    # A name that is ever 2nd or later in an item's list is a category; a first name that never is, the brand
    # (S3-Rec lists the brand first, then the category path(s) below "Beauty").
    later = {a for attrs in item2attr.values() for a in attrs[1:]}
    ids, titles, cats, brands = [], [], [], []
    no_brand = no_text = 0
    for iid in sorted(id2item, key=int):
        attrs = item2attr.get(iid, [])
        brand = ""
        if attrs and attrs[0] not in later:
            brand = names.get(attrs[0], "")
            attrs = attrs[1:]
        if brand.lower() in _NO_BRAND:
            brand = ""
        categories = list(dict.fromkeys(n for n in (names.get(a, "") for a in attrs) if n))
        if brand and categories:
            title = f"{brand} {categories[-1]}"
        elif brand:
            title = f"{brand} beauty product"
        elif categories:
            title = f"Beauty product: {categories[-1]}"
            no_brand += 1
        else:
            title = "Beauty product"
            no_text += 1
        ids.append(str(id2item[iid]))
        titles.append(title)
        cats.append(", ".join(categories))
        brands.append(brand)
    report.warn(str(f_attr), "no brand: title from category names only", no_brand)
    report.warn(str(f_attr), "no brand or category: placeholder title 'Beauty product'", no_text)
    items = _items_frame(ids, titles, categories=cats, brands=brands)
    if not items["item_id"].is_unique:
        raise DataError(f"{f_maps}: id2item maps two ids to the same ASIN")

    user_ids, sequences = [], []
    sliced = 0
    with f_seq.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            uid, seq = parts[0], parts[1:]
            if uid not in id2user:
                raise DataError(f"{f_seq}: line {line_no}: user id {uid} is not in {f_maps.name} id2user")
            if max_users is not None and len(user_ids) >= max_users:
                sliced += len(seq)
                continue
            bad = [i for i in seq if i not in id2item]
            if bad:
                raise DataError(f"{f_seq}: line {line_no}: item id {bad[0]} is not in {f_maps.name} id2item")
            user_ids.append(str(id2user[uid]))
            sequences.append([str(id2item[i]) for i in seq])
    report.drop(str(f_seq), SLICE_REASON, sliced)
    if not sequences:
        raise DataError(f"{f_seq}: no user sequences")
    inter, given = _sequences_to_frame(user_ids, sequences, event="review")
    inter, given = _drop_unknown_items(inter, given, items, str(f_seq), report, on_bad_rows)
    return Dataset(items=items, interactions=inter, users=None, given_split=given, report=report,
                   name="amazon_beauty")


# ---------------------------------------------------------------------------------------------------------------
# MovieLens 100K

_AGE_BANDS = ((18, "under 18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55"))
_ML_OCCUPATION_TEXT = {"none": "with no occupation", "other": "", "healthcare": "healthcare worker"}


def _age_band(age: int) -> str:
    for upper, band in _AGE_BANDS:
        if age < upper:
            return band
    return "56+"


def _load_movielens_100k(cfg: dict, on_bad_rows: str, max_users: int | None) -> Dataset:
    d = _dataset_dir(cfg, "movielens_100k")
    report = DropReport()
    f_data, f_item, f_user, f_genre = (_need(d, n) for n in ("u.data", "u.item", "u.user", "u.genre"))

    genres = _read_tsv(f_genre, ["name", "idx"], header=False, sep="|", encoding="latin-1")
    genres = genres[genres["name"].str.strip() != ""]
    genre_names = [n for n, _ in sorted(zip(genres["name"], genres["idx"].astype(int)), key=lambda x: x[1])]
    item_cols = ["item_id", "title", "release_date", "video_release_date", "url", *genre_names]
    raw = _read_tsv(f_item, item_cols, header=False, sep="|", encoding="latin-1")
    flags = raw[genre_names].to_numpy() == "1"
    item_genres = [[g for g, f in zip(genre_names, row) if f] for row in flags]
    titles = raw["title"].str.strip()
    empty = titles == ""
    descriptions = []
    for date, gs in zip(raw["release_date"].str.strip(), item_genres):
        parts = [f"Released {date}." if date else "", f"Genres: {', '.join(gs)}." if gs else ""]
        descriptions.append(" ".join(p for p in parts if p))
    items = _items_frame(raw["item_id"].str.strip().tolist(), titles.tolist(), descriptions=descriptions,
                         categories=[", ".join(g) for g in item_genres],
                         extra={"release_date": raw["release_date"].str.strip().tolist(),
                                "imdb_url": raw["url"].str.strip().tolist()})
    if empty.any():
        if on_bad_rows == "error":
            raise DataError(f"{f_item}: line {int(np.flatnonzero(empty)[0]) + 1}: empty title (field 'title')")
        report.drop(str(f_item), "empty title", int(empty.sum()), f"item {items['item_id'][empty].iloc[0]}")
        items = items[~empty.to_numpy()].reset_index(drop=True)
    if not items["item_id"].is_unique:
        raise DataError(f"{f_item}: duplicate item ids")

    data = _read_tsv(f_data, ["user_id", "item_id", "rating", "timestamp"], header=False)
    user_order = sorted(data["user_id"].unique(), key=int)
    keep = _slice_users(user_order, max_users)
    if keep is not None:
        in_slice = data["user_id"].isin(keep)
        report.drop(str(f_data), SLICE_REASON, int((~in_slice).sum()))
        data = data[in_slice]
    inter = pd.DataFrame({
        "user_id": data["user_id"].astype(str).to_numpy(),
        "item_id": data["item_id"].astype(str).to_numpy(),
        "timestamp": data["timestamp"].astype(np.int64).to_numpy(),
        "event": "rating",
        "weight": data["rating"].astype(float).to_numpy(),
    }).astype({"user_id": str, "item_id": str, "event": str})
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    inter, _ = _drop_unknown_items(inter, None, items, str(f_data), report, on_bad_rows)

    u = _read_tsv(f_user, ["user_id", "age", "gender", "occupation", "zip_code"], header=False, sep="|",
                  encoding="latin-1")
    if keep is not None:
        in_slice = u["user_id"].isin(keep)
        report.drop(str(f_user), SLICE_REASON, int((~in_slice).sum()))
        u = u[in_slice].reset_index(drop=True)
    ages = u["age"].astype(int)
    gender = u["gender"].map({"M": "male", "F": "female"}).fillna("")
    profile = []
    for a, g, o in zip(ages, gender, u["occupation"]):
        occ = _ML_OCCUPATION_TEXT.get(o, o)
        profile.append(" ".join(x for x in (f"{a} year old", g, occ) if x))
    users = pd.DataFrame({
        "user_id": u["user_id"].astype(str), "profile_text": pd.Series(profile, dtype=str),
        "age_band": pd.Series([_age_band(a) for a in ages], dtype=str), "gender": gender.astype(str),
        "occupation": u["occupation"].astype(str), "zip_code": u["zip_code"].astype(str),
    })
    return Dataset(items=items, interactions=inter, users=users, report=report, name="movielens_100k")


# ---------------------------------------------------------------------------------------------------------------


def _check_dataset(ds: Dataset) -> None:
    """The Dataset contract (schema.py); a failure here is a loader bug, so it says so."""
    inter, items = ds.interactions, ds.items
    assert list(inter.columns) == list(INTERACTION_COLUMNS), f"{ds.name}: interaction columns {list(inter.columns)}"
    assert list(items.columns[:len(ITEM_COLUMNS)]) == list(ITEM_COLUMNS), f"{ds.name}: item columns"
    assert inter["timestamp"].dtype == np.int64 and inter["weight"].dtype == np.float64
    assert items["item_id"].is_unique, f"{ds.name}: item ids not unique"
    assert (items["title"].str.len() > 0).all(), f"{ds.name}: empty title"
    assert inter["item_id"].isin(set(items["item_id"])).all(), f"{ds.name}: interaction with an unknown item"
    if ds.given_split is not None:
        assert ds.given_split.index.equals(inter.index), f"{ds.name}: given_split not aligned"
    if inter.empty:
        raise DataError(f"{ds.name}: no interactions left after filtering ({ds.report.as_dict()})")


# ---------------------------------------------------------------------------------------------------------------
# The embedded synthetic shop (`twotower generate`)


def _load_generated(cfg: dict, on_bad_rows: str, max_users: int | None) -> Dataset:
    """A generated world's files, with its own time cut-offs from world.json as the given split."""
    from .split import assign_split

    d = _dataset_dir(cfg, "generated")
    world_file = _need(d, "world.json")
    try:
        world = json.loads(world_file.read_text(encoding="utf-8"))
        cutoffs = {"type": "temporal", "valid_start": world["valid_start"], "test_start": world["test_start"]}
    except (ValueError, KeyError) as err:
        raise DataError(f"{world_file}: not a world description ({err}); regenerate it with twotower generate")
    files = {"items": d / "items.csv", "interactions": d / "interactions.csv", "users": d / "users.csv"}
    ds = _load_files({**cfg, **{k: str(v) for k, v in files.items()}, "name": "generated"}, on_bad_rows,
                     max_users)
    ds.given_split = assign_split(ds, cutoffs, ds.report)
    return ds


LOADERS = {
    "files": _load_files,
    "generated": _load_generated,
    "amazon_scientific": _load_amazon_scientific,
    "amazon_beauty": _load_amazon_beauty,
    "movielens_100k": _load_movielens_100k,
}

__all__ = ["load_dataset", "LOADERS", "split_scientific_text", "beauty_attribute_names"]
