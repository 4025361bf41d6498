"""The text encoder: corpus vocabularies, [UNK] accounting, in-graph tokenisation, MiniLM loading, the cache."""

import numpy as np
import pytest
import tensorflow as tf

from towers.text_cache import TextVectorCache
from towers.text_encoder import (
    EncoderError,
    TextEncoder,
    build_wordpiece_vocab,
    make_tiny_bert,
    resolve_encoder,
    unk_report,
)

CORPUS = ["Lightweight camping tent for two", "Stainless steel travel mug", "不锈钢保温杯 大容量",
          "Camping stove, compact and lightweight"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    source = make_tiny_bert(tmp_path_factory.mktemp("tiny"), CORPUS * 2, seed=3)
    return TextEncoder(source, max_length=32)


def test_corpus_vocabulary_leaves_no_unknown_tokens(tiny):
    shares = unk_report(tiny, {"text": CORPUS})
    assert shares == {"text": 0.0}
    vocab = build_wordpiece_vocab(CORPUS)
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "camping" in vocab and "保" in vocab and "##保" in vocab


def test_unknown_share_counts_out_of_vocabulary_tokens(tiny):
    unk, total = tiny.token_stats(["camping stoves"])  # "stoves" → known pieces: still no [UNK]
    assert unk == 0 and total >= 2
    unk, total = tiny.token_stats(["帐篷"])  # characters the corpus never had
    assert (unk, total) == (2, 2)


def test_in_graph_tokenizer_matches_python_tokenizer(tiny):
    from transformers import BertTokenizer

    python = BertTokenizer(str(tiny.source.directory / "vocab.txt"), do_lower_case=True)
    for text in CORPUS:
        graph_ids = tiny.tokenizer(tf.constant([text]))["input_ids"].numpy()[0].tolist()
        assert graph_ids == python(text)["input_ids"]


def test_encode_is_unit_length_and_order_independent(tiny):
    vectors = tiny.encode(CORPUS, batch_size=2, progress=False)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    reversed_vectors = tiny.encode(CORPUS[::-1], batch_size=3, progress=False)[::-1]
    np.testing.assert_allclose(vectors, reversed_vectors, atol=1e-5)


def test_tiny_encoder_reloads_the_same_weights(tiny):
    again = TextEncoder(tiny.source, max_length=32)
    np.testing.assert_allclose(again.encode(CORPUS, progress=False), tiny.encode(CORPUS, progress=False),
                               atol=1e-6)


def test_tiny_encoders_of_one_corpus_and_seed_are_the_same_bytes(tmp_path):
    """What keys the text cache: the same corpus and seed give the same files (copied from the first while it is
    intact, built again, under the same Keras name, when it is not); another seed gives other weights."""
    from towers.text_encoder import make_tiny_bert

    first = make_tiny_bert(tmp_path / "a", CORPUS, seed=5, hidden=16, layers=1)
    copied = make_tiny_bert(tmp_path / "b", CORPUS, seed=5, hidden=16, layers=1)
    weights = (tmp_path / "a" / "tf_model.h5").read_bytes()
    (tmp_path / "a" / "tf_model.h5").write_bytes(weights[:-64] + bytes(64))   # no longer what was built
    rebuilt = make_tiny_bert(tmp_path / "c", CORPUS, seed=5, hidden=16, layers=1)
    assert (tmp_path / "c" / "tf_model.h5").read_bytes() == (tmp_path / "b" / "tf_model.h5").read_bytes() == weights
    assert copied.fingerprint() == rebuilt.fingerprint() != first.fingerprint()
    other = make_tiny_bert(tmp_path / "d", CORPUS, seed=6, hidden=16, layers=1)
    assert other.fingerprint() != rebuilt.fingerprint()


def test_minilm_loads_offline_and_is_semantic():
    encoder = TextEncoder(resolve_encoder("minilm"), max_length=32)
    tent, hiking, kettle = encoder.encode(["a red camping tent", "lightweight tent for hiking",
                                           "stainless steel kettle"], progress=False)
    assert tent @ hiking > tent @ kettle + 0.3
    assert unk_report(encoder, {"zh": ["不锈钢保温杯"]})["zh"] > 0.05  # why Chinese needs another vocabulary


def test_resolve_encoder_names_what_is_missing(tmp_path):
    with pytest.raises(EncoderError, match="not found"):
        resolve_encoder(str(tmp_path / "nope"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EncoderError, match="lacks: vocab.txt or sentencepiece.model, model.safetensors or tf_model.h5"):
        resolve_encoder(str(tmp_path))


def test_cache_encodes_each_text_once(tmp_path):
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts], np.float32)

    cache = TextVectorCache(tmp_path, "fp1")
    vectors, new = cache.get(["ab", "abc", "ab"], encode)
    assert new == 2 and calls == [["ab", "abc"]]
    np.testing.assert_array_equal(vectors[:, 0], [2, 3, 2])
    fresh = TextVectorCache(tmp_path, "fp1")  # a later run reads the shards back
    vectors, new = fresh.get(["abc", "abcd"], encode)
    assert new == 1 and calls[-1] == ["abcd"]
    np.testing.assert_array_equal(vectors[:, 0], [3, 4])
    other = TextVectorCache(tmp_path, "fp2")  # another encoder never sees these vectors
    assert len(other) == 0
    assert not list(tmp_path.rglob("*.tmp*"))


