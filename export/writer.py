"""``twotower export``: a run → the next numeric version under a TF Serving base path, atomically.

Why it exists: TF Serving polls ``base_path`` and loads any new numeric directory it sees, so a version must
appear whole or not at all. The SavedModel is built in a hidden temporary directory beside the versions and
renamed into place; a failure removes the temporary directory and leaves no version behind. Beside the base
path go a ``models.config`` (model_config_list text proto, merged with entries for other models already there)
and a ``batching_parameters.txt`` for ``--enable_batching``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import tensorflow as tf

from export.index import build_index
from export.signatures import Recommender
from export.trained import ExportError, TrainedRun, load_trained

log = logging.getLogger("twotower.export")
LIBRARIES = ("tensorflow", "tf-keras", "tensorflow-recommenders", "scann", "tensorflow-text", "transformers")
BATCHING_PARAMETERS = """max_batch_size { value: 64 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 2 }
"""


def next_version(base: Path) -> int:
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()] if base.exists() else []
    return max(versions, default=0) + 1


def sample_queries(trained: TrainedRun, limit: int = 1000, seed: int = 0) -> np.ndarray:
    """Query vectors of real evaluation users (test split), or of training users where the data is gone."""
    from training.examples import evaluation_cases
    from training.prepare import load_split

    config = trained.config
    try:
        dataset, labels = load_split(config)
        cases, _ = evaluation_cases(dataset.interactions, labels, "test", config["model"]["history_len"],
                                    config["data"]["split"]["type"] == "temporal")
        users, history = cases.user_id.astype(str), cases.history.astype(str)
    except (OSError, ValueError) as err:
        log.warning("cannot read the run's data for sample queries (%s): using training users with no history",
                    err)
        users = np.array(trained.artifacts.train_user_ids, dtype=str)
        history = np.full((len(users), 1), "", dtype=object).astype(str)
    if len(users) == 0:
        raise ExportError("no users to sample queries from")
    pick = np.random.default_rng(seed).permutation(len(users))[:limit]
    return trained.model.embed_users(tf.constant(users[pick].tolist()), tf.constant(history[pick].tolist())).numpy()


def data_fingerprint(artifacts_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("catalog.parquet", "users.parquet", "vocab.json", "item_counts.npy"):
        path = artifacts_dir / name
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def model_card(trained: TrainedRun, index_report, k: int, dim: int) -> dict:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(trained.run.path.resolve()),
        "training_config": trained.config,
        "data_fingerprint": data_fingerprint(trained.run.artifacts),
        "metrics": trained.run.read_json(trained.run.metrics, {}),
        "encoder": {**trained.artifacts.encoder, "max_seq_len": trained.config["model"]["max_seq_len"]},
        "index": {"type": index_report.type, "k": k, "neighbours_asked": index_report.k,
                  "recall_at_k_vs_brute_force": index_report.recall_at_k, "sample_queries": index_report.queries,
                  "params": index_report.params, "tried": index_report.tried,
                  "build_seconds": round(index_report.build_seconds, 3)},
        "items": len(trained.artifacts.catalog),
        "embedding_dim": dim,
        "history_len": trained.config["model"]["history_len"],
        "signatures": ["serving_default", "recommend_including_history", "embed_query", "embed_items", "score"],
        "libraries": versions,
    }


def write_server_files(base: Path, name: str) -> None:
    """models.config (merged) and batching_parameters.txt beside the base path."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config_path = base.parent / "models.config"
    config = model_server_config_pb2.ModelServerConfig()
    if config_path.exists():
        text_format.Parse(config_path.read_text(encoding="utf-8"), config)
    models = config.model_config_list.config
    kept = [m for m in models if m.name != name]
    del models[:]
    models.extend(kept)
    entry = models.add()
    entry.name = name
    entry.base_path = str(base.resolve())
    entry.model_platform = "tensorflow"
    _write_text(config_path, text_format.MessageToString(config))
    batching = base.parent / "batching_parameters.txt"
    if not batching.exists():
        _write_text(batching, BATCHING_PARAMETERS)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def export_run(run_dir: str, base_path: str, index: str = "scann", k: int = 100,
               target_recall: float = 0.95) -> Path:
    """Exports RUN's best epoch as version N+1 under ``base_path``; returns the version directory."""
    if k <= 0:
        raise ExportError(f"--k must be positive, got {k}")
    level = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")  # retracing notes from ScaNN tuning and Keras serialisation: not for users
    try:
        return _export(run_dir, base_path, index, k, target_recall)
    finally:
        tf.get_logger().setLevel(level)


def _export(run_dir: str, base_path: str, index: str, k: int, target_recall: float) -> Path:
    trained = load_trained(run_dir)
    ids = np.array(trained.item_ids, dtype=object)
    items = trained.item_vectors()
    k = min(k, len(ids))
    history_len = int(trained.config["model"]["history_len"])
    queries = sample_queries(trained)
    layer, report = build_index(index, items, ids, queries, k=min(k + history_len, len(ids)), target=target_recall)
    if report.type == "scann":  # tuned above at K + history; record recall at the K clients get
        from export.index import exact_top_k, recall_against_exact
        _, found = layer(tf.constant(queries), k=k)
        lookup = {item: row for row, item in enumerate(ids)}
        rows = np.array([[lookup[i.decode()] for i in r] for r in found.numpy()])
        report.recall_at_k = recall_against_exact(rows, exact_top_k(queries, items, k))
    log.info("index %s over %d items: recall@%d vs brute force %.4f", report.type, len(ids), k, report.recall_at_k)
    module = Recommender(trained.model, trained.encoder, layer, report.k, k, history_len,
                         trained.config["data"]["item_text_columns"])
    base = Path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    version = next_version(base)
    tmp = base / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    try:
        options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])
        tf.saved_model.save(module, str(tmp), signatures=module.signatures(), options=options)
        assets = tmp / "assets"
        assets.mkdir(exist_ok=True)
        card = model_card(trained, report, k, items.shape[1])
        (assets / "model_card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
        catalog = trained.artifacts.catalog
        with open(assets / "items.tsv", "w", encoding="utf-8") as handle:
            handle.write("item_id\ttitle\n")
            for item, title in zip(catalog["item_id"], catalog["title"]):
                handle.write(f"{item}\t{' '.join(str(title).split())}\n")
        final = base / str(version)
        os.rename(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and not isinstance(err, ExportError):
            raise ExportError(f"export to {base} failed, no version written: {type(err).__name__}: {err}") from err
        raise
    write_server_files(base, base.name)
    return final
