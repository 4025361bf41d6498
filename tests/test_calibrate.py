"""Fitting the semantic channel's weights on the validation split (training/calibrate.py): the decomposed score it
searches over is the model's own score, it picks the best weight of its grid per request kind, and a kind with too
few cases keeps its trained weight."""

import copy

import numpy as np
import pytest
import tensorflow as tf
from tiny_artifacts import ITEMS, artifacts

from towers.semantic_channel import KINDS
from training import calibrate as cal
from training import evaluate as ev
from training.config import DEFAULTS
from training.examples import Examples
from training.model import build_model


def _model():
    config = copy.deepcopy(DEFAULTS)
    config["model"].update(embedding_dim=8, hidden_units=[16], id_dim=4, categorical_dim=2, text_projection_dim=4,
                           semantic_channel=True)
    tf.keras.utils.set_random_seed(1)
    model = build_model(config, artifacts())
    model.create_weights()
    return model


def _cases(users: list[str], seed: int = 0) -> Examples:
    rng = np.random.default_rng(seed)
    history = np.array([["", *rng.choice(ITEMS, 2, replace=False)] for _ in users], dtype=object)
    target = np.array([rng.choice([i for i in ITEMS if i not in h]) for h in history], dtype=object)
    return Examples(np.array(users, dtype=object), history, target, np.ones(len(users), np.float32),
                    exclude=[h[h != ""] for h in history])


def test_curve_ranks_by_the_learned_score_plus_the_weighted_text_score():
    """Item 0 wins on the learned part, the target (item 1) on the words: recall@1 is 0 until the words' weight
    lifts the target above it; a history item is never ranked, whatever its score."""
    items_learned = np.array([[2.0], [1.0], [5.0]])
    items_text = np.array([[0.0], [1.0], [9.0]])
    cases = Examples(np.array(["u"], object), np.array([["i2"]], object), np.array(["i1"], object),
                     np.ones(1, np.float32), exclude=[np.array(["i2"], object)])
    index = {"i0": 0, "i1": 1, "i2": 2}
    values = cal.curve(np.array([[1.0]]), np.array([[1.0]]), items_learned, items_text, cases, index,
                       "recall@1", weights=(0.0, 0.5, 2.0))
    assert values == [0.0, 0.0, 1.0]    # 1 + 2 > 2 + 0 only at weight 2; i2 (history) excluded throughout


def test_curve_takes_a_history_targets_own_score_off_its_weighted_part():
    """The item-to-item channel's self-score (``own``) is taken off a history item's weighted part, once per time
    it is in the history, as evaluate does: a target the user had before (a re-view) loses it."""
    items_learned, items_text = np.array([[2.0], [1.0]]), np.array([[0.0], [1.0]])
    cases = Examples(np.array(["u"], object), np.array([["i1", "i1"]], object), np.array(["i1"], object),
                     np.ones(1, np.float32), exclude=[np.array([], object)])
    index = {"i0": 0, "i1": 1}
    ranked = [cal.curve(np.array([[1.0]]), np.array([[2.0]]), items_learned, items_text, cases, index, "recall@1",
                        weights=(2.0,), own=own)[0] for own in (None, np.array([0.0, 0.5]), np.array([0.0, 1.5]))]
    assert ranked == [1.0, 1.0, 0.0]    # 1 + 2·2 = 5 > 2; 1 + 2·(2 - 2·0.5) = 3 > 2; 1 + 2·(2 - 2·1.5) = -1 < 2


def test_calibrate_sets_each_kind_to_its_best_weight_and_that_is_the_models_own_ranking(monkeypatch):
    monkeypatch.setattr(cal, "MIN_CASES", 20)
    model = _model()
    semantic = model.user_tower.semantic
    trained = semantic.kind_weights().numpy().tolist()
    # u1-u3 have no text: history-only requests (60 cases); u0 has text and history: 5 "both" cases, too few
    cases = _cases(["u1", "u2", "u3"] * 20 + ["u0"] * 5)
    report = cal.calibrate(model, cases, ITEMS, "recall@3")
    kinds = report["kinds"]
    assert kinds["history_only"]["cases"] == 60 and kinds["both"]["cases"] == 5 and kinds["text_only"]["cases"] == 0
    curve = kinds["history_only"]["recall@3"]
    fitted = kinds["history_only"]["fitted"]
    assert curve[str(fitted)] == max(curve.values())
    assert len(set(curve.values())) > 1         # the weight matters on these cases, so the choice is a real one
    weights = semantic.kind_weights().numpy()
    assert weights[KINDS.index("history_only")] == pytest.approx(max(fitted, 1e-4), rel=1e-4)
    for kind in ("text_only", "both"):         # too few cases (or none): the trained weight stays
        assert weights[KINDS.index(kind)] == pytest.approx(trained[KINDS.index(kind)], rel=1e-5)
        assert kinds[kind]["fitted"] == pytest.approx(trained[KINDS.index(kind)], rel=1e-5)
    # the decomposed score the grid was searched on is the model's own: its ranking gives the recorded value
    history_only = cases.subset(np.array([u != "u0" for u in cases.user_id]))
    index = {item: row for row, item in enumerate(ITEMS)}
    ranks = ev.ranks(ev.model_scorer(model, ITEMS), history_only, index)
    assert float((ranks < 3).mean()) == pytest.approx(curve[str(fitted)], abs=1 / 60 + 1e-9)


def test_a_kind_below_the_minimum_is_reported_as_kept(monkeypatch):
    monkeypatch.setattr(cal, "MIN_CASES", 1000)
    model = _model()
    before = model.user_tower.semantic.kind_weights().numpy()
    report = cal.calibrate(model, _cases(["u1"] * 10), ITEMS, "ndcg@3")
    assert "kept" in report["kinds"]["history_only"] and "ndcg@3" not in report["kinds"]["history_only"]
    np.testing.assert_allclose(model.user_tower.semantic.kind_weights().numpy(), before, rtol=1e-6)


