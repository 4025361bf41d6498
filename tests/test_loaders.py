"""Loading a shop's own files (every bad-input class names its file, line and field) and the shared datasets."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ingest.formats.amazon_scientific import split_scientific_text
from ingest.load import load_dataset
from ingest.normalize import TimestampReader, normalize_items, parse_timestamps
from ingest.read import read_table
from ingest.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, DataError, DropReport

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

ITEMS_CSV = """item_id,title,description,category,brand,price,color
A1,Red mug,A red mug,Kitchen,Acme,9.99,red
A2,Blue mug,,Kitchen,Acme,$12.50,blue
A3,Green mug,,Kitchen,,cheap,green
"""
INTERACTIONS_CSV = """user_id,item_id,timestamp,event,weight
u2,A1,1700000100,view,
u1,A2,2023-11-14T22:13:20Z,purchase,2
u1,A1,1700000000,view,1
u2,A3,1700000050.7,view,abc
"""
USERS_CSV = """user_id,profile_text,segment
u1,likes mugs,gold
u2,,silver
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _files(tmp_path, items=ITEMS_CSV, interactions=INTERACTIONS_CSV, users=USERS_CSV, **extra) -> dict:
    cfg = {"format": "files", "items": str(_write(tmp_path, "items.csv", items)),
           "interactions": str(_write(tmp_path, "interactions.csv", interactions)), **extra}
    if users is not None:
        cfg["users"] = str(_write(tmp_path, "users.csv", users))
    return cfg


def _records(text: str) -> list[dict]:
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False).to_dict("records")


# --------------------------------------------------------------------------------------------------------------
# A shop's own files: what comes out


def test_csv_normalised(tmp_path):
    ds = load_dataset(_files(tmp_path))
    assert ds.name == "interactions"
    assert list(ds.items.columns) == [*ITEM_COLUMNS, "color"]
    assert ds.items["item_id"].tolist() == ["A1", "A2", "A3"]
    assert ds.items["brand"].tolist() == ["Acme", "Acme", ""]
    assert ds.items["price"].iloc[0] == pytest.approx(9.99)
    assert ds.items["price"].iloc[1] == pytest.approx(12.5)  # currency sign stripped
    assert np.isnan(ds.items["price"].iloc[2])  # "cheap": NaN and a warning, not a drop
    assert sum(n for (_, reason), n in ds.report.warnings.items() if "price" in reason) == 1

    inter = ds.interactions
    assert list(inter.columns) == list(INTERACTION_COLUMNS)
    assert inter["timestamp"].dtype == np.int64 and inter["weight"].dtype == np.float64
    # sorted by (user, timestamp), source order breaking the tie; unix seconds and ISO dates land on the same
    # seconds (one unit per file: see the timestamp tests)
    assert inter[["user_id", "item_id", "timestamp"]].values.tolist() == [
        ["u1", "A2", 1700000000], ["u1", "A1", 1700000000], ["u2", "A3", 1700000050], ["u2", "A1", 1700000100]]
    assert inter["weight"].tolist() == [2.0, 1.0, 1.0, 1.0]  # missing and "abc" -> 1.0
    assert ds.report.total == 0

    assert ds.users["profile_text"].tolist() == ["likes mugs", ""]
    assert ds.users["segment"].tolist() == ["gold", "silver"]


def test_parquet_jsonl_tsv_read_like_csv(tmp_path):
    ref = load_dataset(_files(tmp_path))
    items, inter = _records(ITEMS_CSV), _records(INTERACTIONS_CSV)
    pd.DataFrame(items).to_parquet(tmp_path / "items.parquet")
    typed = pd.DataFrame(inter)
    typed["weight"] = pd.to_numeric(typed["weight"], errors="coerce")  # a float column with NaN
    typed["timestamp"] = typed["timestamp"].astype(str)
    typed.to_parquet(tmp_path / "interactions.parquet")
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(r) for r in items) + "\n\n", encoding="utf-8")
    (tmp_path / "interactions.tsv").write_text(INTERACTIONS_CSV.replace(",", "\t"), encoding="utf-8")

    for items_file, inter_file in (("items.parquet", "interactions.parquet"), ("items.jsonl", "interactions.tsv")):
        ds = load_dataset({"format": "files", "items": str(tmp_path / items_file),
                           "interactions": str(tmp_path / inter_file)})
        pd.testing.assert_frame_equal(ds.items, ref.items)
        pd.testing.assert_frame_equal(ds.interactions, ref.interactions)
        assert ds.users is None


