"""Text encoders in TF Hub's BERT format: a preprocessing SavedModel and an encoder SavedModel, both ways.

Why it exists: TF Hub packages a BERT as two SavedModels (tensorflow.org/hub "Common SavedModel APIs for text"):
``preprocess/`` with ``tokenize`` (strings [B] → word pieces, ragged [B, words, pieces]) and
``bert_pack_inputs(segments, seq_length)`` (→ ``input_word_ids``, ``input_mask``, ``input_type_ids`` [B, L]),
and ``encoder/``, a reusable SavedModel that maps those three tensors to ``pooled_output`` [B, H],
``sequence_output`` [B, L, H] and ``default``. A user who holds such a pair (their own, or one from a model
registry) can name it as ``model.encoder: hub:DIR``; :func:`export_hub` writes any encoder this project can load
in that format, so encoders can be published and consumed, and the tests have a hub model to load.

Both SavedModels are loaded through ``tensorflow_hub`` (``hub.load`` for the preprocessing, ``hub.KerasLayer``
for the encoder, trainable in the fine-tune mode), and both run inside the exported recommender's graph.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path

import tensorflow as tf
import tf_keras

from towers.config import ConfigError
from twotower.layout import SAVED_MODEL, rename_new, temporary_sibling

PREPROCESS, ENCODER = "preprocess", "encoder"
ENCODER_INPUTS = ("input_word_ids", "input_mask", "input_type_ids")
VOCAB_ASSET = "vocab.txt"       # written by export_hub: lets the [UNK] report count unknown pieces
HUB_PREFIX = "hub:"


class HubFormatError(ConfigError):
    """A directory that is not a TF Hub BERT pair; the message names the path and what is missing."""


def import_hub():
    """``tensorflow_hub`` imports pkg_resources at import time, which warns about its own deprecation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow_hub as hub
    return hub


def is_hub_pair(directory: Path) -> bool:
    return all((directory / part / SAVED_MODEL).exists() for part in (PREPROCESS, ENCODER))


@dataclasses.dataclass(frozen=True)
class HubSource:
    """A TF Hub BERT pair on disk: ``directory/preprocess`` and ``directory/encoder``."""

    directory: Path

    @property
    def preprocess(self) -> Path:
        return self.directory / PREPROCESS

    @property
    def encoder(self) -> Path:
        return self.directory / ENCODER

    @property
    def vocab(self) -> list[str] | None:
        """The word-piece vocabulary where the preprocessing model ships it (export_hub's do), else None.
        Split on "\\n" only: a vocabulary may hold U+2028, where ``str.splitlines`` would break a line."""
        path = self.preprocess / "assets" / VOCAB_ASSET
        return path.read_text(encoding="utf-8").rstrip("\n").split("\n") if path.exists() else None

    def fingerprint(self) -> str:
        """Changes whenever either SavedModel changes (keys the text cache)."""
        digest = hashlib.sha256()
        for part in (self.preprocess, self.encoder):
            for path in sorted(p for p in part.rglob("*") if p.is_file()):
                digest.update(str(path.relative_to(self.directory)).encode())
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
        return digest.hexdigest()[:16]


def resolve_hub(directory: Path) -> HubSource:
    if not directory.is_dir():
        raise HubFormatError(f"TF Hub encoder directory not found: {directory}")
    missing = [f"{part}/{SAVED_MODEL}" for part in (PREPROCESS, ENCODER)
               if not (directory / part / SAVED_MODEL).exists()]
    if missing:
        raise HubFormatError(f"{directory} is not a TF Hub BERT pair: it lacks {', '.join(missing)} (write one "
                             f"with `twotower encoder export-hub`)")
    return HubSource(directory)


