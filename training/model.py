"""The retrieval model: user tower and item tower under ``tfrs.tasks.Retrieval``.

Why it exists: it wires the towers to the catalogue tables and the loss. The loss is TFRS's in-batch softmax
with a temperature, logQ correction (each candidate's log expected count in the batch is subtracted, so popular
items are not over-penalised as negatives), accidental-hit removal (a batch's other copies of the target are not
negatives), and optionally extra negatives drawn uniformly from the catalogue items that training has seen (mixed
negative sampling; their logQ is the uniform draw's). Items no training interaction names are never drawn: in a
temporal split they did not exist yet, and a model that only ever sees them as negatives learns to bury exactly
the cold-start items the text tower is there to find.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from towers.config import TowerConfig
from towers.feature_table import FeatureTable
from towers.item_item import borrowed_blocks
from towers.item_tower import ItemTower
from towers.lexical import LexicalVectors, fit_idf
from towers.text_encoder import TextEncoder
from towers.user_tower import UserTower
from training.artifacts import Artifacts
from training.cross_replica import gather_local_first
from training.item_frequency import StreamingItemFrequency


class TwoTowerModel(tfrs.models.Model):
    """Batches {user_id [B], history [B, H], target [B], weight [B]} → retrieval loss. With the `causal` history
    encoder a batch holds windows (training.examples.training_sequences: target and weight [B, H]) and every step
    with a target is one query of the loss, its history the window up to that step."""

    def __init__(self, user_tower: UserTower, item_tower: ItemTower, catalog: FeatureTable,
                 user_table: FeatureTable, item_probability: np.ndarray, temperature: float,
                 logq_correction: bool, remove_accidental_hits: bool, uniform_negatives: int, seed: int,
                 frequency: StreamingItemFrequency | None = None, negative_pool: np.ndarray | None = None,
                 use_weights: bool = True):
        super().__init__()
        self.user_tower = user_tower
        self.item_tower = item_tower
        self.catalog = catalog
        self.user_table = user_table
        # Per catalogue row (row 0 = unknown): probability that a batch slot holds that item.
        self.item_probability = tf.constant(np.concatenate([[1.0], item_probability]), tf.float32)
        self.logq_correction = logq_correction
        self.use_weights = use_weights   # training.use_weights: the interactions' weights scale each example's loss
        self.uniform_negatives = int(uniform_negatives)
        self.seed = int(seed)
        # Every replica draws the same negatives (as one worker would): the first replica's counter is kept.
        self.negative_draws = tf.Variable(0, dtype=tf.int64, trainable=False, name="negative_draws",
                                          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        # Catalogue rows (1-based) the uniform negatives are drawn from; every row by default.
        pool = np.arange(1, catalog.size + 1) if negative_pool is None or not len(negative_pool) else negative_pool
        self.negative_pool = tf.constant(np.asarray(pool, np.int64))
        self.frequency = frequency  # streaming logQ estimate (training.item_frequency: streaming), else counts
        self.task = tfrs.tasks.Retrieval(temperature=temperature, remove_accidental_hits=remove_accidental_hits)

    def user_features(self, batch: dict) -> dict:
        features = {"user_id": batch["user_id"], "history": batch["history"]}
        row = self.user_table(batch["user_id"])
        if "text_vec" in row:
            features["user_text_vec"] = row["text_vec"]
        elif "text" in row:
            features["user_text"] = row["text"]
        return features

    def item_features(self, item_ids: tf.Tensor) -> dict:
        features = self.catalog(item_ids)
        features["item_id"] = item_ids
        return features

    def user_embeddings(self, batch: dict, training: bool = False) -> tf.Tensor:
        return self.user_tower(self.user_features(batch), training=training)

    def item_embeddings(self, item_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.item_tower(self.item_features(item_ids), training=training)

    def create_weights(self) -> None:
        """Creates every weight of both towers now (Keras builds a layer on its first call): one eager call of each
        on a one-row request, which draws no random number and moves no counter."""
        self.user_embeddings({"user_id": tf.constant([""]), "history": tf.constant([[""]])})
        self.item_embeddings(tf.constant([""]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def embed_items(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Inference-mode item vectors for catalogue ids, traced once per model."""
        return self.item_embeddings(item_ids)

    def borrow_item_item_blocks(self, batch_size: int = 256) -> int:
        """Gives each catalogue item without an item-to-item block (no training interactions) the mean block of its
        ``item_item_neighbours`` nearest items that have one (towers/item_item.py ``borrowed_blocks``), in the
        catalogue table (so checkpoints, evaluate and the export carry it); returns how many items borrowed. Run
        once the towers are trained: nearness is in their learned space."""
        config = self.item_tower.config
        if not config.item_item_rank or not config.item_item_neighbours:
            return 0
        size = self.catalog.size
        ids = self.catalog_ids(tf.range(1, size + 1))
        vectors = tf.concat([self.embed_items(ids[s:s + batch_size]) for s in range(0, size, batch_size)] or
                            [tf.zeros([0, self.user_tower.item_dim])], axis=0)
        rank = config.item_item_rank
        cold = tf.where(~tf.reduce_any(tf.not_equal(vectors[:, -rank:], 0.0), axis=-1))[:, 0]
        for start in range(0, int(tf.size(cold)), batch_size):
            rows = cold[start:start + batch_size]
            blocks = borrowed_blocks(tf.gather(vectors, rows), vectors, rank, config.embedding_dim,
                                     config.item_item_neighbours)
            self.catalog.column_item_item_vec.scatter_nd_update(rows[:, None] + 1, blocks)   # row 0: unknown ids
        return int(tf.size(cold))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None, None], tf.string)])
    def embed_users(self, user_id: tf.Tensor, history: tf.Tensor) -> tf.Tensor:
        """Inference-mode user vectors (text from the run's user table), traced once per model."""
        return self.user_embeddings({"user_id": user_id, "history": history})

    def compute_loss(self, batch: dict, training: bool = False) -> tf.Tensor:
        weight = batch.get("weight") if self.use_weights else None
        if batch["target"].shape.rank == 2:   # windows of next-item steps (the causal history encoder)
            queries = self.user_tower(self.user_features(batch), training=training, every_position=True)
            step = tf.not_equal(batch["target"], "")       # [B, H] steps with a target; each one is an example
            queries, targets = tf.boolean_mask(queries, step), tf.boolean_mask(batch["target"], step)
            weight = None if weight is None else tf.boolean_mask(weight, step)
        else:
            queries, targets = self.user_embeddings(batch, training=training), batch["target"]
        # Under a multi-replica strategy: every replica's candidates, this replica's first (N·b negatives).
        candidates, rows = gather_local_first(self.item_embeddings(targets, training=training),
                                              self.catalog.lookup(targets))
        if self.frequency is not None:
            if training:
                self.frequency.update(rows)
            expected = self.frequency(rows)
        else:
            expected = tf.cast(tf.shape(rows)[0], tf.float32) * tf.gather(self.item_probability, rows)
        if self.uniform_negatives > 0:
            sampled = self.draw_negatives()
            sampled_ids = self.catalog_ids(sampled)
            # Without id dropout: these items are only ever negatives, and dropping their ids would teach the OOV row
            # (the row every cold item has) to score low. Cut to the training width: no item-to-item block.
            negatives = self.item_embeddings(sampled_ids, training=False)[:, :candidates.shape[-1]]
            candidates = tf.concat([candidates, negatives], axis=0)
            rows = tf.concat([rows, sampled], axis=0)
            uniform = tf.fill([self.uniform_negatives],
                              float(self.uniform_negatives) / float(self.negative_pool.shape[0]))
            expected = tf.concat([expected, uniform], axis=0)
        return self.task(queries, candidates, sample_weight=weight,
                         candidate_sampling_probability=expected if self.logq_correction else None,
                         candidate_ids=rows, compute_metrics=False, compute_batch_metrics=False)

    def train_step(self, inputs) -> dict:
        """TFRS's step, reporting one loss: the optimised total (the retrieval loss plus any regularisation).

        TFRS reports ``loss``, ``regularization_loss`` and ``total_loss``; the progress bar showed all three. With
        one key, the bar's epoch average is the number the trainer logs for the epoch (:class:`EpochLoss`).
        """
        return {"loss": super().train_step(inputs)["total_loss"]}

    def draw_negatives(self) -> tf.Tensor:
        """``uniform_negatives`` catalogue rows drawn uniformly from the pool, seeded by (seed, draws so far) so
        that a resumed run draws what an uninterrupted one would have."""
        seed = tf.stack([tf.constant(self.seed, tf.int64), self.negative_draws.assign_add(1)])
        pick = tf.random.stateless_uniform([self.uniform_negatives], seed=seed, minval=0,
                                           maxval=int(self.negative_pool.shape[0]), dtype=tf.int64)
        return tf.gather(self.negative_pool, pick)

    def catalog_ids(self, rows: tf.Tensor) -> tf.Tensor:
        """Catalogue rows (1-based) → item ids."""
        return tf.gather(self.catalog.column_item_id, rows)


