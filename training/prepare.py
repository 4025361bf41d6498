"""Data, split, artifacts and text vectors for a run: the steps before the first gradient.

Why it exists: ``train`` and ``evaluate`` both need the dataset split the same way and the same catalogue and
text vectors. The first training run derives them (encoding texts through the on-disk cache, reporting [UNK]
shares); every later call loads them from RUN/artifacts/.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import pandas as pd
import tensorflow as tf

from ingest.load import load_dataset
from ingest.schema import Dataset
from ingest.split import assign_split
from towers import script_centering
from towers.item_item import item_item_factors
from towers.text_cache import TextVectorCache
from towers.text_encoder import (
    BertSource,
    TextEncoder,
    environment_fingerprint,
    make_tiny_bert,
    resolve_encoder,
    unk_report,
)
from training import artifacts as artifacts_io
from training.artifacts import Artifacts
from training.config import ConfigError
from training.run import RunDir, RunDirError
from training.shard_reader import ShardStream

log = logging.getLogger("twotower.prepare")
UNK_WARN_SHARE = 0.05


@dataclasses.dataclass
class Prepared:
    dataset: Dataset
    labels: pd.Series
    artifacts: Artifacts
    source: BertSource | None
    stream: ShardStream | None = None  # data.format prepared: examples and cases come from the shards


def load_split(config: dict) -> tuple[Dataset, pd.Series]:
    data = config["data"]
    dataset = load_dataset(data)
    labels = assign_split(dataset, data["split"], dataset.report)
    counts = labels.value_counts().to_dict()
    log.info("%s: %d items, %d users, %d interactions (train %d, valid %d, test %d)", dataset.name,
             len(dataset.items), dataset.interactions["user_id"].nunique(), len(dataset.interactions),
             counts.get("train", 0), counts.get("valid", 0), counts.get("test", 0))
    if dataset.report.total:
        log.info("dropped rows, by reason: %s", dataset.report.as_dict())
    return dataset, labels


def encoder_source(config: dict, run: RunDir, corpus: list[str] | None) -> BertSource:
    """``tiny`` is materialised once in RUN/encoder (its vocabulary from the corpus); others are resolved."""
    model = config["model"]
    if model["encoder"] != "tiny":
        return resolve_encoder(model["encoder"])
    if (run.encoder / "tf_model.h5").exists():
        return BertSource(run.encoder)
    if corpus is None:
        raise RunDirError(f"{run.encoder}: the run's tiny encoder is missing")
    return make_tiny_bert(run.encoder, corpus, seed=config["training"]["seed"],
                          hidden=model["tiny_hidden"], layers=model["tiny_layers"])


def prepare(config: dict, run: RunDir, progress: bool = True) -> Prepared:
    data = config["data"]
    stream = ShardStream(data["path"], config["model"]["history_len"]) if data["format"] == "prepared" else None
    dataset, labels = (stream.dataset_view(), pd.Series([], dtype=str)) if stream else load_split(config)
    if artifacts_io.saved(run.artifacts):
        derived = artifacts_io.load(run.artifacts)
        check_same_user_hash(derived, dataset.user_id_hash, str(run.path))
        return Prepared(dataset, labels, derived, encoder_source(config, run, None), stream)
    if stream and config["model"]["item_item_rank"]:
        raise ConfigError("model.item_item_rank needs the training interactions in memory, and data.format "
                          "'prepared' streams them from shards: set it to 0, or train from the source files")
    derived = stream.artifacts(data["item_text_columns"], data["user_text_columns"]) if stream else \
        artifacts_io.derive(dataset, labels, data["item_text_columns"], data["user_text_columns"])
    if config["model"]["item_item_rank"]:
        derived.item_item_vectors = item_item_vectors(dataset, labels, derived.catalog, config["model"])
    corpus = derived.catalog["text"].tolist() + derived.users["text"].tolist()
    source = encoder_source(config, run, corpus)
    model = config["model"]
    encoder = TextEncoder(source, max_length=model["max_seq_len"])
    report_unknown_tokens(encoder, dataset, derived, config)
    derived.encoder = {"name": model["encoder"], "directory": str(source.directory),
                       "fingerprint": environment_fingerprint(source, model["max_seq_len"]), "dim": encoder.dim}
    if model["encoder_mode"] == "frozen":
        cache = TextVectorCache(config["training"]["text_cache_dir"], derived.encoder["fingerprint"])
        batch = config["training"]["encode_batch_size"]

        def encode(texts: list[str]) -> np.ndarray:
            log.info("encoding %d new text(s) with %s (cached in %s)", len(texts), model["encoder"],
                     cache.directory)
            return encoder.encode(texts, batch_size=batch, progress=progress)

        item_texts = derived.catalog["text"].tolist()
        derived.item_text_vectors, _ = cache.get(item_texts, encode)
        user_texts = derived.users["text"].tolist()
        vectors, _ = cache.get(user_texts, encode) if user_texts else (np.zeros((0, encoder.dim)), 0)
        empty = np.array([not t.strip() for t in user_texts], bool)
        vectors = np.asarray(vectors, np.float32).reshape(len(user_texts), encoder.dim)
        vectors[empty] = 0.0  # no text is "no text", not the encoding of an empty string
        derived.user_text_vectors = vectors
        if model["text_centering"]:   # the cache keeps the encoder's own vectors; the towers read them centred
            chinese = script_centering.chinese(tf.constant(item_texts, tf.string)).numpy()
            derived.text_centering = script_centering.script_means(derived.item_text_vectors, chinese)
            derived.item_text_vectors = script_centering.center(derived.item_text_vectors, chinese,
                                                                derived.text_centering).numpy()
            derived.user_text_vectors = script_centering.center_texts(vectors, user_texts, derived.text_centering)
            log.info("text vectors centred per script (model.text_centering): %d of %d catalogue texts Chinese",
                     int(chinese.sum()), len(item_texts))
    artifacts_io.save(derived, run.artifacts)
    return Prepared(dataset, labels, derived, source, stream)


def item_item_vectors(dataset: Dataset, labels: pd.Series, catalog: pd.DataFrame, model: dict) -> np.ndarray:
    """[len(catalog), model.item_item_rank]: the item-to-item channel's blocks (towers/item_item.py) from the
    training interactions."""
    started = time.time()
    train = dataset.interactions[labels.to_numpy() == "train"]
    rows = pd.Index(catalog["item_id"].astype(str)).get_indexer(train["item_id"].astype(str))
    users = pd.factorize(train["user_id"].astype(str).to_numpy()[rows >= 0])[0]
    vectors = item_item_factors(users, rows[rows >= 0], len(catalog), model["item_item_rank"], model["item_item_l2"])
    log.info("item-to-item channel: EASE (l2 %g) over %d interactions, factored to %d dimensions (%.1fs)",
             model["item_item_l2"], len(users), model["item_item_rank"], time.time() - started)
    return vectors


def check_same_user_hash(artifacts: Artifacts, fingerprint: str | None, where: str) -> None:
    """User ids hashed with another salt (or hashed now and not then) would silently match nobody: refuse."""
    if artifacts.user_id_hash != fingerprint:
        def state(key: str | None) -> str:
            return "not hashed" if key is None else f"hashed with key {key}"

        raise ConfigError(f"{where} holds user ids {state(artifacts.user_id_hash)} but the data now loads them "
                         f"{state(fingerprint)}: use the same data.hash_user_ids and salt (the TWOTOWER_HASH_SALT "
                         f"environment variable or data.hash_salt)")


def report_unknown_tokens(encoder: TextEncoder, dataset: Dataset, derived: Artifacts, config: dict) -> dict:
    """Logs the share of [UNK] tokens per text field and warns above 5%, naming the option that fixes it."""
    fields = {c: dataset.items[c].astype(str).tolist() for c in config["data"]["item_text_columns"]
              if c in dataset.items.columns}
    if len(derived.users):
        fields["user_text"] = derived.users["text"].tolist()
    shares = unk_report(encoder, fields)
    if not shares and fields:
        log.info("encoder '%s' ships no vocabulary file: no [UNK] report", config["model"]["encoder"])
    for name, share in shares.items():
        if share > UNK_WARN_SHARE:
            log.warning("%.1f%% of the tokens in text field '%s' are [UNK] for encoder '%s' (its vocabulary does "
                        "not cover this text, e.g. Chinese through an English vocabulary). Fix: --set "
                        "model.encoder=m3e-small for Chinese, a local BERT directory whose vocabulary covers it, "
                        "or model.encoder=tiny to build a vocabulary "
                        "from this corpus.", 100 * share, name, config["model"]["encoder"])
        else:
            log.info("[UNK] share in '%s': %.2f%%", name, 100 * share)
    return shares
