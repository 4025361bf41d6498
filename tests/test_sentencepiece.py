"""The SentencePiece path of the text encoder: the packed 4-bit decoding and the in-graph tokenizer.

multilingual-e5-small arrives 4-bit packed (towers/packed_e5.py) and tokenises with a SentencePiece unigram model
built from its vocabulary (towers/sentencepiece_tokenizer.py). The encoder as a whole trains, exports and serves in
tests/test_whole_way.py; here the two pieces are checked against hand-computed values and against the
SentencePiece library itself.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf

from towers.packed_e5 import PackedModelError, dequantize_q4_0, read_packed_e5
from towers.sentencepiece_tokenizer import SentencePieceBertTokenizer, unigram_model


def test_q4_0_blocks_decode_low_nibbles_first_then_high():
    scale = np.float16(0.5).tobytes()
    nibbles = bytes((low | (high << 4)) for low, high in zip(range(16), range(15, -1, -1), strict=True))
    row = dequantize_q4_0(scale + nibbles, rows=1, columns=32)[0]
    np.testing.assert_array_equal(row[:16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_array_equal(row[16:], (np.arange(15, -1, -1) - 8) * 0.5)


def test_a_file_that_is_not_a_packed_model_is_refused_by_name(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(PackedModelError, match="model.bin: not a packed e5 model"):
        read_packed_e5(bad)
    bad.write_bytes(b"E5S1" + struct.pack("<i", 1) + struct.pack("<7i", 384, 1, 12, 1536, 10, 512, 2))
    with pytest.raises(PackedModelError, match="model.bin: truncated"):
        read_packed_e5(bad)


PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁tent", "▁camp", "ing", "▁light", "weight", "帐", "篷", "▁que",
          "ry", ":", "t", "e", "n", "<mask>"]
SCORES = [0.0, 0.0, 0.0, 0.0, -2.0, -3.0, -4.0, -4.5, -4.0, -5.0, -6.0, -6.0, -3.0, -3.0, -3.0, -8.0, -8.0, -8.0, 0.0]
SPECIAL = {"bos": 0, "pad": 1, "eos": 2, "unk": 3}


@pytest.fixture(scope="module")
def model() -> bytes:
    return unigram_model(PIECES, SCORES, SPECIAL)


def test_the_unigram_model_keeps_the_vocabulary_ids_and_normalises_like_nmt_nfkc(model):
    reference = spm.SentencePieceProcessor(model_proto=model)
    assert [reference.id_to_piece(i) for i in range(len(PIECES))] == PIECES
    assert (reference.bos_id(), reference.pad_id(), reference.eos_id(), reference.unk_id()) == (0, 1, 2, 3)
    assert reference.encode("lightweight camping tent") == [8, 9, 6, 7, 5]
    assert reference.encode("ｔｅｎｔ") == [5]              # full-width Latin folds to ASCII (NFKC)
    assert 18 not in reference.encode("<mask> tent")          # a control piece is never cut from text


def test_the_graph_tokenizer_matches_the_library_and_frames_rows_like_bert(model):
    reference = spm.SentencePieceProcessor(model_proto=model)
    tokenizer = SentencePieceBertTokenizer(model, bos_id=0, eos_id=2, pad_id=1, max_length=6, prefix="query: ")
    texts = ["tent", "帐篷 tent", "lightweight camping tent"]
    out = {k: v.numpy() for k, v in tokenizer(tf.constant(texts)).items()}
    for row, text in enumerate(texts):
        ids = reference.encode("query: " + text)[:4]
        expected = [0, *ids, 2]
        assert list(out["input_ids"][row][: len(expected)]) == expected
        assert list(out["input_ids"][row][len(expected):]) == [1] * (out["input_ids"].shape[1] - len(expected))
        assert out["attention_mask"][row].sum() == len(expected)
    assert out["input_ids"].shape[1] == 6 and not out["token_type_ids"].any()
    ragged = tokenizer.unpaired_tokenize(tf.constant(texts))
    assert ragged.to_list() == [reference.encode("query: " + t) for t in texts]
