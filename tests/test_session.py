"""serving/session.py: a SavedModel's signature run through a Session answers as the eager signature function
does, with scalar and string outputs as numpy arrays, and a placeholder's shape checked before the graph runs."""

import numpy as np
import pytest
import tensorflow as tf


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(["a", "b"]), tf.constant([1, 2], tf.int64)), -1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="words"),
                                  tf.TensorSpec([None, 2], tf.float32, name="pairs")])
    def signature(words, pairs):
        return {"ids": module.table.lookup(words), "upper": tf.strings.upper(words),
                "total": tf.reduce_sum(pairs) * module.scale, "label": tf.constant("done")}

    path = tmp_path_factory.mktemp("session") / "1"
    tf.saved_model.save(module, str(path), signatures={"serving_default": signature})
    return path


def test_session_matches_the_eager_signature_and_checks_placeholder_shapes(saved):
    from serving.servable import read_signature_defs
    from serving.session import GraphSession

    graph = GraphSession(saved, ["serve"])
    bound = graph.bind(read_signature_defs(saved)["serving_default"])
    words = np.array([b"a", b"c", b"b"], dtype=object)
    pairs = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    out = bound.run({"words": words, "pairs": pairs})
    eager = tf.saved_model.load(str(saved)).signatures["serving_default"](words=tf.constant(words),
                                                                        pairs=tf.constant(pairs))
    assert sorted(out) == sorted(eager) == ["ids", "label", "total", "upper"]
    for name, value in eager.items():
        assert isinstance(out[name], np.ndarray) and out[name].shape == value.shape
        expected = np.array(value.numpy(), dtype=object if value.dtype == tf.string else None)
        assert out[name].tolist() == expected.tolist(), name
    assert out["ids"].tolist() == [1, -1, 2]                                     # table initialised by the init op
    assert out["label"].dtype == object and out["label"].item() == b"done"       # a scalar string: 0-d, bytes
    assert out["total"].dtype == np.float32 and out["total"].item() == 20.0      # the restored variable
    with pytest.raises(ValueError, match=r"Cannot feed value of shape \(2, 3\) for Tensor serving_default_pairs"):
        bound.run({"words": words, "pairs": np.zeros((2, 3), np.float32)})
    graph.close()
