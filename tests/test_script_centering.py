"""towers/script_centering.py: the in-graph script rule is the evaluation's, and centring takes each script's
offset away while a text-less zero vector stays zero."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from towers.script_centering import center, center_texts, chinese, script_means
from training.evaluate import mostly_chinese

TEXTS = ["", "   ", "123 !!", "Lightweight tent for two", "é café", "FitNook 小巧壶铃 第四代", "ab 小", "abc 小",
         "轻便双人帐篷，防水", "日本語のテキスト", "Ω", "小", "2024款 帐篷", "tent 帐篷 tent", "\u2028帐篷"]


def test_the_graph_reads_a_text_as_chinese_exactly_where_the_evaluation_does():
    assert chinese(tf.constant(TEXTS)).numpy().tolist() == [mostly_chinese(t) for t in TEXTS]


def test_each_script_loses_its_own_mean_and_no_text_stays_zero():
    rng = np.random.default_rng(0)
    offset = np.zeros(8, np.float32)
    offset[0] = 3.0
    english = rng.normal(size=(20, 8)).astype(np.float32)
    chinese_rows = rng.normal(size=(10, 8)).astype(np.float32) + offset   # the language's shared offset
    vectors = np.concatenate([english, chinese_rows, np.zeros((1, 8), np.float32)])
    flags = np.array([False] * 20 + [True] * 10 + [False])
    means = script_means(vectors[:30], flags[:30])
    np.testing.assert_allclose(means[1] - means[0], chinese_rows.mean(0) - english.mean(0), rtol=1e-5)
    out = center(vectors, flags, means).numpy()
    assert not out[-1].any()                                                 # no text: zeros, not a mean
    np.testing.assert_allclose(np.linalg.norm(out[:30], axis=1), 1.0, rtol=1e-5)
    # the offset is gone: the two scripts' centred rows have the same mean direction (about none)
    assert abs(out[20:30, 0].mean() - out[:20, 0].mean()) < 0.3 < abs(vectors[20:30, 0].mean() - english[:, 0].mean())


def test_a_one_script_catalogue_is_centred_on_its_own_mean():
    vectors = np.eye(3, dtype=np.float32)
    means = script_means(vectors, np.zeros(3, bool))
    np.testing.assert_allclose(means, np.full((2, 3), 1 / 3, np.float32))


@pytest.mark.parametrize("texts", [["Lightweight tent", "轻便帐篷"], []])
def test_cached_vectors_are_centred_by_the_same_ops(texts):
    vectors = np.ones((len(texts), 4), np.float32) if texts else np.zeros((0, 4), np.float32)
    means = np.array([[0, 0, 0, 1], [1, 0, 0, 0]], np.float32)
    out = center_texts(vectors, texts, means)
    assert out.shape == vectors.shape
    if texts:
        np.testing.assert_allclose(out[0], np.array([1, 1, 1, 0]) / np.sqrt(3), rtol=1e-6)
        np.testing.assert_allclose(out[1], np.array([0, 1, 1, 1]) / np.sqrt(3), rtol=1e-6)


def test_centring_needs_the_frozen_encoder():
    from towers.config import TowerConfig

    with pytest.raises(ValueError, match="text_centering needs model.encoder_mode: frozen"):
        TowerConfig.model_validate({"text_centering": True, "encoder_mode": "full"})
    assert TowerConfig.model_validate({"text_centering": True}).text_centering
