"""bench/world_ceiling.py: the generator's own ranking of a small world's test cases is a ceiling a popularity
ranking stays well under, and its expected recall agrees with the recall it reads on the real targets."""

from __future__ import annotations

import pytest

from bench.world_ceiling import ceiling_ranks, summarize
from ingest.generate import generate_world
from training.config import load_config
from training.evaluate import popularity_scorer, ranks
from training.examples import evaluation_cases
from training.prepare import load_split


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    world = tmp_path_factory.mktemp("ceiling-world")
    generate_world(world, users=600, items=300, seed=3, progress=False)
    return load_config("configs/default.yaml", [f"data.path={world}"])


def test_the_ceiling_is_far_above_popularity_and_reads_what_it_expects(config):
    (rank, blind), masks = ceiling_ranks(config, [frozenset(), frozenset({"style"})])
    ceiling = summarize(rank, masks)
    assert set(ceiling) == {"all", "cold items", "new users", "Chinese", "cross-lingual"}
    assert ceiling["all"]["cases"] == len(rank["rank"]) > 200
    assert ceiling["Chinese"]["cases"] > 0 and ceiling["new users"]["cases"] > 0

    dataset, labels = load_split(config)
    cases, _ = evaluation_cases(dataset.interactions, labels, "test", config["model"]["history_len"], False)
    train = dataset.interactions[labels.to_numpy() == "train"]
    catalog = dataset.items["item_id"].tolist()
    counts = train["item_id"].value_counts().reindex(catalog, fill_value=0).to_numpy()
    popular = ranks(popularity_scorer(counts), cases, {item: i for i, item in enumerate(catalog)})
    assert len(popular) == len(rank["rank"])                   # the same cases
    assert ceiling["all"]["recall@10"] > 1.5 * float((popular < 10).mean())
    # the expected recall is a mean of probabilities; the realised one a mean of hits on the same cases
    assert abs(ceiling["all"]["expected_recall@10"] - ceiling["all"]["recall@10"]) < 0.08
    # a ranking blind to the users' styles expects less of the same truth
    assert summarize(blind, masks)["all"]["expected_recall@10"] < ceiling["all"]["expected_recall@10"] - 0.02
