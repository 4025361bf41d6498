"""Every tower configuration and every shipped config goes the whole way: train → export → a fresh process answers
raw-string requests, and the served model ranks exactly as ``evaluate`` scored it.

The matrix covers the user features (history, text, id and their unions), item feature subsets, both history
encoders, frozen and both fine-tune modes, mixed negatives and streaming logQ, the semantic channel with
history, text or both on the query side, a TF Hub encoder and a Chinese one, each trained for one short epoch
with the tiny encoder on one small generated world. The shipped configs run on a slice of their own data (the
shared datasets; skipped with a message where ../shared is absent). Training and export run in-process; only the
query runs in a fresh process, which is the boundary that matters: a SavedModel that loads without the
project's code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import EXPORT_K, ROOT, cli_in_process
from served_parity import assert_served_equals_evaluated, probe_versions

SHARED = ROOT.parent / "shared" / "datasets"
FAST = ["--set", "training.epochs=1", "--set", "training.batch_size=128", "--set", "model.max_seq_len=32",
        "--set", "training.early_stopping_patience=10"]

# id → --set overrides on configs/smoke.yaml
MATRIX = {
    "history-only": ["model.user_features=[history]", "model.item_features=[text,category,brand,price]"],
    "text-only-users": ["model.user_features=[text]", "model.item_features=[text]"],
    "ids-only": ["model.user_features=[id]", "model.item_features=[id]"],
    "history-text-attention": ["model.user_features=[history,text]", "model.item_features=[text,id]",
                               "model.history_encoder=attention"],
    "history-id-mixed-negatives": ["model.user_features=[history,id]", "model.item_features=[id,category]",
                                   "training.uniform_negatives=32", "training.item_frequency=streaming"],
    "text-id": ["model.user_features=[text,id]", "model.item_features=[text,brand,price]"],
    "all-finetune-top-attention": ["model.encoder_mode=finetune_top_n", "model.finetune_top_n=1",
                                   "model.history_encoder=attention"],
    "history-only-full-finetune": ["model.user_features=[history]", "model.item_features=[text]",
                                   "model.encoder_mode=full"],
    "semantic-all-features": ["model.semantic_channel=true"],
    "semantic-history-only-attention": ["model.semantic_channel=true", "model.user_features=[history]",
                                        "model.item_features=[text,category,brand,price]",
                                        "model.history_encoder=attention"],
    "semantic-text-only-users-finetune": ["model.semantic_channel=true", "model.user_features=[text]",
                                          "model.item_features=[text,id]", "model.encoder_mode=finetune_top_n",
                                          "model.finetune_top_n=1"],
}
# shipped config → the shared dataset folder it reads (None: the generated world)
SHIPPED = {"default": None, "smoke": None, "amazon_scientific": "amazon-scientific",
           "amazon_beauty": "amazon-beauty", "movielens_100k": "movielens-100k"}


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("matrix") / "world"
    cli_in_process("generate", "--out", out, "--users", 200, "--items", 150, "--seed", 3)
    return out


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("matrix-cache")


def train_and_export(config: Path, overrides: list[str], data_path: Path, cache: Path, folder: Path,
                     index: str = "brute-force", extra: tuple = ()) -> tuple[Path, Path]:
    run = folder / "run"
    sets = [item for override in overrides for item in ("--set", override)]
    cli_in_process("train", "--config", config, *sets, *FAST, "--set", f"data.path={data_path}",
                   "--set", f"training.text_cache_dir={cache}", *extra, "--run-dir", run)
    version = cli_in_process("export", "--run-dir", run, "--base-path", folder / "models" / "shop",
                             "--index", index, "--k", EXPORT_K, "--target-recall", 1.0).strip().splitlines()[-1]
    return run, Path(version)


def check_whole_way(run: Path, version: Path, folder: Path) -> None:
    """Raw strings in a fresh process: known users, an unknown id with an unknown item, a text-only newcomer;
    then the served rankings and vectors against the evaluated model's."""
    from export.parity import evaluated

    expected = evaluated(run)
    odd = {"signature": "serving_default", "inputs": {
        "user_id": ["nobody", "", ""], "history": [["NOT-AN-ITEM", ""], ["", ""], ["", ""]],
        "user_text": ["", "lightweight camping tent", "轻便双人帐篷，防水"]}}
    outputs, = probe_versions([(version, {**expected.requests(), "odd": odd})], folder)
    assert outputs["__imported__"].tolist() == []    # the project's code was never imported there
    assert outputs["odd/item_ids"].shape == (3, EXPORT_K) and all(i for i in outputs["odd/item_ids"].ravel())
    assert_served_equals_evaluated(expected, outputs, EXPORT_K)


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_every_tower_configuration_trains_exports_and_serves_as_evaluated(case, small_world, text_cache,
                                                                          tmp_path):
    run, version = train_and_export(ROOT / "configs" / "smoke.yaml", MATRIX[case], small_world, text_cache,
                                    tmp_path)
    check_whole_way(run, version, tmp_path)