def test_relative_paths_from_cwd(tmp_path, monkeypatch):
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    ds = load_dataset({"format": "files", "items": "items.csv", "interactions": "interactions.csv"})
    assert len(ds.interactions) == 4


def test_max_users_slice_files(tmp_path):
    ds = load_dataset(_files(tmp_path, max_users=1))
    assert set(ds.interactions["user_id"]) == {"u2"}  # first user to appear in the file
    assert ds.users["user_id"].tolist() == ["u2"]
    assert ds.report.as_dict() == {f"{tmp_path / 'interactions.csv'}: max_users slice": 2,
                                   f"{tmp_path / 'users.csv'}: max_users slice": 1}


# --------------------------------------------------------------------------------------------------------------
# Bad input: every message names the file, the line and the field


def test_missing_file(tmp_path):
    cfg = _files(tmp_path)
    cfg["items"] = str(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"^items file not found: .*nope\.csv$"):
        load_dataset(cfg)


def test_missing_column(tmp_path):
    cfg = _files(tmp_path, items="item_id,name\nA1,Red mug\n")
    with pytest.raises(DataError) as e:
        load_dataset(cfg)
    assert str(e.value) == f"{tmp_path / 'items.csv'}: missing column 'title' (found: item_id, name)"


def test_unknown_extension_and_format(tmp_path):
    p = _write(tmp_path, "items.xlsx", "x")
    with pytest.raises(DataError, match=r"items\.xlsx: unknown file type '\.xlsx'"):
        read_table(p, required=["item_id"], kind="items")
    formats = "files, generated, amazon_scientific, amazon_beauty, movielens_100k"
    with pytest.raises(DataError, match=f"valid formats: {formats}"):
        load_dataset({"format": "excel"})


def test_duplicate_item_ids_name_lines(tmp_path):
    items = ITEMS_CSV + "A1,Red mug again,,,,,\nA2,Blue again,,,,,\n"
    with pytest.raises(DataError) as e:
        load_dataset(_files(tmp_path, items=items))
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'items.csv'}: duplicate item_id")
    assert "'A1' at lines 2, 5" in msg and "'A2' at lines 3, 6" in msg


def test_duplicate_items_always_error_even_when_dropping(tmp_path):
    with pytest.raises(DataError, match="duplicate item_id"):
        load_dataset(_files(tmp_path, items=ITEMS_CSV + "A3,x,,,,,\n", on_bad_rows="drop"))


def test_unknown_items_counted_or_refused(tmp_path):
    inter = INTERACTIONS_CSV + "u1,ZZ,1700000200,view,1\n"
    ds = load_dataset(_files(tmp_path, interactions=inter))
    src = str(tmp_path / "interactions.csv")
    assert ds.report.counts[(src, "unknown item")] == 1
    assert ds.report.examples[(src, "unknown item")] == "line 6 item_id='ZZ'"
    assert "ZZ" not in set(ds.interactions["item_id"])
    with pytest.raises(DataError) as e:
        load_dataset(_files(tmp_path, interactions=inter, on_bad_rows="error"))
    assert str(e.value).startswith(f"{src}: 1 row(s) with unknown item (field 'item_id'): line 6 (item_id='ZZ')")


def test_unparseable_timestamp(tmp_path):
    inter = INTERACTIONS_CSV + "u1,A3,last tuesday,view,1\nu1,A3,,view,1\n"
    ds = load_dataset(_files(tmp_path, interactions=inter))
    src = str(tmp_path / "interactions.csv")
    assert ds.report.counts[(src, "unparseable timestamp")] == 2
    assert ds.report.examples[(src, "unparseable timestamp")] == "line 6 timestamp='last tuesday'"
    with pytest.raises(DataError, match=r"unparseable timestamp \(field 'timestamp'\): line 6 "
                                        r"\(timestamp='last tuesday'\), line 7 \(timestamp=''\)"):
        load_dataset(_files(tmp_path, interactions=inter, on_bad_rows="error"))


