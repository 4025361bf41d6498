"""``twotower prepare --shards``: out-of-core conversion, and training that streams the shards.

The large test writes 10 million interactions (as Parquet, in vectorised chunks) and converts them under a
memory cap, with the same peak memory as for 1 million; the small one checks that the shards hold exactly the
examples and evaluation cases the in-memory path builds, and that a run trains from them.
"""

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import ROOT, SMOKE, cli

USERS, ITEMS, ROWS, CHUNK = 100_000, 20_000, 10_000_000, 1_000_000
RSS_CAP_MB = 1400   # about 620 MB of it is TensorFlow, pandas and pyarrow, imported


def _write_stream(path, rows: int, seed: int = 0) -> None:
    """``rows`` interactions of USERS users over ITEMS items (popularity-skewed), written chunk by chunk."""
    rng = np.random.default_rng(seed)
    users = pa.array([f"U{n:06d}" for n in range(USERS)])
    items = pa.array([f"I{n:05d}" for n in range(ITEMS)])
    schema = pa.schema([("user_id", pa.dictionary(pa.int32(), pa.string())),
                        ("item_id", pa.dictionary(pa.int32(), pa.string())), ("timestamp", pa.int64())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            item = np.minimum(rng.pareto(1.0, n) * 50, ITEMS - 1).astype(np.int32)
            writer.write_table(pa.table({
                "user_id": pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, USERS, n, dtype=np.int32)), users),
                "item_id": pa.DictionaryArray.from_arrays(pa.array(item), items),
                "timestamp": pa.array(1_700_000_000 + rng.integers(0, 10_000_000, n))}, schema=schema))


