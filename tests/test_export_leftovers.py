"""A killed export or ``index add`` leaves its hidden temporary directory; the next one removes it (issue 15,
defect 7), but never the directory of an export still running."""

import subprocess
import sys

import numpy as np

from export.writer import write_version


def save_empty_model(path) -> None:
    """The smallest SavedModel: write_version also writes its warm-up requests from the saved signatures."""
    import tensorflow as tf

    tf.saved_model.save(tf.Module(), str(path))


def test_the_next_export_removes_what_a_killed_one_left(tmp_path):
    base = tmp_path / "shop"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        legacy = base / ".tmp-1-0a1b2c3d"                   # the name before the writer's pid was in it
        killed = base / f".tmp-1-{dead}-deadbeef"
        live = base / f".tmp-1-{running.pid}-5ca1ab1e"      # another export, still writing
        for path in (legacy, killed, live):
            (path / "variables").mkdir(parents=True)
        version = write_version(base, save_empty_model, {"name": "shop"}, [("A1", "Mug")], np.zeros((1, 2)))
        assert version == base / "1" and (version / "assets" / "items.tsv").exists()
        assert not legacy.exists() and not killed.exists() and live.exists()
        assert sorted(p.name for p in base.iterdir() if p.name.startswith(".tmp-")) == [live.name]
    finally:
        running.kill()
        running.wait()
