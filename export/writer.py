"""``twotower export``: a run → the next numeric version under a TF Serving base path, atomically.

Why it exists: TF Serving polls ``base_path`` and loads any new numeric directory it sees, so a version must
appear whole or not at all. The SavedModel is built in a hidden temporary directory beside the versions and
renamed into place; a failure removes the temporary directory and leaves no version behind (``write_version``,
which ``twotower index add`` uses too). Beside the base
path go a ``models.config`` (model_config_list text proto, merged with entries for other models already there)
and a ``batching_parameters.txt`` for ``--enable_batching``.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf

# tf_keras has no public switch for its layer traces outside Model.save (save_traces=False); this is the one it uses.
from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope

from export.catalog import ServedCatalog
from export.explain import item_words
from export.index import build_index, check_target_recall
from export.signatures import Recommender, serving_signatures
from export.trained import ExportError, TrainedRun, load_trained
from export.warmup import write_warmup_requests
from ingest.privacy import key_from_config
from training import artifacts as artifacts_io
from training.prepare import check_same_user_hash
from training.search_queries import request_vectors, seeded_titles
from twotower import layout
from twotower.native_logs import native_stderr_to_debug

log = logging.getLogger("twotower.export")
LIBRARIES = ("tensorflow", "tf-keras", "tensorflow-recommenders", "scann", "tensorflow-text", "transformers")
BATCHING_DEFAULTS = """max_batch_size { value: 64 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 2 }
"""


def one_line(err: BaseException) -> str:
    """An exception as one line: TensorFlow's tracing errors span many lines ("in user code:", frames, the
    Keras call arguments); the line naming the inner error, with the sentence that follows it, is what a user
    can act on (TWOTOWER_DEBUG=1 shows the whole traceback)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    inner = [i for i, line in enumerate(lines) if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line)]
    if not inner:
        return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    first = inner[-1]
    detail = lines[first + 1] if first + 1 < len(lines) and not lines[first + 1].startswith(
        ("Call arguments", "File ", "•")) else ""
    return " ".join(part for part in (lines[first], detail) if part)


def sample_queries(trained: TrainedRun, limit: int = 1000, seed: int = 0) -> np.ndarray:
    """Query vectors of real evaluation users (the test cases training kept in RUN/artifacts/), or of training
    users with no history for a run that kept none."""
    kept = artifacts_io.load_sample_queries(trained.run.artifacts)
    if kept is not None and kept[0]:
        users, history = np.array(kept[0], dtype=str), np.array(kept[1], dtype=str)
    else:
        why = (f"missing (trained before runs kept them; `twotower evaluate --run-dir {trained.run.path}` writes "
               f"it)" if kept is None else "no test users")
        log.warning("%s %s: sample queries are training users with no history",
                    trained.run.artifacts / artifacts_io.SAMPLE_QUERIES, why)
        users = np.array(trained.artifacts.train_user_ids, dtype=str)
        history = np.full((len(users), 1), "", dtype=object).astype(str)
    if len(users) == 0:
        raise ExportError("no users to sample queries from")
    pick = np.random.default_rng(seed).permutation(len(users))[:limit]
    return trained.model.embed_users(tf.constant(users[pick].tolist()), tf.constant(history[pick].tolist())).numpy()


def search_sample_queries(trained: TrainedRun, limit: int = 200, seed: int = 0) -> np.ndarray:
    """Query vectors of search requests (``search_query`` alone: seeded catalogue titles), beside
    :func:`sample_queries` when the model has the semantic channel: their vectors lie where the words dominate, away
    from the history queries'. ``index add`` re-tunes on the same sample (saved with the version): re-tuned on
    history queries alone it served search requests at recall@50 0.90 against the exact ranking, 0.97 with these
    in the sample (docs/cold_start.md). Empty for a model without the channel (a search is then read as user
    text)."""
    tower = trained.model.user_tower
    texts = seeded_titles(trained.artifacts.catalog, limit, seed)
    if tower.semantic is None or not texts:
        return np.zeros((0, tower.item_dim), np.float32)
    vectors = np.asarray(trained.encoder.encode(texts, progress=False), np.float32)
    # the served model is frozen whatever the run's encoder mode: the features of a frozen run's search requests
    features = {"user_text_vec": np.zeros_like(vectors), "search_text_vec": vectors,
                "search_text": np.array(texts, object)}
    return request_vectors(trained.model, features)


