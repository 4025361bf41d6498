"""training/artifacts.py: a run's derived tables are saved whole or not at all (no model needed)."""

import threading

import numpy as np
import pytest
from tiny_artifacts import artifacts

from training import artifacts as artifacts_io


def test_concurrent_saves_never_share_a_temporary_directory(tmp_path):
    target = tmp_path / "run" / "artifacts"
    first, second = artifacts(), artifacts(counts=np.arange(1.0, 13.0))
    errors = []

    def save(which) -> None:
        try:
            for _ in range(5):
                artifacts_io.save(which, target)
        except Exception as err:  # noqa: BLE001 - collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=save, args=(which,)) for which in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    loaded = artifacts_io.load(target)     # one writer's tables, whole
    assert any(np.array_equal(loaded.item_counts, a.item_counts) for a in (first, second))
    assert loaded.catalog["item_id"].tolist() == first.catalog["item_id"].tolist()
    assert sorted(p.name for p in target.parent.iterdir()) == ["artifacts"]   # no temporary left beside


def test_a_failed_save_keeps_the_old_artifacts(tmp_path, monkeypatch):
    target = tmp_path / "artifacts"
    artifacts_io.save(artifacts(), target)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        artifacts_io.save(artifacts(counts=np.ones(12)), target)
    monkeypatch.undo()
    assert artifacts_io.load(target).item_counts[0] == 50.0     # the first save's counts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts"]
