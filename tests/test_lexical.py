"""towers/lexical.py: the words a text is matched on, and their sketched tf-idf vectors."""

from __future__ import annotations

import numpy as np
import pytest

CATALOGUE = ["Trailhaven ultralight tent for two", "Trailhaven sleeping pad", "婴儿背带 透气款", "不锈钢烧水壶",
             "Brewista espresso grinder", "CuddleCo 婴儿床单 纯棉"]


def tokens(text: str) -> list[str]:
    import tensorflow as tf

    from towers.lexical import lexical_tokens

    return [t.decode() for t in lexical_tokens(tf.constant([text])).to_list()[0]]


def test_tokens_are_latin_words_and_cjk_characters_with_their_pairs():
    assert tokens("Pawsome牵引绳 for Dogs-2") == ["pawsome", "for", "dogs", "2", "牵", "引", "绳", "牵引", "引绳"]
    assert tokens("  ") == [] and tokens("--!") == []
    assert tokens("婴儿 背带") == ["婴", "儿", "背", "带", "婴儿", "背带"]   # no pair across a space


def test_idf_weighs_rare_tokens_above_common_ones():
    import tensorflow as tf

    from towers.lexical import BUCKETS, fit_idf

    idf = fit_idf(CATALOGUE)
    bucket = lambda token: int(tf.strings.to_hash_bucket_fast([token], BUCKETS)[0])
    assert idf.shape == (BUCKETS,) and idf.min() >= 1.0
    assert idf[bucket("trailhaven")] < idf[bucket("tent")] < idf[bucket("never-seen")]


def test_vectors_match_shared_words_and_are_zero_without_any():
    import tensorflow as tf

    from towers.lexical import LexicalVectors, fit_idf

    layer = LexicalVectors(128, fit_idf(CATALOGUE))
    items = layer(tf.constant(CATALOGUE)).numpy()
    queries = layer(tf.constant(["婴儿背带推荐", "trailhaven tent", "", "Trailhaven ultralight tent for two"])).numpy()
    assert items.shape == (len(CATALOGUE), 128)
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, rtol=1e-5)
    scores = queries @ items.T
    assert scores[0].argmax() == 2                 # the baby carrier, by its Chinese words
    assert scores[1].argmax() == 0 and scores[1, 0] > scores[1, 1] > scores[1, 4]
    assert not queries[2].any()                    # no words: no vector
    assert scores[3, 0] == pytest.approx(1.0, abs=1e-5)


def test_lexical_dim_needs_the_semantic_channel():
    from towers.config import TowerConfig

    with pytest.raises(ValueError, match="lexical_dim needs model.semantic_channel"):
        TowerConfig.model_validate({"lexical_dim": 64})
    assert TowerConfig.model_validate({"lexical_dim": 64, "semantic_channel": True}).lexical_dim == 64


def test_a_chinese_search_has_its_own_words_weight():
    """Calibration may give Chinese searches' words another weight (training/calibrate.py); frozen for the export
    it is the same, and a layer whose checkpoint predates it weighs every search's words alike."""
    import tensorflow as tf

    from towers.semantic_channel import SemanticQuery

    layer = SemanticQuery(words=True)
    words, chinese = tf.ones([3, 2]), tf.constant([False, True, False])
    np.testing.assert_allclose(layer.words(words, chinese).numpy(), layer.words(words).numpy())   # factor 1
    layer.set_words_weight(10.0)
    layer.set_chinese_words_weight(2.5)
    np.testing.assert_allclose(layer.words(words, chinese).numpy()[:, 0], [10.0, 2.5, 10.0], rtol=1e-5)
    layer.freeze()
    np.testing.assert_allclose(layer.words(words, chinese).numpy()[:, 0], [10.0, 2.5, 10.0], rtol=1e-5)
    assert layer.describe()["weight_search_words_chinese"] == pytest.approx(2.5, rel=1e-5)
