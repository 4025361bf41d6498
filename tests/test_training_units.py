"""Config handling, example building and the ranking metrics, each on small hand-checked inputs."""

import numpy as np
import pandas as pd
import pytest

from training import evaluate as ev
from training.config import ConfigError, load_config
from training.examples import evaluation_cases, training_examples


def test_config_layers_defaults_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {format: movielens_100k, path: x}\ntraining: {epochs: 5}\n")
    config = load_config(path, ["training.epochs=7", "model.hidden_units=[8, 4]", "data.split={type: temporal}"])
    assert config["training"]["epochs"] == 7 and config["model"]["hidden_units"] == [8, 4]
    assert config["training"]["batch_size"] == 1024  # default kept
    assert config["data"]["split"] == {"type": "temporal"}


@pytest.mark.parametrize("override, message", [
    ("training.epoch=3", "unknown key 'training.epoch'"),
    ("training.epochs=0", "training.epochs must be a positive integer"),
    ("model.encoder_mode=half", "encoder_mode"),
    ("training.early_stopping_metric=recall@20", "recall@K or ndcg@K with K in"),
    ("training.epochs", "expected key=value"),
])
def test_config_errors_name_the_key(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text("data: {format: movielens_100k}\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(path, [override])


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
    table = ev.format_table("test", {**ev.summarize(rank, [10]), "baselines": {"popularity": ev.summarize(rank, [10])}}, [10])
    assert "recall@10" in table and "popularity" in table


def test_mostly_chinese_counts_letters_not_digits_or_punctuation():
    assert ev.mostly_chinese("轻便双人帐篷，防水 2人")
    assert ev.mostly_chinese("Nike 跑步鞋 男款")          # 5 ideographs of 9 letters
    assert not ev.mostly_chinese("Lightweight camping tent 帐篷")
    assert not ev.mostly_chinese("") and not ev.mostly_chinese("12345, !?")