def test_empty_title_dropped_and_its_interactions_unknown(tmp_path):
    items = ITEMS_CSV + "A4,   ,desc,,,,\n"
    inter = INTERACTIONS_CSV + "u1,A4,1700000300,view,1\n"
    ds = load_dataset(_files(tmp_path, items=items, interactions=inter))
    assert ds.report.counts[(str(tmp_path / "items.csv"), "empty title")] == 1
    assert ds.report.counts[(str(tmp_path / "interactions.csv"), "unknown item")] == 1
    assert "A4" not in set(ds.items["item_id"])
    with pytest.raises(DataError, match=r"items\.csv: 1 row\(s\) with empty title \(field 'title'\): "
                                        r"line 5 \(item_id='A4'\)"):
        load_dataset(_files(tmp_path, items=items, interactions=inter, on_bad_rows="error"))


def test_empty_optional_text_is_fine(tmp_path):
    ds = load_dataset(_files(tmp_path, items="item_id,title,description\nA1,Mug,\nA2,Cup,\nA3,Pot,\n"))
    assert ds.items["description"].tolist() == ["", "", ""] and ds.report.total == 0


def test_non_positive_weight(tmp_path):
    ds = load_dataset(_files(tmp_path, interactions=INTERACTIONS_CSV + "u1,A3,1700000300,view,-1\n"))
    assert ds.report.examples[(str(tmp_path / "interactions.csv"), "non-positive weight")] == "line 6 weight='-1'"


def test_non_utf8_names_line(tmp_path):
    cfg = _files(tmp_path)
    p = tmp_path / "items.csv"
    p.write_bytes(ITEMS_CSV.encode("utf-8") + "A4,Caf\u00e9 mug,,,,,\n".encode("latin-1"))
    offset = len(ITEMS_CSV.encode("utf-8")) + len("A4,Caf")
    with pytest.raises(DataError, match=rf"items\.csv: not valid UTF-8 at line 5 \(byte offset {offset}"):
        load_dataset(cfg)


def test_empty_after_filtering(tmp_path):
    inter = "user_id,item_id,timestamp\nu1,X,1\nu1,Y,1\nu2,A1,never\n"
    with pytest.raises(DataError) as e:
        load_dataset(_files(tmp_path, interactions=inter))
    assert str(e.value) == (f"{tmp_path / 'interactions.csv'}: no interactions left after filtering (3 row(s) read;"
                            f" dropped: unknown item: 2; unparseable timestamp: 1)")
    with pytest.raises(DataError, match=r"items\.csv: no items left after filtering \(1 row\(s\) read; "
                                        r"dropped: empty title: 1\)"):
        load_dataset(_files(tmp_path, items="item_id,title\nA1,\n"))


def test_line_numbers_survive_quoted_newlines_and_blank_lines(tmp_path):
    # header = line 1, A1's quoted description spans lines 2-3, line 4 is blank: A2 is on line 5
    items = 'item_id,title,description\nA1,Mug,"two\nlines"\n\nA2,,x\n'
    with pytest.raises(DataError, match=r"line 5 \(item_id='A2'\)"):
        load_dataset(_files(tmp_path, items=items, on_bad_rows="error"))


