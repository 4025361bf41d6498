"""assign_split: leave_last_out, temporal and given semantics on small frames."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ingest.schema import DataError, Dataset, DropReport
from ingest.split import assign_split, to_unix_seconds


def _ds(rows, given=None, index=None) -> Dataset:
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    inter["timestamp"] = inter["timestamp"].astype(np.int64)
    inter["event"] = ""
    inter["weight"] = 1.0
    if index is not None:
        inter.index = index
    items = pd.DataFrame({"item_id": sorted(set(inter["item_id"])), "title": "x"})
    g = None if given is None else pd.Series(given, index=inter.index)
    return Dataset(items=items, interactions=inter, given_split=g, name="tiny")


def test_leave_last_out_per_user_by_time_then_source_order():
    ds = _ds([
        ("u1", "a", 30),  # u1 in time order: b(10) c(20, first in file) d(20) a(30)
        ("u1", "b", 10),
        ("u2", "a", 5),   # u2 has 2 interactions: all train
        ("u1", "c", 20),
        ("u1", "d", 20),
        ("u2", "b", 6),
        ("u3", "a", 1), ("u3", "b", 1), ("u3", "c", 1),  # all tied: source order decides
    ], index=pd.Index([10, 11, 12, 13, 14, 15, 16, 17, 18]))
    report = DropReport()
    split = assign_split(ds, {"type": "leave_last_out"}, report)
    assert split.index.equals(ds.interactions.index)
    assert split.tolist() == ["test", "train", "train", "train", "valid", "train", "train", "valid", "test"]
    assert report.warnings[("split", "leave_last_out: user(s) with < 3 interactions kept in train only")] == 1
    assert report.total == 0  # nothing dropped


def test_leave_last_out_every_user_gets_one_test_one_valid():
    rng = np.random.default_rng(0)
    rows = [(f"u{rng.integers(20)}", f"i{rng.integers(50)}", int(rng.integers(1000))) for _ in range(500)]
    ds = _ds(rows)
    split = assign_split(ds, {"type": "leave_last_out"})
    frame = ds.interactions.assign(split=split)
    sizes = frame.groupby("user_id").size()
    for user, g in frame.groupby("user_id"):
        counts = g["split"].value_counts()
        if sizes[user] >= 3:
            assert counts["test"] == 1 and counts["valid"] == 1
            assert g.loc[g["split"] == "test", "timestamp"].iloc[0] == g["timestamp"].max()
            valid_time = g.loc[g["split"] == "valid", "timestamp"].iloc[0]
            assert (g.loc[g["split"] == "train", "timestamp"] <= valid_time).all()


def test_temporal_windows_numbers_and_dates():
    day = 86400
    t0 = 1_704_067_200  # 2024-01-01T00:00:00Z
    ds = _ds([("u1", "a", t0 - 1), ("u1", "b", t0), ("u2", "a", t0 + 9 * day), ("u2", "b", t0 + 10 * day),
              ("u3", "c", t0 + 40 * day)])
    want = ["train", "valid", "valid", "test", "test"]
    assert assign_split(ds, {"type": "temporal", "valid_start": t0, "test_start": t0 + 10 * day}).tolist() == want
    assert assign_split(ds, {"type": "temporal", "valid_start": "2024-01-01",
                             "test_start": "2024-01-11T00:00:00Z"}).tolist() == want
    # YAML turns an unquoted 2024-01-01 into a date object
    assert assign_split(ds, {"type": "temporal", "valid_start": dt.date(2024, 1, 1),
                             "test_start": dt.date(2024, 1, 11)}).tolist() == want


def test_temporal_bounds_checked_and_empty_window_warned(caplog):
    ds = _ds([("u1", "a", 100), ("u1", "b", 200)])
    with pytest.raises(DataError, match=r"valid_start \('2024-02-01'\) must be before split\.test_start"):
        assign_split(ds, {"type": "temporal", "valid_start": "2024-02-01", "test_start": "2024-01-01"})
    with pytest.raises(DataError, match=r"split\.test_start is required"):
        assign_split(ds, {"type": "temporal", "valid_start": 1})
    with pytest.raises(DataError, match=r"split\.valid_start: cannot read 'soon' as a date"):
        assign_split(ds, {"type": "temporal", "valid_start": "soon", "test_start": 5})
    report = DropReport()
    split = assign_split(ds, {"type": "temporal", "valid_start": 150, "test_start": 160}, report)
    assert split.tolist() == ["train", "test"]
    assert report.warnings[("split", "temporal: empty valid window")] == 1
    assert "valid window is empty" in caplog.text


def test_given_and_unknown_type():
    ds = _ds([("u1", "a", 1), ("u1", "b", 2)], given=["train", "test"])
    assert assign_split(ds, {"type": "given"}).tolist() == ["train", "test"]
    with pytest.raises(DataError, match=r"'tiny' has none"):
        assign_split(_ds([("u1", "a", 1)]), {"type": "given"})
    with pytest.raises(DataError, match=r"valid types: leave_last_out, temporal, given"):
        assign_split(ds, {"type": "random"})


def test_to_unix_seconds():
    assert to_unix_seconds("1700000000", "x") == 1_700_000_000
    assert to_unix_seconds("2023-11-14T22:13:20Z", "x") == 1_700_000_000
    assert to_unix_seconds("2023-11-14T23:13:20+01:00", "x") == 1_700_000_000
    assert to_unix_seconds(dt.datetime(2023, 11, 14, 22, 13, 20), "x") == 1_700_000_000
