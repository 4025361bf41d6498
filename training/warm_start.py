"""Warm start: a new run begins from a finished run's weights, on newer data whose vocabularies have grown.

Why it exists: retraining from scratch every time new interactions arrive throws away what the model knew. With
``training.warm_start_from: RUN`` (``twotower train --warm-start-from RUN``) the new run's towers start from RUN's
best checkpoint: every id embedding table is rebuilt row by row by id (an id RUN knew keeps its vector, whatever
its new row; an id RUN never saw starts as RUN's unknown-id row, which id dropout trained to stand for "a user or
item we know nothing about"), and every other weight (text projections, MLP heads) is copied as is. The data
tables (catalogue, user texts, frequencies) come from the new data. The optimizer starts fresh.

The model's shape must match (embedding and hidden sizes, features) and the text vectors must come from the same
encoder; a tiny encoder is copied from RUN so both runs read text identically. Only the frozen encoder mode (the
CPU path) is supported: the fine-tune modes would also have to carry the encoder's own weights across.
"""

from __future__ import annotations

import logging
import re
import shutil

import numpy as np
import tensorflow as tf

from towers.id_embedding import IdEmbedding
from training import artifacts as artifacts_io
from training.artifacts import Artifacts
from training.config import ConfigError
from training.model import TwoTowerModel, build_model
from training.run import RunDir

log = logging.getLogger("twotower.train")
SHAPE_KEYS = ("embedding_dim", "hidden_units", "id_dim", "categorical_dim", "text_projection_dim", "item_features",
              "user_features", "encoder", "max_seq_len", "tiny_hidden", "tiny_layers")


def source_run(config: dict) -> RunDir | None:
    """The run to warm-start from (``training.warm_start_from``), checked; None when not warm-starting."""
    path = config["training"].get("warm_start_from")
    if not path:
        return None
    source = RunDir(path)
    if not source.exists() or not source.trained():
        raise ConfigError(f"training.warm_start_from: {source.path} is not a finished run (no config.yaml or "
                          f"checkpoints/best)")
    old = source.read_config()["model"]
    differs = [f"model.{key}" for key in SHAPE_KEYS if old.get(key) != config["model"].get(key)]
    if differs:
        raise ConfigError(f"training.warm_start_from: {source.path} has another model shape (differs in: "
                          f"{', '.join(differs)}); warm start copies weights, so these must match")
    if "frozen" != old.get("encoder_mode") or config["model"]["encoder_mode"] != "frozen":
        raise ConfigError("training.warm_start_from: both runs must use model.encoder_mode frozen")
    return source


def adopt_encoder(config: dict, run: RunDir, source: RunDir) -> None:
    """A tiny encoder is built from its corpus, which newer data changes: the new run reads text with the old one."""
    if config["model"]["encoder"] == "tiny" and source.encoder.exists() and not run.encoder.exists():
        shutil.copytree(source.encoder, run.encoder)


def _plain_name(variable: tf.Variable) -> str:
    return re.sub(r"_\d+(?=/|:)", "", variable.name)


def warm_start(model: TwoTowerModel, artifacts: Artifacts, source: RunDir) -> dict[str, tuple[int, int]]:
    """Loads ``source``'s best weights into ``model`` (built for the new data); returns, per id table, (ids kept,
    ids in the new vocabulary)."""
    old_artifacts = artifacts_io.load(source.artifacts)
    if old_artifacts.encoder.get("fingerprint") != artifacts.encoder.get("fingerprint"):
        raise ConfigError(f"training.warm_start_from: {source.path} encoded its texts with another encoder "
                          f"({old_artifacts.encoder.get('fingerprint')} vs {artifacts.encoder.get('fingerprint')})")
    if old_artifacts.user_id_hash != artifacts.user_id_hash:
        raise ConfigError(f"training.warm_start_from: {source.path} hashed user ids differently (data.hash_user_ids "
                          f"or its salt): its user embeddings would match nobody")
    old = build_model(source.read_config(), old_artifacts)
    old.create_weights()
    model.create_weights()
    tf.train.Checkpoint(model=old).read(str(source.best)).expect_partial()

    tables = [m for m in model.submodules if isinstance(m, IdEmbedding)]
    old_tables = [m for m in old.submodules if isinstance(m, IdEmbedding)]
    report, copied_tables = {}, set()
    for new, before in zip(tables, old_tables):
        report[new.name] = _copy_rows(new, before)
        copied_tables.update({id(new.embedding.embeddings), id(before.embedding.embeddings)})
    pairs = [(n, o) for n, o in zip(model.trainable_variables, old.trainable_variables)]
    for new, before in pairs:
        if id(new) in copied_tables:
            continue
        if _plain_name(new) != _plain_name(before) or new.shape != before.shape:
            raise ConfigError(f"training.warm_start_from: {source.path} does not match this model at "
                              f"{_plain_name(new)} {new.shape} (its {_plain_name(before)} {before.shape})")
        new.assign(before)
    log.info("warm start from %s: %s", source.path,
             ", ".join(f"{name} {kept}/{total} ids kept" for name, (kept, total) in report.items()))
    return report


def _copy_rows(new: IdEmbedding, old: IdEmbedding) -> tuple[int, int]:
    """Row i of the new table ← the old table's row for the same id, or its unknown-id row 0."""
    old_rows = {token: row for row, token in enumerate(old.lookup.get_vocabulary())}
    old_matrix = old.embedding.embeddings.numpy()
    vocabulary = new.lookup.get_vocabulary()
    rows = np.array([old_rows.get(token, 0) if row else 0 for row, token in enumerate(vocabulary)])
    new.embedding.embeddings.assign(old_matrix[rows])
    return int((rows[1:] > 0).sum()), len(vocabulary) - 1
