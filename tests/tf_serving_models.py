"""TF Serving's own test models, rebuilt small: half_plus_two / half_plus_three (TF1 Estimator-style exports with
tf.Example classify/regress signatures), TF2 ``tf.saved_model.save`` exports and a Keras model, plus the model
config files its integration tests use. Built by the test session itself (nothing downloaded).

half_plus_two mirrors tensorflow/cc/saved_model/testdata/half_plus_two (and TF Serving's
saved_model_half_plus_two_cpu): ``y = 0.5 * x + 2`` where ``x`` comes from a serialized tf.Example's float feature
``x`` (shape [1]), with the signatures ``serving_default`` (predict x → y), ``classify_x_to_y`` (classify
inputs → scores), ``regress_x_to_y`` (regress inputs → outputs), ``regress_x_to_y2`` (y2 = 0.5 x + 3) and
``regress_x2_to_y3`` (x2 → y3 = 0.5 x2 + 3, another input tensor), version 123.
"""

from __future__ import annotations

import os
from pathlib import Path

# Keras 2 (tf-keras), as the project's own packages choose it: whichever test touches tf.keras first fixes it for
# the whole session, and tensorflow-recommenders needs Keras 2.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

VERSION = 123


def half_plus(version_dir: Path, offset: float, warmup: list | None = None) -> Path:
    """A TF1 graph exported with SavedModelBuilder: y = 0.5 x + offset, Estimator-style signatures."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        serialized = tf1.placeholder(tf.string, [None], name="tf_example")
        features = tf1.parse_example(serialized, {"x": tf1.FixedLenFeature([1], tf.float32),
                                                  "x2": tf1.FixedLenFeature([1], tf.float32, default_value=[0.0])})
        x = tf.identity(features["x"], name="x")
        x2 = tf.identity(features["x2"], name="x2")
        a = tf1.Variable(0.5, name="a")
        b = tf1.Variable(float(offset), name="b")
        c = tf1.Variable(3.0, name="c")
        y = tf.add(tf.multiply(a, x), b, name="y")
        y2 = tf.add(tf.multiply(a, x), c, name="y2")
        y3 = tf.add(tf.multiply(a, x2), c, name="y3")
        build = tf1.saved_model.signature_def_utils
        signatures = {
            "serving_default": build.predict_signature_def({"x": x}, {"y": y}),
            "classify_x_to_y": build.classification_signature_def(serialized, None, y),
            "regress_x_to_y": build.regression_signature_def(serialized, y),
            "regress_x_to_y2": build.regression_signature_def(serialized, y2),
            "regress_x2_to_y3": build.regression_signature_def(serialized, y3),
        }
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            builder = tf1.saved_model.Builder(str(version_dir))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save()
    if warmup is not None:
        write_warmup(version_dir, warmup)
    return version_dir


def write_warmup(version_dir: Path, logs: list) -> None:
    import tensorflow as tf

    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for entry in logs:
            writer.write(entry.SerializeToString())


def example_input(request_input, **features: float) -> None:
    example = request_input.example_list.examples.add()
    for name, value in features.items():
        example.features.feature[name].float_list.value.append(value)


def classify_log(signature: str = "classify_x_to_y", x: float = 2.0):
    from tensorflow_serving.apis import prediction_log_pb2

    entry = prediction_log_pb2.PredictionLog()
    entry.classify_log.request.model_spec.signature_name = signature
    example_input(entry.classify_log.request.input, x=x)
    return entry


def tf2_module(version_dir: Path) -> Path:
    """TF Serving's test_tf_saved_model_save: y = v1 * v2 * x with an unknown-shape input (3 * 2 * 2 = 12)."""
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.v1 = tf.Variable(3.0)
    root.v2 = tf.Variable(2.0)
    root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
    tf.saved_model.save(root, str(version_dir), root.f.get_concrete_function(tf.TensorSpec(None, tf.float32)))
    return version_dir


def tf2_two_signatures(version_dir: Path) -> Path:
    """TF Serving's test_tf_saved_model_save_multiple_signatures: serving_default → 1, custom_signature_key → 2."""
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.f = tf.function(lambda x: {"y": tf.constant(1.0)}, input_signature=[tf.TensorSpec(None, tf.float32)])
    root.g = tf.function(lambda x: {"y": tf.constant(2.0)}, input_signature=[tf.TensorSpec(None, tf.float32)])
    tf.saved_model.save(root, str(version_dir), signatures={"serving_default": root.f, "custom_signature_key": root.g})
    return version_dir


def keras_sequential(version_dir: Path) -> Path:
    """TF Serving's test_sequential_keras_saved_model_save: Input x [-1, 1] → Lambda identity named y (Keras 2,
    the project's tf-keras, as TF Serving's test uses)."""
    import tensorflow as tf
    import tf_keras

    model = tf_keras.models.Sequential()
    model.add(tf_keras.layers.Input(dtype="float32", shape=(1,), name="x"))
    model.add(tf_keras.layers.Lambda(lambda x: x, name="y"))
    tf.saved_model.save(model, str(version_dir))
    return version_dir


def model_config(models: dict[str, Path]) -> str:
    """TF Serving's good_model_config.txt, with the base paths filled in."""
    entries = "".join(f'  config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}\n'
                      for name, path in models.items())
    return f"model_config_list {{\n{entries}}}\n"


# TF Serving's testdata/bad_model_config.txt: not a ModelServerConfig text proto.
BAD_MODEL_CONFIG = "improperly formatted file\n"
