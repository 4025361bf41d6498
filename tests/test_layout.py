"""twotower/layout.py: version directories, items.tsv and atomic writes (standard library only, no model needed)."""

import threading

import pytest

from twotower import layout


def test_versions_are_the_numeric_directories_only(tmp_path):
    for name in ("1", "3", "00000010", ".tmp-11-4242-ab12cd34", "latest"):
        (tmp_path / name).mkdir()
    (tmp_path / "12").write_text("a file, not a version")
    assert sorted(layout.version_dirs(tmp_path)) == [1, 3, 10]
    assert layout.next_version(tmp_path) == 11 and layout.next_version(tmp_path / "missing") == 1
    assert layout.version_dirs(tmp_path / "missing") == {}
    assert layout.newest_version(tmp_path) is None                  # no version holds a saved_model.pb yet
    (tmp_path / "3" / layout.SAVED_MODEL).write_bytes(b"")
    assert layout.newest_version(tmp_path) == tmp_path / "3"


def test_items_tsv_round_trip_keeps_order_and_collapses_whitespace(tmp_path):
    path = tmp_path / layout.ITEMS_TSV
    layout.write_items(path, [("B2", "tent\twith\ntabs  and lines"), ("A1", ""), ("C3", 'quote " inside')])
    assert path.read_text(encoding="utf-8").splitlines()[0] == "item_id\ttitle"
    assert layout.read_items(path) == [("B2", "tent with tabs and lines"), ("A1", ""), ("C3", 'quote " inside')]


def test_concurrent_atomic_writes_never_share_a_temporary_file(tmp_path):
    path = tmp_path / "sub" / "models.config"
    errors, texts = [], [f"writer {w}\n" * 200 for w in range(6)]

    def write(text):
        try:
            for _ in range(40):
                layout.write_atomic(path, text)
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert path.read_text(encoding="utf-8") in texts              # one writer's whole file, never a mix
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "state.json"
    layout.write_atomic(path, "old")

    class Unencodable(str):
        def encode(self, *args, **kwargs):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        layout.write_atomic(path, Unencodable("new"))
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]
