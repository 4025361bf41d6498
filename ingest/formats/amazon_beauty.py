"""Format ``amazon_beauty``: the S3-Rec / P5 Amazon 2014 Beauty 5-core (``Beauty.txt`` sequences).

Why it exists: a public benchmark to measure against published numbers. Brand and category names are recovered
for each item from ``Beauty_item2attributes.json`` + ``datamaps.json``; timestamps are positions and the given
split is the published leave-one-out split. ``max_users`` keeps the first N users of ``Beauty.txt``.
"""

from __future__ import annotations

import html
import json
from collections import Counter

from ..schema import DataError, Dataset, DropReport
from .common import SLICE_REASON, dataset_dir, drop_unknown_items, items_frame, need_file, sequences_to_frame

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


def load(cfg: dict, on_bad_rows: str, max_users: int | None) -> Dataset:
    """The Beauty folder as a Dataset with its leave-one-out split (see the module docstring)."""
    d = dataset_dir(cfg, "amazon_beauty")
    report = DropReport()
    f_seq, f_maps, f_attr = (need_file(d, n) for n in ("Beauty.txt", "datamaps.json", "Beauty_item2attributes.json"))
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
    items = items_frame(ids, titles, categories=cats, brands=brands)
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
    inter, given = sequences_to_frame(user_ids, sequences, event="review")
    inter, given = drop_unknown_items(inter, given, items, str(f_seq), report, on_bad_rows)
    return Dataset(items=items, interactions=inter, users=None, given_split=given, report=report,
                   name="amazon_beauty")
