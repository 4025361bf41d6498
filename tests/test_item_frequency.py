"""Streaming item frequencies (Yi et al. 2019) recover the known frequencies of a generated stream."""

import numpy as np
import pytest
import tensorflow as tf

from training.item_frequency import StreamingItemFrequency


def test_streaming_estimate_recovers_known_frequencies():
    rng = np.random.default_rng(0)
    items, batch, steps = 2000, 128, 3000
    share = 1.0 / np.arange(1, items + 1) ** 1.1   # Zipf-like: a few items in every batch, most rarely
    share /= share.sum()
    stream = rng.choice(items, size=(steps, batch), p=share)
    estimator = StreamingItemFrequency(buckets=1 << 14, num_hashes=2, learning_rate=0.02)
    update = tf.function(estimator.update)
    for step in range(steps):
        update(tf.constant(stream[step], tf.int64))
    expected = batch * share                       # occurrences per batch
    estimate = estimator(tf.constant(np.arange(items), tf.int64)).numpy()
    seen = expected >= 0.05                        # seen often enough in 3000 steps to be estimated
    error = np.abs(estimate[seen] / expected[seen] - 1)
    assert seen.sum() > 200 and np.median(error) < 0.1 and np.percentile(error, 90) < 0.25, np.median(error)
    assert np.corrcoef(np.log(estimate[seen]), np.log(expected[seen]))[0, 1] > 0.99
    assert estimate[0] == pytest.approx(expected[0], rel=0.1)   # ~22 per batch: counts, not "at least once"
    assert int(estimator.step.numpy()) == steps


def test_strings_and_first_sightings():
    estimator = StreamingItemFrequency(buckets=64, num_hashes=1, learning_rate=0.05, initial_gap=100.0)
    assert estimator(tf.constant(["a"])).numpy()[0] == pytest.approx(0.01)  # never seen: 1 / initial_gap
    for step in range(1, 401):
        estimator.update(tf.constant(["a", "a"] if step % 4 == 0 else ["b"]))
    # "a": twice every 4th step → 0.5 per step; "b": once in 3 of 4 steps → 0.75 per step
    assert estimator(tf.constant(["a", "b"])).numpy() == pytest.approx([0.5, 0.75], rel=0.15)
    with pytest.raises(ValueError, match="learning_rate"):
        StreamingItemFrequency(learning_rate=0.0)