def test_cache_finds_texts_whose_digest_ends_in_a_zero_byte(tmp_path):
    """numpy's fixed-width bytes drop trailing NULs; such a text (1 in 256) must still be found by a later run."""
    from towers.text_cache import text_key

    texts = [f"item {i}" for i in range(3000)]
    assert any(text_key(t).endswith(b"\0") for t in texts)
    encode = lambda batch: np.ones((len(batch), 2), np.float32)
    TextVectorCache(tmp_path, "fp").get(texts, encode)
    _, new = TextVectorCache(tmp_path, "fp").get(texts, encode)
    assert new == 0


PARITY_TEXTS = CORPUS + ["", "x", "a very long product description " * 20, "Portable ESPRESSO machine — travel!",
                         "轻便双人帐篷，防水", "Mixed 中文 and English 混合 text"]


def hub_cosines(direct_source, out) -> np.ndarray:
    """Cosines between a direct encoder and its `twotower encoder export-hub` pair, on PARITY_TEXTS."""
    from towers.text_encoder import write_hub_pair

    pair = write_hub_pair(str(direct_source.directory), out)
    direct = TextEncoder(direct_source, max_length=32).encode(PARITY_TEXTS, progress=False)
    hub = TextEncoder(resolve_encoder(f"hub:{pair.directory}"), max_length=32).encode(PARITY_TEXTS, progress=False)
    return (direct * hub).sum(axis=1)


def test_hub_format_tiny_encoder_matches_the_direct_one(tiny, tmp_path):
    assert hub_cosines(tiny.source, tmp_path / "hub").min() >= 0.9999
    pair = resolve_encoder(str(tmp_path / "hub"))            # a directory holding the pair works too
    encoder = TextEncoder(pair, max_length=32)
    assert encoder.token_stats(["帐篷"]) == tiny.token_stats(["帐篷"]) == (2, 2)   # its vocabulary ships with it
    assert encoder.source.fingerprint() != tiny.source.fingerprint()
    with pytest.raises(EncoderError, match="finetune_top_n needs a Transformers BERT"):
        TextEncoder(pair, max_length=32, mode="finetune_top_n")


def test_hub_format_minilm_matches_the_direct_one(tmp_path):
    assert hub_cosines(resolve_encoder("minilm"), tmp_path / "hub").min() >= 0.9999


