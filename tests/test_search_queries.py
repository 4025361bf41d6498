"""The search-query evaluation: the generator's ground truth (search_queries.csv) and the text-only block that
`twotower evaluate` reports from it (training/search_queries.py)."""

import json
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ingest.formats.generated import SEARCH_QUERIES, read_search_queries
from ingest.generate import CATEGORIES, generate_world
from training import search_queries as sq


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("sq") / "world"
    generate_world(out, users=150, items=160, seed=11, progress=False)
    return out


def _mentions(title: str, noun: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(noun.lower())}(?![\w-])", title.lower()) is not None


def test_ground_truth_is_the_queried_product_type(small_world):
    items = pd.read_csv(small_world / "items.csv", dtype=str, keep_default_na=False).set_index("item_id")
    users = pd.read_csv(small_world / "users.csv", dtype=str, keep_default_na=False)
    truth = read_search_queries(small_world)
    # every query of users.csv, in order, and nothing else
    assert truth["query"].tolist() == [q for text in users["search_queries"] for q in text.split(" | ")]
    assert set(truth["user_id"]) <= set(users["user_id"])
    nouns = {(c.name, en): zh for c in CATEGORIES for en, zh in c.nouns}
    assert any(truth["relevant"].map(len) > 1)
    for row in truth.itertuples():
        zh = nouns[(row.category, row.noun)]
        assert row.noun.lower() in row.query or zh in row.query, row
        # sound: each relevant item is of the query's category and names its noun
        for item in row.relevant:
            assert items.loc[item, "category"] == row.category, (row.query, item)
            title = items.loc[item, "title"]
            assert _mentions(title, row.noun) or zh in title, (row.query, title)
        # complete: no other item of the category names the noun in its (English) title
        same = items[(items["category"] == row.category) & ~items["title"].str.contains(r"[\u4e00-\u9fff]")]
        named = {i for i, t in same["title"].items() if _mentions(t, row.noun)}
        assert named <= set(row.relevant), (row.query, named - set(row.relevant))


def test_ground_truth_file_errors_name_the_file(tmp_path):
    assert read_search_queries(tmp_path) is None            # an older world: no file, no block
    (tmp_path / SEARCH_QUERIES).write_text("user_id,query\nU1,tent\n", encoding="utf-8")
    with pytest.raises(Exception, match=rf"{SEARCH_QUERIES}.*lacks column\(s\) category"):
        read_search_queries(tmp_path)


def _cases(relevant: np.ndarray, texts=None) -> sq.QueryCases:
    q = len(relevant)
    return sq.QueryCases(text=texts or ["q"] * q, user_id=np.array(["U"] * q), relevant=relevant,
                         new_user=np.zeros(q, bool), chinese=np.zeros(q, bool))


def test_a_ranking_by_the_ground_truth_scores_one():
    rng = np.random.default_rng(0)
    relevant = rng.random((40, 300)) < 0.05
    relevant[:, 0] = True
    cases = _cases(relevant)
    block = sq.score(lambda rows: relevant[rows].astype(float), cases, batch_size=16)
    assert block == {"precision@10": 1.0, "recall@50": 1.0, "queries": 40}
    reverse = sq.score(lambda rows: -relevant[rows].astype(float), cases)
    assert reverse["precision@10"] == 0.0


def test_popularity_on_a_hand_made_catalogue():
    counts = np.arange(12, 0, -1, dtype=float)          # row 0 most popular ... row 11 least
    relevant = np.zeros((2, 12), bool)
    relevant[0, :3] = True                               # the three most popular items: all in the top 10
    relevant[1, 10:] = True                              # the two least popular: outside the top 10
    block = sq.score(sq.popularity_scorer(counts), _cases(relevant))
    assert block["precision@10"] == pytest.approx(0.5)  # (3/3 + 0/2) / 2: out of min(10, relevant items)
    assert block["recall@50"] == pytest.approx(1.0)      # 12 items: everything is in the top 50


def test_ties_are_broken_at_random_not_in_catalogue_order():
    relevant = np.zeros((50, 200), bool)
    relevant[:, :10] = True                              # the first rows: a stable sort would rank them first
    block = sq.score(sq.popularity_scorer(np.ones(200)), _cases(relevant))
    assert block["precision@10"] < 0.3


