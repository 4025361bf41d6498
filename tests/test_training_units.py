"""Config handling, example building and the ranking metrics, each on small hand-checked inputs."""

import re

import numpy as np
import pandas as pd
import pytest
import yaml

from training import evaluate as ev
from training.config import DEFAULTS, ConfigError, load_config
from training.examples import evaluation_cases, training_examples, training_sequences


def test_config_layers_defaults_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {format: movielens_100k, path: x}\ntraining: {epochs: 5}\n")
    config = load_config(path, ["training.epochs=7", "model.hidden_units=[8, 4]",
                                "data.split={type: temporal, valid_start: 2024-01-01, test_start: 1706745600}"])
    assert config["training"]["epochs"] == 7 and config["model"]["hidden_units"] == [8, 4]
    assert config["training"]["batch_size"] == 1024  # default kept
    assert config["data"]["split"] == {"type": "temporal", "valid_start": "2024-01-01", "test_start": 1706745600}


@pytest.mark.parametrize("override, message", [
    ("training.epoch=3", "unknown key 'training.epoch' (known: seed, epochs,"),
    ("training.epochs=0", "training.epochs: input should be greater than 0, got 0"),
    ("model.encoder_mode=half", "model.encoder_mode: input should be 'frozen', 'finetune_top_n' or 'full'"),
    ("training.early_stopping_metric=recall@20", "recall@K or ndcg@K with K in evaluation.ks [10, 50]"),
    ("training.epochs", "expected key=value"),
    # the fault probe's findings (issue 15, defects 4 and 5): every one names its key
    ("model.history_heads=0", "model.history_heads: input should be greater than 0, got 0"),
    ("training.learning_rate=fast", "training.learning_rate: input should be a valid number, got 'fast'"),
    ("training.temperature=warm", "training.temperature: input should be a valid number, got 'warm'"),
    ("model.history_decay=x", "model.history_decay: input should be a valid number, got 'x'"),
    ("training.early_stopping_metric=recall@abc", "training.early_stopping_metric 'recall@abc' must be recall@K"),
    ("model.hidden_units=abc", "model.hidden_units: input should be a valid list, got 'abc'"),
    ("model.hidden_units=[-1]", "model.hidden_units.0: input should be greater than 0, got -1"),
    ("evaluation.batch_size=0", "evaluation.batch_size: input should be greater than 0, got 0"),
    ("training.learning_rate=-1", "training.learning_rate: input should be greater than 0, got -1"),
    ("training.epochs=true", "training.epochs: input should be a valid integer, got True"),
    ("training.uniform_negatives=-3", "training.uniform_negatives: input should be greater than or equal to 0"),
    ("training.steps_per_execution=0", "training.steps_per_execution: input should be greater than 0"),
    ("training.warmup_steps=-10", "training.warmup_steps: input should be greater than or equal to 0"),
    ("model.id_dim=0", "model.id_dim: input should be greater than 0"),
    ("model.history_dropout=2.0", "model.history_dropout: input should be less than 1"),
    ("model.history_encoder=lstm",
     "model.history_encoder: input should be 'mean', 'attention' or 'causal', got 'lstm'"),
    ("model.item_features=[]", "model.item_features: unknown or empty []"),
    ("model.item_features=[text,colour]", "model.item_features: unknown or empty ['colour']"),
    ("data.interactions=/does/not/exist.csv", "data.interactions has no effect for data.format 'movielens_100k'"),
    ("data.items=/x.csv", "data.items has no effect for data.format 'movielens_100k'"),
    ("data.users=/x.csv", "data.users has no effect for data.format 'movielens_100k'"),
    ("data.timestamp_unit=hours", "data.timestamp_unit: input should be 'auto', 's', 'ms', 'us' or 'ns'"),
    ("data.timestamp_unit=ms", "data.timestamp_unit has no effect for data.format 'movielens_100k'"),
    ("data.split={type: given}", "data.split: type 'given' needs a dataset that ships its own split"),
    ("data.split={type: temporal, valid_start: 2024-02-01, test_start: 2024-01-01}",
     "data.split.valid_start (datetime.date(2024, 2, 1)) must be before data.split.test_start"),
])
def test_config_errors_name_the_key(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text("data: {format: movielens_100k, path: x}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, [override])


@pytest.mark.parametrize("overrides, message", [
    (["model.history_encoder=attention", "model.history_heads=3", "model.embedding_dim=32"],
     "model.history_heads (3) must divide model.embedding_dim (32)"),
    (["model.encoder=tiny", "model.encoder_mode=finetune_top_n", "model.finetune_top_n=99"],
     "model.finetune_top_n (99) exceeds the tiny encoder's 2 layer(s) (model.tiny_layers)"),
    (["model.history_encoder=causal", "model.history_heads=3", "model.embedding_dim=32"],
     "model.history_heads (3) must divide model.embedding_dim (32)"),
    (["model.history_encoder=causal", "model.user_features=[text,id]"],
     "model.history_encoder 'causal' needs 'history' in model.user_features"),
    (["model.history_encoder=causal", "data.format=prepared"],
     "model.history_encoder 'causal' trains on whole sequences and cannot stream data.format 'prepared'"),
])
def test_cross_field_rules_name_both_keys(tmp_path, overrides, message):
    path = tmp_path / "c.yaml"
    path.write_text("data: {format: movielens_100k, path: x}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, overrides)


def test_yaml_exponent_numbers_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {format: movielens_100k, path: x}\ntraining: {learning_rate: 1e-3}\n")
    assert load_config(path)["training"]["learning_rate"] == 0.001


def test_an_old_run_config_still_loads(tmp_path):
    """A config.yaml from before cold_user_dropout, the history encoders and hashing existed: it loads, and the
    keys added since take the values that run trained with."""
    from training.run import RunDir

    old = {"data": {k: v for k, v in DEFAULTS["data"].items() if k not in ("hash_user_ids", "hash_salt",
                                                                            "timestamp_unit")},
           "model": {k: v for k, v in DEFAULTS["model"].items() if not k.startswith("history_e")
                     and k not in ("cold_user_dropout", "history_layers", "history_heads", "history_dropout")},
           "training": {k: v for k, v in DEFAULTS["training"].items() if k != "warm_start_from"},
           "evaluation": DEFAULTS["evaluation"]}
    old["data"].update(format="generated", path="worlds/x", interactions="/does/not/exist.csv")  # ignored then
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    config = RunDir(tmp_path).read_config()
    assert config["model"]["cold_user_dropout"] == 0.0 and config["model"]["history_encoder"] == "mean"
    assert config["data"]["timestamp_unit"] == "auto" and config["training"]["warm_start_from"] is None
    assert config["data"]["interactions"] is None


@pytest.mark.parametrize("name", ["default", "smoke", "amazon_scientific", "amazon_beauty", "movielens_100k"])
def test_every_shipped_config_passes_the_schema(name):
    from helpers import ROOT

    config = load_config(ROOT / "configs" / f"{name}.yaml")
    assert config["data"]["format"] != "files" and config["data"]["path"]


def test_defaults_have_one_source():
    """towers and training read the same defaults: the schema's (cold_user_dropout disagreed before)."""
    from towers.config import TowerConfig

    assert TowerConfig().cold_user_dropout == DEFAULTS["model"]["cold_user_dropout"] == 0.1
    assert {k: v for k, v in TowerConfig().model_dump().items() if k != "seed"} == DEFAULTS["model"]


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    files = tmp_path / "files.yaml"
    files.write_text("data: {format: files}\n")
    with pytest.raises(ConfigError, match="needs data.items and data.interactions"):
        load_config(files)


def _interactions():
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "a", 3), ("u1", "c", 4), ("u1", "d", 5),
            ("u2", "b", 1), ("u2", "e", 6), ("u3", "c", 7)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(event="", weight=1.0)
    labels = pd.Series(["train", "train", "valid", "valid", "test", "train", "test", "test"])
    return frame, labels


def test_training_examples_use_previous_training_items_only():
    frame, labels = _interactions()
    examples = training_examples(frame, labels, history_len=3)
    assert examples.target.tolist() == ["a", "b", "b"]
    assert examples.history.tolist() == [["", "", ""], ["", "", "a"], ["", "", ""]]


def test_training_sequences_teach_every_step_of_each_window_once():
    """u1's training items a b a c (history_len 3): windows [a b a] and [c]; each step's history is the window up
    to it (the window after the first starts with the item before its first step)."""
    frame, labels = _interactions()
    frame = pd.concat([frame, pd.DataFrame([("u1", "c", 0)], columns=["user_id", "item_id", "timestamp"])
                       .assign(event="", weight=2.0)], ignore_index=True)
    labels = pd.Series(["train", "train", "train", "valid", "test", "train", "test", "test", "train"])
    sequences = training_sequences(frame, labels, history_len=3)
    assert sequences.user_id.tolist() == ["u1", "u1", "u2"]
    assert sequences.history.tolist() == [["", "a", "b"], ["a", "", ""], ["", "", ""]]
    assert sequences.target.tolist() == [["a", "b", "a"], ["c", "", ""], ["b", "", ""]]
    assert sequences.weight.tolist() == [[1, 1, 1], [2, 0, 0], [1, 0, 0]]
    assert sequences.steps() == 5 == training_examples(frame, labels, history_len=3).steps()


def test_evaluation_cases_pick_novel_targets_and_flag_cold_items_and_new_users():
    frame, labels = _interactions()
    cases, skipped = evaluation_cases(frame, labels, "valid", history_len=3, novel_only=True)
    assert cases.target.tolist() == ["c"]  # "a" repeats an earlier item, so the first novel one is "c"
    assert cases.history.tolist() == [["a", "b", "a"]]
    assert cases.exclude[0].tolist() == ["a", "b"]
    test, _ = evaluation_cases(frame, labels, "test", history_len=3, novel_only=False)
    assert test.user_id.tolist() == ["u1", "u2", "u3"]
    assert test.cold_item.tolist() == [True, True, True]  # d, e, c never appear in training
    assert test.new_user.tolist() == [False, False, True]


def test_ranks_and_metrics_by_hand():
    frame, labels = _interactions()
    cases, _ = evaluation_cases(frame, labels, "test", history_len=3, novel_only=False)
    index = {item: row for row, item in enumerate("abcde")}
    table = {"u1": [9, 8, 7, 1, 2], "u2": [0, 5, 0, 0, 4], "u3": [1, 1, 3, 2, 1]}  # scores over a..e
    scorer = lambda part: np.array([table[u] for u in part.user_id], float)
    rank = ev.ranks(scorer, cases, index, batch_size=2)
    # u1 → d (score 1): a, b, c are history, excluded; e (2) is above → rank 1
    # u2 → e (score 4): b is history, excluded; nothing above → rank 0. u3 → c: nothing above → rank 0
    assert rank.tolist() == [1, 0, 0]
    metrics = ev.summarize(rank, ks=[1, 2])
    assert metrics["recall@1"] == pytest.approx(2 / 3)
    assert metrics["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1 + 1) / 3)
    assert metrics["mrr"] == pytest.approx((0.5 + 1 + 1) / 3) and metrics["users"] == 3
    block = ev.report(rank, cases, ks=[1])
    assert block["new_users"]["users"] == 1 and block["cold_items"]["users"] == 3


def test_history_kept_ranks_history_items_among_the_candidates():
    """The published protocol: u1's history items a, b, c (scores 9, 8, 7) stay above its target d (1)."""
    frame, labels = _interactions()
    cases, _ = evaluation_cases(frame, labels, "test", history_len=3, novel_only=False)
    index = {item: row for row, item in enumerate("abcde")}
    table = {"u1": [9, 8, 7, 1, 2], "u2": [0, 5, 0, 0, 4], "u3": [1, 1, 3, 2, 1]}
    scorer = lambda part: np.array([table[u] for u in part.user_id], float)
    excluded, kept = ev.both_ranks(scorer, cases, index, batch_size=2)
    assert excluded.tolist() == ev.ranks(scorer, cases, index).tolist() == [1, 0, 0]
    assert kept.tolist() == ev.ranks(scorer, cases, index, exclude_history=False).tolist() == [4, 1, 0]
    block = ev.report(excluded, cases, [1], kept)
    assert block["history_kept"]["recall@1"] == pytest.approx(1 / 3) and block["recall@1"] == pytest.approx(2 / 3)
    assert set(block["history_kept"]) == set(block) - {"history_kept"}
    assert "two-tower, history kept" in ev.format_table("test", block, [1])


def test_a_repeated_target_stays_a_candidate_and_history_kept_counts_the_history_above_it():
    """u1 buys a again (leave-last-out): a stays a candidate under both protocols; its other history items b and c
    (scores 9, 8) are excluded from the main block and outrank it in history_kept. u2's history item d (9) does
    the same to its novel target e."""
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u1", "a", 4), ("u2", "d", 1), ("u2", "e", 2)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(event="", weight=1.0)
    labels = pd.Series(["train", "train", "train", "test", "train", "test"])
    cases, _ = evaluation_cases(frame, labels, "test", history_len=3, novel_only=False)
    assert cases.target.tolist() == ["a", "e"] and cases.history.tolist() == [["a", "b", "c"], ["", "", "d"]]
    assert [x.tolist() for x in cases.exclude] == [["b", "c"], ["d"]]   # never the target itself
    table = {"u1": [5, 9, 8, 7, 1], "u2": [1, 1, 1, 9, 5]}   # scores over a..e
    scorer = lambda part: np.array([table[u] for u in part.user_id], float)
    excluded, kept = ev.both_ranks(scorer, cases, {item: row for row, item in enumerate("abcde")})
    assert excluded.tolist() == [1, 0] and kept.tolist() == [3, 1]
    block = ev.report(excluded, cases, [1, 2], kept)
    assert block["recall@2"] == 1.0 and block["history_kept"]["recall@2"] == 0.5
    assert block["history_kept"]["recall@1"] == 0.0 and block["history_kept"]["users"] == 2


def test_ties_are_broken_at_random_not_in_the_targets_favour():
    """A scorer that gives every item the same score ranks its target uniformly, not first."""
    n = 2000
    cases = _many_cases(n)
    rank = ev.ranks(lambda part: np.zeros((len(part), 5)), cases, {item: row for row, item in enumerate("abcde")},
                    batch_size=256)
    assert set(rank.tolist()) == {0, 1, 2, 3, 4}
    assert abs(rank.mean() - 2.0) < 0.15 and ev.summarize(rank, [1])["recall@1"] == pytest.approx(0.2, abs=0.03)
    assert (ev.ranks(lambda part: np.zeros((len(part), 5)), cases, {i: r for r, i in enumerate("abcde")},
                     batch_size=256) == rank).all()   # seeded: the same ranks every time


def _many_cases(n: int):
    from training.examples import Examples

    return Examples(np.array([f"u{i}" for i in range(n)], object), np.full((n, 1), "", object),
                    np.array(["abcde"[i % 5] for i in range(n)], object), np.ones(n, np.float32),
                    [np.array([], object)] * n, np.zeros(n, bool), np.zeros(n, bool))


def test_popularity_scorer_ranks_by_training_counts():
    frame, labels = _interactions()
    cases, _ = evaluation_cases(frame, labels, "test", history_len=3, novel_only=False)
    index = {item: row for row, item in enumerate("abcde")}
    rank = ev.ranks(ev.popularity_scorer(np.array([1, 2, 0, 0, 0])), cases, index)
    # u1 → d: a, b, c excluded, d ties with e → 0 or 1. u2 → e: a above, c and d tie → 1..3. u3 → c: b, a above,
    # d and e tie → 2..4.
    assert rank[0] in (0, 1) and rank[1] in (1, 2, 3) and rank[2] in (2, 3, 4)
    table = ev.format_table("test", {**ev.summarize(rank, [10]),
                                     "baselines": {"popularity": ev.summarize(rank, [10])}}, [10])
    assert "recall@10" in table and "popularity" in table


def test_mostly_chinese_counts_letters_not_digits_or_punctuation():
    assert ev.mostly_chinese("轻便双人帐篷，防水 2人")
    assert ev.mostly_chinese("Nike 跑步鞋 男款")          # 5 ideographs of 9 letters
    assert not ev.mostly_chinese("Lightweight camping tent 帐篷")
    assert not ev.mostly_chinese("") and not ev.mostly_chinese("12345, !?")