def test_hub_errors_name_the_path(tmp_path):
    from towers.hub_encoder import HubFormatError
    from towers.text_encoder import write_hub_pair

    (tmp_path / "half" / "preprocess").mkdir(parents=True)
    with pytest.raises(HubFormatError, match="lacks preprocess/saved_model.pb, encoder/saved_model.pb"):
        resolve_encoder(f"hub:{tmp_path / 'half'}")
    with pytest.raises(HubFormatError, match="already exists"):
        write_hub_pair("minilm", tmp_path / "half")
    with pytest.raises(EncoderError, match="RUN/encoder"):
        write_hub_pair("tiny", tmp_path / "new")


def test_torch_checkpoints_are_read_without_running_their_pickle(tmp_path):
    """A pickle naming anything but a plain tensor's classes is refused, naming it; the real m3e-small file reads
    into numpy with every tensor (bert-base-chinese's vocabulary, 4 layers, 512 wide)."""
    import zipfile

    from towers.named_encoders import NAMED, source_weights
    from towers.torch_weights import TorchFileError, load_state_dict

    evil = tmp_path / "evil.bin"
    with zipfile.ZipFile(evil, "w") as archive:   # pickle protocol 2 for os.system("echo")
        archive.writestr("archive/data.pkl", b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00echoq\x01\x85q\x02Rq\x03.")
    with pytest.raises(TorchFileError, match="refuses to load 'os.system'"):
        load_state_dict(evil)
    with pytest.raises(TorchFileError, match="not a PyTorch zip checkpoint"):
        load_state_dict(tmp_path / "missing.bin")
    state = load_state_dict(source_weights(NAMED["m3e-small"]))
    assert state["embeddings.word_embeddings.weight"].shape == (21128, 512)
    assert state["encoder.layer.3.attention.self.query.weight"].dtype == np.float32
    assert len([k for k in state if k.endswith("attention.self.query.weight")]) == 4


def test_m3e_small_covers_chinese_and_capitals(tmp_path, monkeypatch):
    from towers.named_encoders import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    encoder = TextEncoder(resolve_encoder("m3e-small"), max_length=32)
    texts = ["轻便双人帐篷，防水", "双人露营帐篷 轻量化", "不锈钢保温杯 大容量", "Stainless Steel TRAVEL Mug"]
    assert encoder.token_stats(texts)[0] == 0             # no [UNK]: Chinese characters and lowercased Latin
    tent, paraphrase, cup, _ = encoder.encode(texts, progress=False)
    assert tent @ paraphrase > tent @ cup + 0.1            # a paraphrase is nearer than another product
    assert resolve_encoder("m3e-small").directory == encoder.source.directory   # converted once, then reused
    vocab = encoder.source.vocab
    assert len(vocab) == 21128 and vocab.index("[UNK]") == 100


def test_export_hub_keeps_a_concurrent_writers_work_and_refuses_an_out_that_appeared(tmp_path, monkeypatch):
    """Its temporary directory is its own (another export's ``.OUT.tmp``, the old fixed name, survives), and an
    --out that another writer filled meanwhile is kept while this export writes nothing. (The encoder is a stand-in
    Keras model: what is tested is the directory handling.)"""
    import tf_keras

    from towers import hub_encoder
    from towers.hub_encoder import HubFormatError

    other = tmp_path / ".raced.tmp"
    other.mkdir()
    (other / "theirs.txt").write_text("another export's work")

    def racing(bert):   # another writer fills --out while this one saves
        (tmp_path / "raced" / "theirs").mkdir(parents=True)
        inputs = {name: tf_keras.Input([None], dtype=tf.int32, name=name) for name in hub_encoder.ENCODER_INPUTS}
        return tf_keras.Model(inputs, {"default": tf.cast(inputs["input_word_ids"], tf.float32)})

    monkeypatch.setattr(hub_encoder, "_encoder_model", racing)
    with pytest.raises(HubFormatError, match="raced was created by another writer while this export ran"):
        hub_encoder.export_hub(None, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "tent"], True, tmp_path / "raced")
    assert [p.name for p in (tmp_path / "raced").iterdir()] == ["theirs"]
    assert (other / "theirs.txt").read_text() == "another export's work"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".raced.tmp"]
