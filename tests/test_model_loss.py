"""The retrieval loss: logQ correction, accidental-hit removal and extra uniform negatives change it as they should."""

import copy

import numpy as np
import pytest
import tensorflow as tf
from tiny_artifacts import artifacts

from training.config import DEFAULTS
from training.model import build_model


def _model(counts=None, model=None, **training):
    config = copy.deepcopy(DEFAULTS)
    config["model"].update(embedding_dim=8, hidden_units=[16], id_dim=4, categorical_dim=2, text_projection_dim=4,
                           **(model or {}))
    config["training"].update(**training)
    tf.keras.utils.set_random_seed(1)
    model = build_model(config, artifacts(counts))
    model.user_embeddings(BATCH)  # creates every weight now, from the seed just set
    return model


BATCH = {"user_id": tf.constant(["u0", "u1", "u2", "u3"]),
         "history": tf.constant([["i1", "i2"], ["", "i3"], ["", ""], ["i4", "i0"]]),
         "target": tf.constant(["i0", "i5", "i0", "i6"]), "weight": tf.ones([4])}


def _loss(model, batch=BATCH):
    return float(model.compute_loss(batch, training=False))


def test_logq_correction_changes_the_loss_only_through_popular_candidates():
    with_logq, without = _model(logq_correction=True), _model(logq_correction=False)
    assert _loss(with_logq) != pytest.approx(_loss(without))
    uniform_batch = dict(BATCH, target=tf.constant(["i5", "i6", "i7", "i8"]))  # equally frequent targets
    assert _loss(with_logq, uniform_batch) == pytest.approx(_loss(without, uniform_batch), rel=1e-5)


def test_use_weights_off_ignores_the_weight_column():
    """training.use_weights was accepted but did nothing; now false means every example counts once."""
    weighted = dict(BATCH, weight=tf.constant([3.0, 0.5, 1.0, 2.0]))
    assert _loss(_model(use_weights=True), weighted) != pytest.approx(_loss(_model(use_weights=True)))
    assert _loss(_model(use_weights=False), weighted) == pytest.approx(_loss(_model(use_weights=True)), rel=1e-6)


def test_accidental_hits_are_removed():
    removing, keeping = _model(remove_accidental_hits=True), _model(remove_accidental_hits=False)
    assert _loss(removing) < _loss(keeping)  # i0 appears twice: its other copy is no longer a negative
    distinct = dict(BATCH, target=tf.constant(["i0", "i5", "i7", "i6"]))
    assert _loss(removing, distinct) == pytest.approx(_loss(keeping, distinct), rel=1e-5)


def test_uniform_negatives_add_candidates_and_are_seeded_by_step():
    plain, mixed = _model(uniform_negatives=0), _model(uniform_negatives=6, logq_correction=False)
    first = _loss(mixed)
    assert first > _loss(_model(uniform_negatives=0, logq_correction=False))  # more negatives, more loss
    assert int(mixed.negative_draws.numpy()) == 1
    again = _model(uniform_negatives=6, logq_correction=False)
    assert _loss(again) == pytest.approx(first, rel=1e-6)  # same seed, same draw count → same negatives
    assert _loss(plain) > 0


def test_uniform_negatives_never_draw_items_training_has_not_seen():
    """A cold item (no training interaction) must not be taught to the model as a negative only."""
    counts = np.array([50.0, 1, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1])
    model = _model(counts=counts, uniform_negatives=50)
    drawn = np.concatenate([model.draw_negatives().numpy() for _ in range(40)])
    seen_rows = set((np.flatnonzero(counts > 0) + 1).tolist())   # catalogue rows are 1-based (0 = unknown)
    assert set(drawn.tolist()) == seen_rows
    assert _loss(model) > 0


def test_a_window_of_steps_is_the_loss_of_its_steps_as_examples():
    """The causal encoder's sequence batch: each step with a target is the example (the window up to it, its
    target) that one-example-per-interaction training makes, so both batches give one loss (in-batch negatives,
    logQ and accidental hits included)."""
    model = _model(model={"history_encoder": "causal", "history_len": 3, "history_layers": 1})
    windows = {"user_id": tf.constant(["u0", "u1"]), "history": tf.constant([["", "i1", "i2"], ["i3", "i4", ""]]),
               "target": tf.constant([["i1", "i2", "i5"], ["i4", "i6", ""]]),
               "weight": tf.constant([[1.0, 2.0, 1.0], [0.5, 1.0, 0.0]])}
    steps = {"user_id": tf.constant(["u0", "u0", "u0", "u1", "u1"]),
             "history": tf.constant([["", "", ""], ["", "", "i1"], ["", "i1", "i2"], ["", "", "i3"], ["", "i3", "i4"]]),
             "target": tf.constant(["i1", "i2", "i5", "i4", "i6"]), "weight": tf.constant([1.0, 2.0, 1.0, 0.5, 1.0])}
    assert _loss(model, windows) == pytest.approx(_loss(model, steps), rel=1e-5)
    assert _loss(model, windows) != pytest.approx(_loss(model, dict(steps, target=tf.constant(
        ["i1", "i2", "i5", "i6", "i4"]))), rel=1e-3)    # a step's query belongs to its own target