class HubBert(tf_keras.layers.Layer):
    """Raw strings [B] → (sequence_output [B, L, H], input_mask [B, L]) through a TF Hub pair, in the graph."""

    def __init__(self, source: HubSource, max_length: int, trainable_encoder: bool, **kwargs):
        super().__init__(**kwargs)
        import tensorflow_text  # noqa: F401 - kernels of TF Hub preprocessing models (tokenizers, packing)

        hub = import_hub()
        self.max_length = int(max_length)
        self.preprocessor = hub.load(str(source.preprocess))
        self.encoder = hub.KerasLayer(str(source.encoder), trainable=trainable_encoder, name="hub_encoder")
        probe = self.encoder(self.pack(tf.constant(["a"])))
        self.dim = int(probe["sequence_output"].shape[-1])

    def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        return self.preprocessor.tokenize(tf.reshape(texts, [-1]))

    def pack(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.preprocessor.bert_pack_inputs([self.tokenize(texts)], seq_length=self.max_length)

    def call(self, texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Always the encoder's inference graph, also when its weights fine-tune: a TF Hub SavedModel traces its
        dropout with unseeded random ops, which deterministic training (training.deterministic) refuses."""
        packed = self.pack(texts)
        outputs = self.encoder(packed, training=False)
        return outputs["sequence_output"], packed["input_mask"]


class _Preprocessor(tf.Module):
    """TF Hub's preprocessing API over a WordPiece vocabulary, with tensorflow_text's ops (no Python at run time)."""

    def __init__(self, vocab: list[str], lower_case: bool):
        super().__init__(name="preprocess")
        import tensorflow_text as text

        self.vocab_file = tf.saved_model.Asset(self._write_vocab(vocab))
        table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(self.vocab_file, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                          tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER, delimiter="\n"), -1)
        self._table = table
        self._tokenizer = text.BertTokenizer(table, token_out_type=tf.int32, lower_case=lower_case,
                                             unknown_token="[UNK]")
        self._ids = {name: vocab.index(token) for name, token in
                     (("padding_id", "[PAD]"), ("start_of_sequence_id", "[CLS]"), ("end_of_segment_id", "[SEP]"),
                      ("mask_id", "[MASK]"))}
        self._ids["vocab_size"] = len(vocab)

    @staticmethod
    def _write_vocab(vocab: list[str]) -> str:
        """The vocabulary as a file named VOCAB_ASSET (the SavedModel keeps an asset's file name)."""
        import tempfile

        path = Path(tempfile.mkdtemp()) / VOCAB_ASSET
        path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
        return str(path)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        return self._tokenizer.tokenize(texts)

    @tf.function(input_signature=[[tf.RaggedTensorSpec([None, None, None], tf.int32, ragged_rank=2)],
                                  tf.TensorSpec([], tf.int32)])
    def bert_pack_inputs(self, segments, seq_length) -> dict[str, tf.Tensor]:
        import tensorflow_text as text

        pieces = [segment.merge_dims(-2, -1) for segment in segments]
        # Each segment keeps an equal share of the room left by [CLS] and the [SEP]s (for the one segment an
        # encoder packs, exactly TF Hub's round-robin trimming; its op is namespaced, which stock TF Serving
        # may not load, so plain ragged slicing does it here).
        share = (seq_length - 1 - len(pieces)) // len(pieces)
        trimmed = [piece[:, :share] for piece in pieces]
        ids, type_ids = text.combine_segments(trimmed, start_of_sequence_id=self._ids["start_of_sequence_id"],
                                              end_of_segment_id=self._ids["end_of_segment_id"])
        word_ids, mask = text.pad_model_inputs(ids, max_seq_length=seq_length, pad_value=self._ids["padding_id"])
        type_ids, _ = text.pad_model_inputs(type_ids, max_seq_length=seq_length, pad_value=0)
        return {"input_word_ids": word_ids, "input_mask": mask, "input_type_ids": type_ids}

    @tf.function(input_signature=[])
    def get_special_tokens_dict(self) -> dict[str, tf.Tensor]:
        return {name: tf.constant(value, tf.int32) for name, value in self._ids.items()}


def _encoder_model(bert) -> tf_keras.Model:
    """A Keras model with TF Hub's encoder signature around a transformers ``TFBertModel``."""
    inputs = {name: tf_keras.Input([None], dtype=tf.int32, name=name) for name in ENCODER_INPUTS}
    out = bert(input_ids=inputs["input_word_ids"], attention_mask=inputs["input_mask"],
               token_type_ids=inputs["input_type_ids"])
    outputs = {"sequence_output": out.last_hidden_state, "pooled_output": out.pooler_output,
               "default": out.pooler_output}
    return tf_keras.Model(inputs, outputs, name="bert_encoder")


def _reusable(model: tf_keras.Model):
    """TF Hub's reusable SavedModel API over ``model``: ``__call__(inputs, training)`` (both traces), and the
    ``variables``, ``trainable_variables`` and ``regularization_losses`` lists that ``hub.KerasLayer`` reads.

    A plain trackable rather than the Keras model itself: saving a Keras model writes a call trace for every layer
    (10 s for a 2-layer BERT, against 1.3 s) and loading it rebuilds them all (1.5-2 s a load, against 0.2)."""
    specs = {name: tf.TensorSpec([None, None], tf.int32, name=name) for name in ENCODER_INPUTS}

    @tf.function
    def call(inputs, training=False):
        return model(inputs, training=training)

    for training in (False, True):
        call.get_concrete_function(specs, training=training)
    root = tf.__internal__.tracking.AutoTrackable()
    root.__call__ = call
    root.variables = list(model.variables)
    root.trainable_variables = list(model.trainable_variables)
    root.regularization_losses = []
    return root


def export_hub(bert, vocab: list[str], lower_case: bool, out: Path) -> HubSource:
    """Writes ``out/preprocess`` and ``out/encoder`` for a transformers ``TFBertModel`` and its vocabulary.
    ``out`` must not exist yet; a failure leaves nothing behind."""
    import shutil

    if out.exists():
        raise HubFormatError(f"--out {out} already exists: choose a new directory")
    tmp = temporary_sibling(out)   # this writer's own: a concurrent export-hub into the same --out keeps its own
    try:
        preprocessor = _Preprocessor(vocab, lower_case)
        tf.saved_model.save(preprocessor, str(tmp / PREPROCESS))
        shutil.rmtree(Path(preprocessor.vocab_file.asset_path.numpy().decode()).parent, ignore_errors=True)
        tf.saved_model.save(_reusable(_encoder_model(bert)), str(tmp / ENCODER))
        try:
            rename_new(tmp, out)
        except FileExistsError:   # another writer filled --out meanwhile: keep theirs, write nothing
            raise HubFormatError(f"--out {out} was created by another writer while this export ran; nothing "
                                 f"written") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return HubSource(out)