def build_model(config: dict, artifacts: Artifacts, encoder: TextEncoder | None = None) -> TwoTowerModel:
    """The towers and the model for a run's config and artifacts.

    In ``frozen`` mode the catalogue and user tables carry cached text vectors, so the towers call ``encoder``
    only for raw text (an exported model's requests; training passes no encoder at all); in the fine-tune modes
    the tables carry the texts and the towers encode them through ``encoder`` on every step.
    """
    model_cfg, train_cfg = config["model"], config["training"]
    tower_cfg = TowerConfig.model_validate({**model_cfg, "seed": train_cfg["seed"]})
    frozen = model_cfg["encoder_mode"] == "frozen"
    catalog = artifacts.catalog
    columns = {"item_id": catalog["item_id"].to_numpy(object),
               "category": catalog["category"].to_numpy(object), "brand": catalog["brand"].to_numpy(object),
               "price": catalog["price"].to_numpy(np.float32)}
    user_columns = {}
    if frozen:
        columns["text_vec"] = artifacts.item_text_vectors
        user_columns["text_vec"] = artifacts.user_text_vectors
    else:
        columns["text"] = catalog["text"].to_numpy(object)
        user_columns["text"] = artifacts.users["text"].to_numpy(object)
    lexical = None
    if tower_cfg.lexical_dim:   # the catalogue's words: idf fitted on its texts, each item's vector in the table
        texts = catalog["text"].astype(str).tolist()
        lexical = LexicalVectors(tower_cfg.lexical_dim, fit_idf(texts), name="lexical")
        columns["words_vec"] = np.concatenate([lexical(tf.constant(texts[s:s + 4096])).numpy()
                                               for s in range(0, len(texts), 4096)]) if texts else \
            np.zeros((0, tower_cfg.lexical_dim), np.float32)
    if tower_cfg.item_item_rank:   # the item-to-item channel's blocks (towers/item_item.py), from prepare
        columns["item_item_vec"] = np.asarray(artifacts.item_item_vectors, np.float32)
    catalog_table = FeatureTable(catalog["item_id"].tolist(), columns, name="catalog")
    user_table = FeatureTable(artifacts.users["user_id"].tolist(), user_columns, name="user_table")
    text_dim = int(artifacts.encoder["dim"])
    item_tower = ItemTower(tower_cfg, artifacts.train_item_ids, artifacts.categories, artifacts.brands,
                           artifacts.price_stats, text_dim, encoder, lexical, name="item_tower")
    user_tower = UserTower(tower_cfg, artifacts.train_user_ids, item_tower, catalog_table, text_dim,
                           encoder, name="user_tower")
    counts = artifacts.item_counts + 1.0  # add-one: an item never seen in training is still a possible draw
    streaming = train_cfg["item_frequency"] == "streaming"
    return TwoTowerModel(user_tower, item_tower, catalog_table, user_table, counts / counts.sum(),
                         temperature=train_cfg["temperature"], logq_correction=train_cfg["logq_correction"],
                         remove_accidental_hits=train_cfg["remove_accidental_hits"],
                         uniform_negatives=train_cfg["uniform_negatives"], seed=train_cfg["seed"],
                         frequency=StreamingItemFrequency(name="item_frequency") if streaming else None,
                         negative_pool=np.flatnonzero(artifacts.item_counts > 0) + 1,
                         use_weights=train_cfg["use_weights"])