def test_history_only_scann_at_recall_one_ranks_as_evaluated(small_world, text_cache, tmp_path):
    """The configuration behind the Amazon figures, through a ScaNN index tuned to recall 1.0."""
    run, version = train_and_export(ROOT / "configs" / "smoke.yaml", MATRIX["history-only"], small_world,
                                    text_cache, tmp_path, index="scann")
    import json

    card = json.loads((version / "assets" / "model_card.json").read_text())
    assert card["index"]["type"] == "scann" and card["index"]["recall_at_k_vs_brute_force"] == 1.0
    check_whole_way(run, version, tmp_path)


@pytest.fixture(scope="module")
def tiny_hub(small_world, tmp_path_factory) -> Path:
    """A TF Hub pair, written by `twotower encoder export-hub` from a tiny BERT of the small world's corpus."""
    import pandas as pd

    from towers.text_encoder import make_tiny_bert

    folder = tmp_path_factory.mktemp("hub")
    items = pd.read_csv(small_world / "items.csv")
    make_tiny_bert(folder / "bert", (items["title"] + ". " + items["description"]).tolist(), seed=0)
    cli_in_process("encoder", "export-hub", "--encoder", folder / "bert", "--out", folder / "pair")
    return folder / "pair"


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_tf_hub_encoder_trains_exports_and_serves_as_evaluated(mode, tiny_hub, small_world, text_cache, tmp_path):
    """model.encoder: hub:DIR, frozen and fine-tuned; in the fresh process, raw item text goes through the hub
    preprocessing and encoder inside the export and lands on the evaluated item vectors."""
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from training.run import RunDir
    from training.trainer import evaluated_model

    run, version = train_and_export(ROOT / "configs" / "smoke.yaml",
                                    [f"model.encoder=hub:{tiny_hub}", f"model.encoder_mode={mode}"], small_world,
                                    text_cache, tmp_path)
    check_whole_way(run, version, tmp_path)
    items = pd.read_csv(small_world / "items.csv", keep_default_na=False).head(20)
    fields = {f: items[f].astype(str).tolist() for f in ("item_id", "title", "description", "category", "brand")}
    prices = items["price"].astype(float).tolist()
    request = {"items": {"signature": "embed_items", "inputs": {**fields, "price": prices}}}
    outputs, = probe_versions([(version, request)], tmp_path)
    _, _, model = evaluated_model(RunDir(str(run)))
    expected = model.embed_items(tf.constant(fields["item_id"])).numpy()
    np.testing.assert_allclose(outputs["items/embedding"], expected, atol=1e-5)


@pytest.mark.parametrize("encoder,dim", [("m3e-small", 512), ("multilingual-e5-small", 384)])
def test_registry_encoders_train_export_and_serve_chinese(encoder, dim, small_world, text_cache, tmp_path,
                                                          monkeypatch):
    """model.encoder: m3e-small (WordPiece, converted from PyTorch weights without PyTorch) and
    multilingual-e5-small (SentencePiece, decoded from its 4-bit package): no [UNK] warning on the world's Chinese
    fields, the licence said as it is, and the export answers Chinese user text in a fresh process."""
    import json

    from towers.named_encoders import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "encoders"))
    run, version = train_and_export(ROOT / "configs" / "smoke.yaml", [f"model.encoder={encoder}"], small_world,
                                    text_cache, tmp_path)
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "are [UNK]" not in log and "[UNK] share in 'title': 0.00%" in log
    assert ("non-commercial research use only" in log) == (encoder == "m3e-small")
    check_whole_way(run, version, tmp_path)
    card = json.loads((version / "assets" / "model_card.json").read_text(encoding="utf-8"))
    assert card["encoder"]["name"] == encoder and card["encoder"]["dim"] == dim


@pytest.mark.parametrize("config", sorted(SHIPPED))
def test_every_shipped_config_goes_the_whole_way_on_a_slice(config, small_world, text_cache, tmp_path, request):
    """Each file in configs/ as shipped, but the tiny encoder, one epoch and (for the datasets) 300 users. The
    smoke config is the session's own run (tests/conftest.py), already trained and exported."""
    folder = SHIPPED[config]
    if folder is not None and not (SHARED / folder).is_dir():
        pytest.skip(f"{SHARED / folder} not found: the shared datasets are not on this machine")
    if config == "smoke":
        run, base = request.getfixturevalue("trained")[0], request.getfixturevalue("brute_force_export")
        check_whole_way(run, base / "1", tmp_path)
        return
    data = small_world if folder is None else SHARED / folder
    extra = () if folder is None else ("--set", "data.max_users=300")
    run, version = train_and_export(ROOT / "configs" / f"{config}.yaml", ["model.encoder=tiny"], data, text_cache,
                                    tmp_path, extra=extra)
    check_whole_way(run, version, tmp_path)


def test_shipped_configs_are_all_covered():
    assert {p.stem for p in (ROOT / "configs").glob("*.yaml")} == set(SHIPPED)