def data_fingerprint(artifacts_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in artifacts_io.DATA_FILES:
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
    config = copy.deepcopy(trained.config)
    if config["data"].get("hash_salt") is not None:
        config["data"]["hash_salt"] = "<redacted>"   # the salt never leaves the run directory
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return {
        "created": created,
        "run_dir": str(trained.run.path.resolve()),
        "training_config": config,
        "data_fingerprint": data_fingerprint(trained.run.artifacts),
        "metrics": trained.run.read_json(trained.run.metrics, {}),
        "encoder": {**trained.artifacts.encoder, "max_seq_len": trained.config["model"]["max_seq_len"]},
        "index": index_card(index_report, k),
        "items": len(trained.artifacts.catalog),
        "embedding_dim": dim,
        "history_len": trained.config["model"]["history_len"],
        "semantic_channel": (trained.model.user_tower.semantic.describe()
                             if trained.model.user_tower.semantic is not None else None),
        "item_item": (trained.model.user_tower.item_item.describe()
                      if trained.model.user_tower.item_item is not None else None),
        "repeat": trained.model.user_tower.repeat.describe(),
        "user_ids_hashed": trained.artifacts.user_id_hash,
        "signatures": ["serving_default", "recommend_including_history", "embed_query", "embed_items", "score"],
        "libraries": versions,
        "provenance": [{"action": "export", "at": created, "run_dir": str(trained.run.path.resolve()),
                        "items": len(trained.artifacts.catalog)}],
    }


def index_card(report, k: int) -> dict:
    """The model card's ``index`` block."""
    return {"type": report.type, "k": k, "neighbours_asked": report.k,
            "recall_at_k_vs_brute_force": report.recall_at_k, "sample_queries": report.queries,
            "params": report.params, "tried": report.tried, "build_seconds": round(report.build_seconds, 3)}


def write_server_files(base: Path, name: str) -> None:
    """models.config (merged) and batching_parameters.txt beside the base path."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config_path = layout.beside(base, layout.MODELS_CONFIG)
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
    layout.write_atomic(config_path, text_format.MessageToString(config))
    batching = layout.beside(base, layout.BATCHING_PARAMETERS)
    if not batching.exists():
        layout.write_atomic(batching, BATCHING_DEFAULTS)


def export_run(run_dir: str, base_path: str, index: str = "scann", k: int = 100,
               target_recall: float = 0.95) -> Path:
    """Exports RUN's best epoch as version N+1 under ``base_path``; returns the version directory."""
    if k <= 0:
        raise ExportError(f"--k must be positive, got {k}")
    check_target_recall(target_recall)
    with quiet_tensorflow(), native_stderr_to_debug():
        return _export(run_dir, base_path, index, k, target_recall)


@contextlib.contextmanager
def quiet_tensorflow():
    """Retracing notes from ScaNN tuning and Keras serialisation are not for users."""
    level = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")
    try:
        yield
    finally:
        tf.get_logger().setLevel(level)


def _export(run_dir: str, base_path: str, index: str, k: int, target_recall: float) -> Path:
    trained = load_trained(run_dir)
    config = trained.config
    key = key_from_config(config["data"])
    check_same_user_hash(trained.artifacts, None if key is None else key.fingerprint, str(trained.run.path))
    ids = trained.item_ids
    items = trained.item_vectors()
    k = min(k, len(ids))
    history_len = int(config["model"]["history_len"])
    queries = np.concatenate([sample_queries(trained), search_sample_queries(trained)])
    catalog_frame = trained.artifacts.catalog
    catalog = ServedCatalog(ids, items, catalog_frame["category"].tolist(), item_words(catalog_frame["text"].tolist()))
    layer, report = build_index(index, items, queries, k=min(k + history_len, len(ids)), target=target_recall,
                                served_k=k, vectors=catalog.vectors)   # tuned at K + history, measured at K
    log.info("index %s over %d items: recall@%d vs brute force %.4f", report.type, len(ids), k, report.recall_at_k)
    model = trained.model
    model.user_tower.drop_catalog()   # history items are looked up in the served catalogue instead
    for tower in (model.user_tower, model.item_tower):   # the export encodes text itself and passes vectors
        tower.drop_encoder()
    if model.user_tower.semantic is not None:
        model.user_tower.semantic.freeze()   # its weights are constants of the served graph
    module = Recommender(model.user_tower, model.item_tower, model.user_table, trained.encoder, catalog, layer, k,
                         history_len, config["data"]["item_text_columns"], key)
    card = model_card(trained, report, k, items.shape[1])
    titles = zip(catalog_frame["item_id"], catalog_frame["title"])
    return write_version(Path(base_path), lambda path: save_module(module, path), card, titles, queries)


def save_module(module, path: Path) -> None:
    """``tf.saved_model.save`` with the Recommender's signatures (a loaded one's too) and the custom op namespaces
    it may hold: ScaNN's, and TF Text's (a TF Hub preprocessing model may use its namespaced ops)."""
    options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann", "TFText"])
    # Without Keras' own traces: tf_keras would trace every layer's call functions (for ``tf_keras.models.load_model``,
    # which never reads an export: serving, inspect and ``index add`` use ``tf.saved_model.load``), which cost as
    # much as the signatures themselves. The variables and the signatures are saved all the same.
    with keras_option_scope(save_traces=False, in_tf_saved_model_scope=True):
        tf.saved_model.save(module, str(path), signatures=serving_signatures(module), options=options)


def remove_leftovers(base: Path) -> list[Path]:
    """Removes the temporary directories of exports (or ``index add``) that were killed before their rename;
    one whose process is still running on this machine is kept. Returns what was removed."""
    removed = []
    for path in sorted(base.glob(f"{layout.TMP_PREFIX}*")) if base.is_dir() else ():
        parts = path.name[len(layout.TMP_PREFIX):].split("-")
        pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
        if pid is not None and pid != os.getpid() and _running(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed %s, left behind by an export that did not finish", path)
        removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's live process
        return True
    return True


def write_version(base: Path, save: Callable[[Path], None], card: dict, titles: Iterable[tuple[str, str]],
                  queries: np.ndarray) -> Path:
    """Writes the next version under ``base`` atomically: ``save`` fills a hidden temporary directory, the assets
    (model card, ``items.tsv``, ``sample_queries.npy``) go beside, and one rename makes it visible; on any
    failure the temporary directory is removed and no version appears. What a killed process could not remove,
    the next call does (``remove_leftovers``). Returns the version directory."""
    base.mkdir(parents=True, exist_ok=True)
    remove_leftovers(base)
    version = layout.next_version(base)
    tmp = base / f"{layout.TMP_PREFIX}{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    card = {**card, "version": version}
    try:
        save(tmp)
        write_warmup_requests(tmp, base.name)
        (tmp / layout.ASSETS).mkdir(exist_ok=True)
        layout.asset(tmp, layout.MODEL_CARD).write_text(json.dumps(card, indent=2, ensure_ascii=False),
                                                        encoding="utf-8")
        layout.write_items(layout.asset(tmp, layout.ITEMS_TSV), titles)
        np.save(layout.asset(tmp, layout.SAMPLE_QUERIES), np.asarray(queries, np.float32))
        final = base / str(version)
        os.rename(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and not isinstance(err, ExportError):
            raise ExportError(f"writing version {version} under {base} failed, no version written: "
                              f"{one_line(err)}") from err
        raise
    write_server_files(base, base.name)
    return final
