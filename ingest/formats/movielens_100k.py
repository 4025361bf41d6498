"""Format ``movielens_100k``: GroupLens MovieLens 100K (``data.path`` = the ``ml-100k`` folder).

Why it exists: a public benchmark with user features. Ratings are the interactions (weight = rating, event
"rating"), titles and genres the item text, age/gender/occupation the user features; ``max_users`` keeps the
first N users in id order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..schema import DataError, Dataset, DropReport
from .common import SLICE_REASON, dataset_dir, drop_unknown_items, items_frame, need_file, read_tsv, slice_users

_AGE_BANDS = ((18, "under 18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55"))
_ML_OCCUPATION_TEXT = {"none": "with no occupation", "other": "", "healthcare": "healthcare worker"}


def _age_band(age: int) -> str:
    for upper, band in _AGE_BANDS:
        if age < upper:
            return band
    return "56+"


def load(cfg: dict, on_bad_rows: str, max_users: int | None) -> Dataset:
    """The ml-100k folder as a Dataset (see the module docstring)."""
    d = dataset_dir(cfg, "movielens_100k")
    report = DropReport()
    f_data, f_item, f_user, f_genre = (need_file(d, n) for n in ("u.data", "u.item", "u.user", "u.genre"))

    genres = read_tsv(f_genre, ["name", "idx"], header=False, sep="|", encoding="latin-1")
    genres = genres[genres["name"].str.strip() != ""]
    genre_names = [n for n, _ in sorted(zip(genres["name"], genres["idx"].astype(int)), key=lambda x: x[1])]
    item_cols = ["item_id", "title", "release_date", "video_release_date", "url", *genre_names]
    raw = read_tsv(f_item, item_cols, header=False, sep="|", encoding="latin-1")
    flags = raw[genre_names].to_numpy() == "1"
    item_genres = [[g for g, f in zip(genre_names, row) if f] for row in flags]
    titles = raw["title"].str.strip()
    empty = titles == ""
    descriptions = []
    for date, gs in zip(raw["release_date"].str.strip(), item_genres):
        parts = [f"Released {date}." if date else "", f"Genres: {', '.join(gs)}." if gs else ""]
        descriptions.append(" ".join(p for p in parts if p))
    items = items_frame(raw["item_id"].str.strip().tolist(), titles.tolist(), descriptions=descriptions,
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

    data = read_tsv(f_data, ["user_id", "item_id", "rating", "timestamp"], header=False)
    user_order = sorted(data["user_id"].unique(), key=int)
    keep = slice_users(user_order, max_users)
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
    inter, _ = drop_unknown_items(inter, None, items, str(f_data), report, on_bad_rows)

    u = read_tsv(f_user, ["user_id", "age", "gender", "occupation", "zip_code"], header=False, sep="|",
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
