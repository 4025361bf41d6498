"""A run's best weights, rebuilt for inference: towers with the text encoder attached and text vectors in tables.

Why it exists: training may have kept texts in its tables (fine-tune modes) and never attached the encoder
(frozen mode). A served model needs both: the encoder for raw request text, and a text vector for every catalogue
item and known user so that ids alone never cost a BERT call. This module builds exactly that from RUN/.
"""

from __future__ import annotations

import copy
import dataclasses
import logging

import numpy as np
import tensorflow as tf

from towers.text_encoder import TextEncoder
from training import artifacts as artifacts_io
from training.artifacts import Artifacts
from training.model import TwoTowerModel, build_model
from training.prepare import encoder_source
from training.run import RunDir

log = logging.getLogger("twotower.export")


class ExportError(ValueError):
    """A run that cannot be exported, or an export that failed; the message says which and why."""


@dataclasses.dataclass
class TrainedRun:
    run: RunDir
    config: dict
    artifacts: Artifacts
    model: TwoTowerModel
    encoder: TextEncoder

    @property
    def item_ids(self) -> list[str]:
        return self.artifacts.catalog["item_id"].tolist()

    def item_vectors(self, batch_size: int = 4096) -> np.ndarray:
        ids = self.item_ids
        parts = [self.model.embed_items(tf.constant(ids[i:i + batch_size])).numpy()
                 for i in range(0, len(ids), batch_size)]
        return np.concatenate(parts).astype(np.float32)


def load_trained(run_dir: str) -> TrainedRun:
    run = RunDir(run_dir)
    if not run.exists():
        raise ExportError(f"{run.path} is not a run directory (no config.yaml); train one first")
    if not run.trained():
        raise ExportError(f"{run.path} has no trained checkpoint (checkpoints/best); training has not finished "
                          f"an epoch yet")
    config = run.read_config()
    artifacts = artifacts_io.load(run.artifacts)
    fine_tuned = config["model"]["encoder_mode"] != "frozen"
    encoder = TextEncoder(encoder_source(config, run, None), max_length=config["model"]["max_seq_len"],
                          centering=artifacts.text_centering)
    served = copy.deepcopy(config)
    served["model"]["encoder_mode"] = "frozen"  # tables of text vectors, whatever the training mode was
    if fine_tuned:  # placeholders, filled below with the fine-tuned encoder's vectors
        artifacts.item_text_vectors = np.zeros((len(artifacts.catalog), encoder.dim), np.float32)
        artifacts.user_text_vectors = np.zeros((len(artifacts.users), encoder.dim), np.float32)
    model = build_model(served, artifacts, encoder)
    status = tf.train.Checkpoint(model=model).read(str(run.best))
    status.expect_partial()
    if fine_tuned:
        log.info("encoding %d catalogue and %d user texts with the fine-tuned encoder", len(artifacts.catalog),
                 len(artifacts.users))
        items = encoder.encode(artifacts.catalog["text"].tolist())
        users = encoder.encode(artifacts.users["text"].tolist()) if len(artifacts.users) else \
            np.zeros((0, encoder.dim), np.float32)
        users[np.array([not t.strip() for t in artifacts.users["text"]], bool)] = 0.0
        model.catalog.column_text_vec.assign(np.concatenate([np.zeros((1, encoder.dim), np.float32), items]))
        model.user_table.column_text_vec.assign(np.concatenate([np.zeros((1, encoder.dim), np.float32), users]))
    return TrainedRun(run, config, artifacts, model, encoder)