def test_query_cases_keep_the_given_users_and_known_items():
    table = pd.DataFrame({"user_id": ["U1", "U1", "U2", "U3"], "query": ["tent", "帐篷推荐", "mug", "kite"],
                          "relevant": [["A", "B"], ["A", "X"], ["C"], ["Y"]]})
    cases = sq.query_cases(table, ["A", "B", "C"], users=["U1", "U3"], new_users=["U3"])
    assert cases.text == ["tent", "帐篷推荐"]             # U2 not asked; U3's only item is not in the catalogue
    assert cases.relevant.tolist() == [[True, True, False], [True, False, False]]
    assert cases.chinese.tolist() == [False, True] and not cases.new_user.any()


def test_evaluate_reports_the_search_query_block(trained):
    run, result = trained
    block = json.loads((run / "metrics.json").read_text())["test"]["search_queries"]
    assert set(block["baselines"]) == {"text similarity (tiny)", "popularity"}
    for metrics in [block["two-tower"], *block["baselines"].values()]:
        assert metrics["queries"] == block["two-tower"]["queries"] > 0
    assert 0 < block["users"] <= block["two-tower"]["queries"]
    assert block["relevant_per_query"] >= 1.0
    # the block's scores are not popularity's in disguise: the towers read the query's words, and the words alone
    # (even through the tiny random-init encoder, whose vocabulary is the corpus') name the product type
    popularity = block["baselines"]["popularity"]["precision@10"]
    assert block["two-tower"]["precision@10"] != popularity
    assert block["baselines"]["text similarity (tiny)"]["precision@10"] > 2 * popularity
    assert "search queries, text only" in result.stdout


def test_served_answers_are_scored_by_their_ids():
    relevant = np.array([[True, True, False], [False, False, True]])
    answers = np.array([["A", "X", ""], ["C", "A", "B"]], object)   # X: not in the catalogue; "": padding
    block = sq.report_ids(answers, _cases(relevant), ["A", "B", "C"])
    assert block["precision@10"] == pytest.approx((1 / 2 + 1 / 1) / 2)
    assert block["recall@50"] == pytest.approx((1 / 2 + 1) / 2)


def test_hashed_user_ids_still_find_their_queries(small_world, monkeypatch):
    from ingest.privacy import HashKey, hash_column
    from training.examples import Examples

    truth = read_search_queries(small_world)
    users = truth["user_id"].unique()[:5]
    key = HashKey.from_salt("pepper")
    cases = Examples(hash_column(users, key), np.array([[""]] * 5, object), np.array(["I00000"] * 5, object),
                     np.ones(5, np.float32), new_user=np.zeros(5, bool))
    seen = {}

    def scorers(model, prepared, config, texts):   # the towers are not what this test is about
        seen["texts"] = texts
        return {"two-tower": sq.popularity_scorer(np.ones(160))}

    monkeypatch.setattr(sq, "scorers", scorers)
    catalog = pd.read_csv(small_world / "items.csv", dtype=str, keep_default_na=False)
    prepared = SimpleNamespace(artifacts=SimpleNamespace(catalog=catalog))
    config = {"data": {"format": "generated", "path": str(small_world), "hash_user_ids": True, "hash_salt": "pepper"}}
    block = sq.evaluate_split(None, prepared, cases, config)
    assert seen["texts"] == [q for q, r, u in zip(truth["query"], truth["relevant"], truth["user_id"])
                             if u in set(users) and r]
    assert block["users"] == 5


@pytest.mark.parametrize("values", ["few", "normal", "blocked"])
def test_top_rows_ranks_as_a_whole_sort_with_the_same_ties(values):
    """top_rows sorts only each row's best and the ties at its k-th; a whole sort of every row (score, then the
    same random draws) is the reference, on scores with many ties, none, and rows mostly -inf."""
    rng = np.random.default_rng(3)
    scores = {"few": rng.integers(0, 4, (40, 120)).astype(np.float32),
              "normal": rng.normal(size=(40, 120)),
              "blocked": np.where(rng.random((40, 120)) < 0.9, -np.inf, rng.integers(0, 3, (40, 120)))}[values]
    for k in (1, 7, 50, 120, 130):
        whole = np.lexsort((np.random.default_rng(5).random(scores.shape), -scores.astype(np.float64)),
                           axis=-1)[:, :k]
        np.testing.assert_array_equal(sq.top_rows(scores, k, np.random.default_rng(5)), whole)