def test_jsonl_line_numbers_and_bad_json(tmp_path):
    p = _write(tmp_path, "items.jsonl", '{"item_id": "A1", "title": "Mug"}\n\n{"item_id": "A2", "title": ""}\n')
    df = read_table(p, required=["item_id", "title"], kind="items")
    with pytest.raises(DataError, match=r"items\.jsonl: 1 row\(s\) with empty title .*line 3 \(item_id='A2'\)"):
        normalize_items(df, str(p), DropReport(), "error")
    bad = _write(tmp_path, "bad.jsonl", '{"item_id": "A1"}\n{"item_id": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: not valid JSON"):
        read_table(bad, required=["item_id"], kind="items")


def test_parquet_row_numbers(tmp_path):
    p = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": ["A1", "A2"], "title": ["Mug", None]}).to_parquet(p)
    df = read_table(p, required=["item_id", "title"], kind="items")
    with pytest.raises(DataError, match=r"row 2 \(item_id='A2'\)"):
        normalize_items(df, str(p), DropReport(), "error")


def test_duplicate_user_ids(tmp_path):
    with pytest.raises(DataError, match=r"users\.csv: duplicate user_id: 'u1' at lines 2, 4"):
        load_dataset(_files(tmp_path, users=USERS_CSV + "u1,again,x\n"))


def test_a_quoted_csv_field_of_any_size_loads(tmp_path):
    """Issue 15, defect 6: a quoted field over 128 KiB stopped loading ("field larger than field limit")."""
    title = "A very long title, " + "x" * 300_000
    items = f'item_id,title\nA1,"{title}"\nA2,"Blue\nmug"\nA3,Green mug\n'
    loaded = load_dataset(_files(tmp_path, items=items, interactions="user_id,item_id,timestamp\nu1,A1,1\nu1,A3,2\n",
                                 users=None))
    assert loaded.items["title"].tolist() == [title, "Blue\nmug", "Green mug"]
    bad = _write(tmp_path, "bad.csv", f'item_id,title\nA1,"{title}"\nA2,x,y\n')
    with pytest.raises(DataError, match=r"bad\.csv: line 3 has 3 fields but the header has 2"):
        read_table(bad, required=("item_id", "title"), kind="items")


def test_list_typed_ids_are_refused_naming_file_and_column(tmp_path):
    """Issue 15, defect 6: a list-typed Parquet user_id became the string '["U00000"]'."""
    frame = pd.DataFrame({"user_id": [["U00000"], ["U00001"]], "item_id": ["A1", "A2"], "timestamp": [1, 2]})
    frame.to_parquet(tmp_path / "interactions.parquet")
    with pytest.raises(DataError, match=r"interactions\.parquet: column 'user_id' holds list<element: string> values; "
                                        r"ids must be strings or integers"):
        read_table(tmp_path / "interactions.parquet", required=("user_id",), kind="interactions")
    lines = '{"user_id": "u1", "item_id": "A1", "timestamp": 1}\n{"user_id": ["u2"], "item_id": "A1", "timestamp": 2}\n'
    jsonl = _write(tmp_path, "interactions.jsonl", lines)
    with pytest.raises(DataError, match=r"interactions\.jsonl: line 2: 'user_id' is a JSON list \(\[\"u2\"\]\)"):
        read_table(jsonl, required=("user_id",), kind="interactions")


def test_a_literal_nan_is_never_an_id(tmp_path):
    """Issue 15, defect 6: a literal NaN in a CSV became a user id."""
    inter = "user_id,item_id,timestamp\nu1,A1,1\nNaN,A2,2\nu2,null,3\n"
    loaded = load_dataset(_files(tmp_path, interactions=inter, users=None))
    assert loaded.interactions["user_id"].tolist() == ["u1"]
    source = str(tmp_path / "interactions.csv")
    assert loaded.report.counts[(source, "user_id is a missing-value marker (NaN, null, None)")] == 1
    assert loaded.report.counts[(source, "item_id is a missing-value marker (NaN, null, None)")] == 1
    with pytest.raises(DataError, match=r"missing-value marker .*line 3 \(user_id='NaN'\)"):
        load_dataset({**_files(tmp_path, interactions=inter, users=None), "on_bad_rows": "error"})


def test_parse_timestamps():
    got, out_of_range = parse_timestamps(pd.Series(["0", "1700000000", "2023-11-14 22:13:20",
                                                    "2023-11-14T23:13:20+01:00", "14 Nov 2023 22:13:20", "nope", ""]))
    assert got.tolist()[:5] == [0, 1700000000, 1700000000, 1700000000, 1700000000]
    assert got.iloc[5:].isna().all() and not out_of_range.any()


@pytest.mark.parametrize("unit, values", [("s", ["1700000000", "1700000001"]), ("ms", ["1700000000000"]),
                                          ("us", ["1700000000000000"]), ("ns", ["1700000000000000000"])])
def test_timestamps_in_every_unit_explicit_or_auto(unit, values):
    for given in (unit, "auto"):
        got, _ = parse_timestamps(pd.Series(values), TimestampReader(given, "f.csv"))
        assert got.tolist()[0] == pytest.approx(1700000000, abs=1e-3), (unit, given)


def test_auto_refuses_a_file_that_mixes_units(tmp_path):
    """Issue 15, defect 3: microseconds were read as milliseconds (the year ~56,000) without a word."""
    inter = "user_id,item_id,timestamp\nu1,A1,1700000000000\nu1,A2,1700000000000000\n"
    with pytest.raises(DataError, match=r"interactions\.csv: line 3: timestamp '1700000000000000' reads as us but "
                                        r"line 2 \('1700000000000'\) as ms .*set data\.timestamp_unit"):
        load_dataset(_files(tmp_path, interactions=inter))
    inter_us = "user_id,item_id,timestamp\nu1,A1,1700000000000000\nu1,A2,1700000500000000\n"
    loaded = load_dataset(_files(tmp_path, interactions=inter_us))
    assert loaded.interactions["timestamp"].tolist() == [1700000000, 1700000500]


@pytest.mark.parametrize("unit", ["auto", "s"])
def test_a_timestamp_out_of_range_is_a_bad_row_never_int64_min(tmp_path, unit):
    """Issue 15, defect 3: 1e300 became int64 min (the user's first interaction), even with on_bad_rows: error."""
    inter = "user_id,item_id,timestamp\nu1,A1,1700000000\nu1,A2,1e300\n"
    with pytest.raises(DataError, match=r"interactions\.csv: 1 row\(s\) with timestamp out of range .*line 3 "
                                        r"\(timestamp='1e300'\)"):
        load_dataset({**_files(tmp_path, interactions=inter), "on_bad_rows": "error", "timestamp_unit": unit})
    dropped = load_dataset({**_files(tmp_path, interactions=inter), "timestamp_unit": unit})
    assert dropped.interactions["timestamp"].tolist() == [1700000000]
    assert any("timestamp out of range" in reason for reason in dropped.report.as_dict())


# --------------------------------------------------------------------------------------------------------------
# Shared research datasets (read-only, ../shared/datasets next to the repository)


def _dataset_dir(name: str) -> Path:
    d = DATASETS / name
    if not d.is_dir():
        pytest.skip(f"../shared/datasets not found: {d}")
    return d


@pytest.fixture(scope="module")
def scientific():
    d = _dataset_dir("amazon-scientific")
    return d, load_dataset({"format": "amazon_scientific", "path": str(d)})


def test_scientific_full(scientific):
    d, ds = scientific
    assert len(ds.items) == 4385
    assert ds.interactions["user_id"].nunique() == 8442
    assert len(ds.interactions) == 59427
    assert ds.report.total == 0
    assert ds.given_split.value_counts().to_dict() == {"train": 59427 - 2 * 8442, "valid": 8442, "test": 8442}
    assert (ds.items["title"].str.len() > 0).all()

    item_of = dict(pd.read_csv(d / "Scientific.item2index", sep="\t", header=None, dtype=str)[[1, 0]].values)
    user_of = dict(pd.read_csv(d / "Scientific.user2index", sep="\t", header=None, dtype=str)[[1, 0]].values)
    test = pd.read_csv(d / "Scientific.test.inter", sep="\t", dtype=str)
    valid = pd.read_csv(d / "Scientific.valid.inter", sep="\t", dtype=str)
    inter = ds.interactions.assign(split=ds.given_split)
    for idx in ("0", "1", "8441"):
        rows = inter[inter["user_id"] == user_of[idx]]
        t = test[test["user_id:token"] == idx].iloc[0]
        v = valid[valid["user_id:token"] == idx].iloc[0]
        assert rows["item_id"].iloc[-1] == item_of[t["item_id:token"]]
        assert rows["split"].iloc[-1] == "test"
        assert rows["item_id"].iloc[-2] == item_of[v["item_id:token"]]
        assert rows["split"].iloc[-2] == "valid"
        history = [item_of[i] for i in t["item_id_list:token_seq"].split()]
        assert rows["item_id"].iloc[:-1].tolist()[-50:] == history
        assert rows["timestamp"].tolist() == list(range(len(rows)))
    # users longer than 51 items (truncated RecBole histories) are rebuilt in full
    assert ds.interactions.groupby("user_id").size().max() == 80


def test_scientific_text_split():
    title, cat, brand, ok = split_scientific_text(
        "Mr. Heater Propane Kit 3/8. Industrial & Scientific Hydraulics Pipe Fittings. Mr. Heater. ")
    assert (title, cat, brand, ok) == ("Mr. Heater Propane Kit 3/8", "Hydraulics Pipe Fittings", "Mr. Heater", True)
    assert split_scientific_text("TPI Fan, 24 in. . TPI. ") == ("TPI Fan, 24 in", "", "TPI", True)
    assert split_scientific_text(" Industrial & Scientific />. Industrial & Scientific Lab Chemicals. Dykem. ")[0] \
        == "Dykem Lab Chemicals"


def test_scientific_slice():
    d = _dataset_dir("amazon-scientific")
    ds = load_dataset({"format": "amazon_scientific", "path": str(d), "max_users": 3})
    assert ds.interactions["user_id"].unique().tolist() == sorted(["ABW8NXS7SV55K", "A1SWWHE1L3XR3V",
                                                                   "A30Y2UTHJDGD62"])
    assert len(ds.items) == 4385
    assert len(ds.interactions) + ds.report.total == 59427
    assert ds.given_split.value_counts()["test"] == 3


def test_beauty_slice():
    d = _dataset_dir("amazon-beauty")
    ds = load_dataset({"format": "amazon_beauty", "path": str(d), "max_users": 10})
    assert len(ds.items) == 12101
    assert ds.items["item_id"].is_unique and (ds.items["title"].str.len() > 0).all()
    mug = ds.items.set_index("item_id").loc["B004756YJA"]  # S3-Rec item 1
    assert (mug["brand"], mug["title"]) == ("OPI", "OPI Nail Polish")
    assert mug["category"] == "Makeup, Nails, Nail Polish"

    maps = json.loads((d / "datamaps.json").read_text())
    lines = (d / "Beauty.txt").read_text().splitlines()
    assert len(ds.interactions) == sum(len(line.split()) - 1 for line in lines[:10])
    assert len(ds.interactions) + ds.report.total == 198502
    first = lines[0].split()
    user = maps["id2user"][first[0]]
    rows = ds.interactions[ds.interactions["user_id"] == user]
    assert rows["item_id"].tolist() == [maps["id2item"][i] for i in first[1:]]
    assert ds.given_split[rows.index].tolist()[-2:] == ["valid", "test"]


def test_movielens_slice():
    d = _dataset_dir("movielens-100k")
    ds = load_dataset({"format": "movielens_100k", "path": str(d), "max_users": 5})
    assert len(ds.items) == 1682
    toy = ds.items.set_index("item_id").loc["1"]
    assert toy["title"] == "Toy Story (1995)"
    assert toy["category"] == "Animation, Children's, Comedy"
    assert toy["description"] == "Released 01-Jan-1995. Genres: Animation, Children's, Comedy."
    assert sorted(ds.interactions["user_id"].unique(), key=int) == ["1", "2", "3", "4", "5"]
    data = pd.read_csv(d / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"])
    assert len(ds.interactions) == int((data["u"] <= 5).sum())
    assert len(ds.interactions) + ds.report.counts[(str(d / "u.data"), "max_users slice")] == 100000
    assert set(ds.interactions["weight"]) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert set(ds.interactions["event"]) == {"rating"}
    assert ds.interactions["timestamp"].between(874_000_000, 894_000_000).all()
    u1 = ds.users.set_index("user_id").loc["1"]
    assert (u1["profile_text"], u1["age_band"], u1["gender"], u1["occupation"]) == \
        ("24 year old male technician", "18-24", "male", "technician")
    assert len(ds.users) == 5


def test_row_with_extra_fields_named(tmp_path):
    # pandas would otherwise shift the row's values one column to the left without a word
    with pytest.raises(DataError, match=r"items\.csv: line 3 has 4 fields but the header has 3"):
        load_dataset(_files(tmp_path, items="item_id,title,price\nA1,Mug,3\nA2,Cup, large,4\n"))


def test_parquet_typed_columns(tmp_path):
    # ints, floats, nullable ints and tz-aware datetimes all come back as text the normalisers parse
    pd.DataFrame({"item_id": [1, 2], "title": ["Mug", "Cup"], "price": [1.5, None]}).to_parquet(tmp_path / "i.parquet")
    pd.DataFrame({"user_id": [7, 7, 8], "item_id": [1, 2, 2],
                  "timestamp": pd.to_datetime(["2023-11-14 22:13:20", "2023-11-14 22:13:21", None]).tz_localize("UTC"),
                  "weight": pd.array([2, None, 3], dtype="Int64")}).to_parquet(tmp_path / "x.parquet")
    ds = load_dataset({"format": "files", "items": str(tmp_path / "i.parquet"),
                       "interactions": str(tmp_path / "x.parquet")})
    assert ds.items["item_id"].tolist() == ["1", "2"] and ds.items["price"].iloc[0] == 1.5
    assert not ds.report.warnings
    assert ds.interactions[["user_id", "item_id", "timestamp", "weight"]].values.tolist() == [
        ["7", "1", 1700000000, 2.0], ["7", "2", 1700000001, 1.0]]
    assert ds.report.examples[(str(tmp_path / "x.parquet"), "unparseable timestamp")] == "row 3 timestamp=''"