def _peak_rss_mb(command: list[str]) -> tuple[int, float, str]:
    """Runs ``command`` and returns its exit status, its peak resident memory (MB) and its stderr."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stderr.write(r.stderr); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, timeout=900)
    code, rss = result.stdout.split()
    return int(code), float(rss), result.stderr


def _prepare(tmp_path, rows: int) -> tuple[dict, float]:
    """Writes ``rows`` interactions and prepares them into 8 shards; returns the manifest and the peak RSS (MB)."""
    folder = tmp_path / str(rows)
    folder.mkdir()
    _write_stream(folder / "events.parquet", rows)
    pd.DataFrame({"item_id": [f"I{n:05d}" for n in range(ITEMS)],
                  "title": [f"product {n}" for n in range(ITEMS)]}).to_csv(folder / "items.csv", index=False)
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"format": "files", "items": str(folder / "items.csv"),
                                               "interactions": str(folder / "events.parquet"),
                                               "split": {"type": "leave_last_out"}},
                                      "model": {"history_len": 8}}))
    code, rss, stderr = _peak_rss_mb([sys.executable, "-m", "twotower.cli", "-q", "prepare", "--config",
                                      str(config), "--out", str(folder / "shards"), "--shards", "8"])
    assert code == 0, stderr[-3000:]
    return json.loads((folder / "shards" / "manifest.json").read_text()), rss


@pytest.mark.slow
def test_prepare_converts_ten_million_interactions_under_a_memory_cap(tmp_path):
    """Memory stays flat from 1M to 10M interactions (one chunk or one bucket at a time) and under the cap."""
    started = time.time()
    small, small_rss = _prepare(tmp_path, ROWS // 10)
    manifest, rss = _prepare(tmp_path, ROWS)
    users = manifest["train_users"]
    assert manifest["interactions"] == {"train": ROWS - 2 * users, "valid": users, "test": users}
    assert manifest["examples"] == ROWS - 2 * users and users > 0.99 * USERS
    assert manifest["valid_cases"] == manifest["test_cases"] == users
    assert sum(s["examples"] for s in manifest["shards"]) == manifest["examples"]
    assert min(s["examples"] for s in manifest["shards"]) > 0.8 * manifest["examples"] / 8   # balanced shards
    assert np.load(tmp_path / str(ROWS) / "shards" / "item_counts.npy").sum() == manifest["examples"]
    assert rss < RSS_CAP_MB and rss < 1.3 * small_rss, (small_rss, rss)
    print(f"\nprepare: peak RSS {small_rss:.0f} MB for 1M interactions, {rss:.0f} MB for 10M; "
          f"{time.time() - started:.0f}s in all")


def test_shards_hold_the_in_memory_examples_and_cases(world, world_shards, settings, tmp_path):
    """Same split counts and cases as the in-memory path, and training streams them (one epoch)."""
    shards = world_shards
    from training.config import load_config
    from training.examples import evaluation_cases, training_examples
    from training.prepare import load_split
    from training.shard_reader import ShardStream

    config = load_config(ROOT / "configs" / "smoke.yaml", [f"data.path={world}"])
    dataset, labels = load_split(config)
    history_len = config["model"]["history_len"]
    examples = training_examples(dataset.interactions, labels, history_len)
    stream = ShardStream(shards, history_len)
    streamed = {(u, t, tuple(h)) for batch in stream.dataset(512, seed=0, epoch=0)
                for u, t, h in zip(batch["user_id"].numpy().astype(str), batch["target"].numpy().astype(str),
                                   batch["history"].numpy().astype(str).tolist())}
    assert streamed == {(u, t, tuple(h)) for u, t, h in zip(examples.user_id, examples.target,
                                                            examples.history.astype(str).tolist())}
    halves = [{(u, t) for batch in stream.dataset(512, seed=0, epoch=0, workers=2, worker=w)
               for u, t in zip(batch["user_id"].numpy().astype(str), batch["target"].numpy().astype(str))}
              for w in (0, 1)]
    assert not halves[0] & halves[1]   # each worker reads its own files: disjoint users
    steps = stream.steps_per_epoch(512, workers=2)
    assert steps == min(sum(s["examples"] for s in stream.manifest["shards"][w::2]) // 512 for w in (0, 1))
    cases, _ = evaluation_cases(dataset.interactions, labels, "test", history_len, novel_only=False)
    from_shards = stream.cases("test")
    order, other = np.argsort(cases.user_id), np.argsort(from_shards.user_id)
    assert cases.user_id[order].tolist() == from_shards.user_id[other].tolist()
    assert cases.target[order].tolist() == from_shards.target[other].tolist()
    assert cases.cold_item[order].tolist() == from_shards.cold_item[other].tolist()
    assert [sorted(cases.exclude[i]) for i in order] == [sorted(from_shards.exclude[i]) for i in other]
    run = tmp_path / "run"
    cli("train", *SMOKE, *settings, "--set", "data.format=prepared", "--set", f"data.path={shards}",
        "--set", "training.epochs=1", "--run-dir", run)
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert metrics["users"] == len(cases) and metrics["recall@50"] > 0.0
    result = cli("prepare", *SMOKE, "--set", f"data.path={world}", "--out", shards, "--shards", 3, check=False)
    assert result.returncode == 2 and "already exists" in result.stderr


def test_prepare_keeps_a_concurrent_writers_work_and_refuses_a_directory_that_appeared(tmp_path, monkeypatch):
    """Its temporary directory is its own: another prepare's work in progress beside --out (the old fixed
    ``.OUT.tmp`` name) survives; an --out that another writer filled meanwhile is kept and this one writes nothing."""
    from training import shard_writer
    from training.config import ConfigError, load_config

    world = tmp_path / "world"
    cli("generate", "--out", world, "--users", 40, "--items", 30, "--seed", 1)
    config = load_config(ROOT / "configs" / "smoke.yaml", [f"data.path={world}"])
    other = tmp_path / ".shards.tmp"
    (other / "buckets").mkdir(parents=True)
    (other / "buckets" / "bucket-0.parquet").write_bytes(b"another prepare's bucket")
    shard_writer.write_shards(config, tmp_path / "shards", shards=2, progress=False)
    assert json.loads((tmp_path / "shards" / "manifest.json").read_text())["examples"] > 0
    assert (other / "buckets" / "bucket-0.parquet").read_bytes() == b"another prepare's bucket"

    convert = shard_writer._convert

    def racing(*args, **kwargs):   # another writer fills --out while this one converts
        summary = convert(*args, **kwargs)
        (tmp_path / "raced" / "theirs").mkdir(parents=True)
        return summary

    monkeypatch.setattr(shard_writer, "_convert", racing)
    with pytest.raises(ConfigError, match=r"raced was created by another writer while this prepare ran"):
        shard_writer.write_shards(config, tmp_path / "raced", shards=2, progress=False)
    assert [p.name for p in (tmp_path / "raced").iterdir()] == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".shards.tmp"]
