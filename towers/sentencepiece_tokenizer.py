"""SentencePiece tokenisation inside the graph, shaped like ``transformers.TFBertTokenizer``'s output.

Why it exists: multilingual encoders (multilingual-e5-small, XLM-RoBERTa's family) cut text with a SentencePiece
unigram model, not WordPiece. To keep the export's promise (raw strings in, tokenised in the graph) the text
encoder needs a tokenizer layer that runs on TF Text's ``SentencepieceTokenizer`` op and hands BERT the same
``input_ids`` / ``attention_mask`` / ``token_type_ids`` as the WordPiece path: ``<s>`` text ``</s>``, cut to
``max_length``, padded to the longest row. A fixed text prefix (e5's ``"query: "``) is joined in the graph too.

:func:`unigram_model` writes the SentencePiece model (a ``ModelProto``) from a vocabulary and its scores, with
SentencePiece's own ``nmt_nfkc`` normalisation (NFKC, control characters dropped, whitespace unified: what the
XLM-RoBERTa tokenizers apply), taken from the library rather than rebuilt here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf
import tf_keras


def unigram_model(pieces: Sequence[str], scores: Sequence[float], special: dict[str, int]) -> bytes:
    """A serialised SentencePiece unigram model whose ids are the positions in ``pieces``."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    # The nmt_nfkc character map, as SentencePiece's trainer compiles it: train a throw-away model, keep its spec.
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("a b c d e f g h\n" * 10, encoding="utf-8")
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(Path(tmp) / "m"), vocab_size=12,
                                       model_type="char", normalization_rule_name="nmt_nfkc",
                                       minloglevel=2)
        normalizer = pb.ModelProto.FromString((Path(tmp) / "m.model").read_bytes()).normalizer_spec
    model = pb.ModelProto()
    model.normalizer_spec.CopyFrom(normalizer)
    trainer = model.trainer_spec
    trainer.model_type = pb.TrainerSpec.UNIGRAM
    trainer.vocab_size = len(pieces)
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = (
        special["unk"], special["bos"], special["eos"], special["pad"])
    controls = {special["bos"], special["eos"], special["pad"]}
    for index, (piece, score) in enumerate(zip(pieces, scores, strict=True)):
        entry = model.pieces.add()
        entry.piece, entry.score = piece, float(score)
        if index == special["unk"]:
            entry.type = pb.ModelProto.SentencePiece.UNKNOWN
        elif index in controls or (piece.startswith("<") and piece.endswith(">") and score == 0.0):
            entry.type = pb.ModelProto.SentencePiece.CONTROL    # <s>, </s>, <pad>, <mask>: never cut from text
        else:
            entry.type = pb.ModelProto.SentencePiece.NORMAL
    return model.SerializeToString()


class SentencePieceBertTokenizer(tf_keras.layers.Layer):
    """Raw strings [B] → {input_ids, attention_mask, token_type_ids} int32 [B, L ≤ max_length]."""

    def __init__(self, model: bytes, bos_id: int, eos_id: int, pad_id: int, max_length: int,
                 prefix: str = "", **kwargs):
        super().__init__(trainable=False, **kwargs)
        import tensorflow_text as tf_text

        self.sentencepiece = tf_text.SentencepieceTokenizer(model=model, out_type=tf.int32)
        self.bos_id, self.eos_id, self.pad_id = int(bos_id), int(eos_id), int(pad_id)
        self.max_length = int(max_length)
        self.prefix = prefix

    def unpaired_tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """The pieces' ids [B, (n)], without ``<s>``/``</s>`` and uncut (as TFBertTokenizer's method of that name)."""
        texts = tf.reshape(texts, [-1])
        if self.prefix:
            texts = tf.strings.join([self.prefix, texts])
        return self.sentencepiece.tokenize(texts)

    def call(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        ids = self.unpaired_tokenize(texts)[:, : self.max_length - 2]
        rows = ids.nrows()
        ids = tf.concat([tf.fill([rows, 1], self.bos_id), ids, tf.fill([rows, 1], self.eos_id)], axis=1)
        input_ids = ids.to_tensor(default_value=self.pad_id)
        mask = tf.ones_like(ids).to_tensor(default_value=0)
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": tf.zeros_like(input_ids)}