def _history_cases(rng: np.random.Generator, users: int, items: int, repeat_share: float) -> tuple[Examples, dict]:
    """Cases over ``items`` ids whose histories hold 1-4 items (a repeat now and then), a ``repeat_share`` of them
    with a history item as the target."""
    ids = [f"i{n}" for n in range(items)]
    history, target = [], []
    for _ in range(users):
        own = list(rng.choice(ids, rng.integers(1, 5)))
        own += [own[0]] if rng.random() < 0.3 else []
        history.append([""] * (6 - len(own)) + own)
        target.append(rng.choice(own) if rng.random() < repeat_share else rng.choice([i for i in ids if i not in own]))
    cases = Examples(np.array([f"u{n}" for n in range(users)], object), np.array(history, object),
                     np.array(target, object), np.ones(users, np.float32), exclude=[np.array([], object)] * users)
    return cases, {item: row for row, item in enumerate(ids)}


def test_repeat_ranks_are_the_kept_ranks_of_the_scores_with_the_offset_on_each_history_item_once():
    rng = np.random.default_rng(3)
    cases, index = _history_cases(rng, 60, 30, repeat_share=0.3)
    scores = rng.normal(size=(60, 30))
    offsets = (-2.0, -0.3, 0.0, 0.4, 3.0)
    ranks, repeats = cal._repeat_ranks(scores, cases, index, offsets)
    assert repeats == sum(t in set(h) for t, h in zip(cases.target, cases.history)) > 0
    plain, _ = ev.both_ranks(lambda part: scores[[int(u[1:]) for u in part.user_id]], cases, index)
    for offset, found in zip(offsets, ranks):
        excluded, kept = ev.both_ranks(lambda part: scores[[int(u[1:]) for u in part.user_id]], cases, index,
                                       repeat_offset=offset)
        np.testing.assert_array_equal(found, kept)   # continuous scores: no ties to break
        np.testing.assert_array_equal(excluded, plain)   # serving_default's protocol never reaches the offset
    assert len({tuple(r) for r in ranks}) == len(offsets)   # every offset moved some target


class _Scored:
    """A model stand-in for fit_repeat_offset: its scorer returns fixed scores (the repeat layer is the real one)."""

    def __init__(self, scores: np.ndarray):
        from towers.repeat import RepeatOffset
        self.scores, self.user_tower = scores, type("Tower", (), {"repeat": RepeatOffset(), "item_item": None})()


@pytest.mark.parametrize("repeat_share, sign", [(0.0, -1), (0.9, 1)])
def test_the_repeat_offset_fitted_lowers_history_items_where_nobody_repeats_and_lifts_them_where_most_do(
        monkeypatch, repeat_share, sign):
    """The scores rank history items high (as a query built from them does): where no target is a history item
    the fit pushes them down, where most are it lifts them; the model's scorer then ranks with it."""
    rng = np.random.default_rng(5)
    cases, index = _history_cases(rng, 300, 40, repeat_share)
    scores = rng.normal(size=(300, 40))
    rows, cols = zip(*[(r, index[i]) for r, h in enumerate(cases.history) for i in h if i])
    scores[rows, cols] += 1.0 if sign < 0 else -1.0   # the towers' habit (sign < 0) or the opposite
    model = _Scored(scores)
    monkeypatch.setattr(ev, "model_scorer", lambda model, ids, batch: (
        lambda part: model.scores[[int(u[1:]) for u in part.user_id]]))
    report = cal.fit_repeat_offset(model, cases, list(index), "recall@5", batch_size=128)
    grid = report["recall@5"]
    assert np.sign(report["fitted"]) == sign
    assert report["fitted"] == pytest.approx(model.user_tower.repeat.value(), abs=1e-5)
    assert grid[str(report["fitted_multiple"])] == max(grid.values()) > grid["0.0"]
    assert report["targets_in_history"] == sum(t in set(h) for t, h in zip(cases.target, cases.history))


def test_the_repeat_offset_stays_0_with_too_few_cases():
    cases, index = _history_cases(np.random.default_rng(0), cal.MIN_CASES - 1, 10, 0.0)
    model = _Scored(np.zeros((len(cases), 10)))
    model.user_tower.repeat.set_offset(3.0)
    report = cal.fit_repeat_offset(model, cases, list(index), "recall@5")
    assert report["fitted"] == 0.0 and model.user_tower.repeat.value() == 0.0 and "kept" in report


def test_tied_offsets_give_the_middle_of_the_plateau(monkeypatch):
    """Where every history item is far above the targets' scores, any offset from -4 spreads down puts them all
    below: the tie goes to the middle of the tied offsets (by distance from 0), not to the plateau's edge."""
    cases, index = _history_cases(np.random.default_rng(2), 300, 40, 0.0)
    scores = np.random.default_rng(3).normal(size=(300, 40)) * 0.01
    rows, cols = zip(*[(r, index[i]) for r, h in enumerate(cases.history) for i in h if i])
    scores[rows, cols] += 0.025     # above every other item; the spread is ~0.01
    model = _Scored(scores)
    monkeypatch.setattr(ev, "model_scorer", lambda model, ids, batch: (
        lambda part: model.scores[[int(u[1:]) for u in part.user_id]]))
    report = cal.fit_repeat_offset(model, cases, list(index), "recall@5", batch_size=128)
    grid = report["recall@5"]
    tied = sorted((float(m) for m, v in grid.items() if v == max(grid.values())), key=abs)
    assert len(tied) >= 3 and report["fitted_multiple"] == tied[(len(tied) - 1) // 2] != tied[0]
