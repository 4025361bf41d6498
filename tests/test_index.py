"""The ScaNN tuner (export/index.py): the configuration it ships reaches the recall target and is the fastest of
those it measured, for catalogues with and without a tree."""

from __future__ import annotations

import numpy as np
import pytest

from export.index import (
    NO_TREE_MAX_ITEMS,
    exact_top_k,
    recall_against_exact,
    reorder_pools,
    scann_candidates,
    search_positions,
    tune_scann,
)


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Vectors around 20 centres, as trained item vectors cluster by category."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    return (centres[rng.integers(0, 20, n)] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)


def test_reorder_pools_grow_from_one_and_a_half_k_and_stay_within_the_catalogue():
    assert reorder_pools(1500, 120) == [180, 240, 480, 960, 1500]
    assert reorder_pools(50, 10) == [15, 20, 50]
    assert all(10 <= pool <= 12 for pool in reorder_pools(12, 10))


def test_candidates_put_no_tree_first_below_scanns_advice_and_leave_it_out_above():
    small = scann_candidates(1500, 120)
    assert small[0]["num_leaves"] == 0 and small[0]["leaves_to_search"] == 0
    assert {c["dims_per_block"] for c in small if not c["num_leaves"]} == {2, 4}
    assert {c["dims_per_block"] for c in small if c["num_leaves"]} == {2}
    trees = [c for c in small if c["num_leaves"]]
    assert trees and {c["num_leaves"] for c in trees} == {39}
    searched = [c["leaves_to_search"] for c in trees]
    assert searched == sorted(searched) and searched[-1] == 39
    assert all(c["num_leaves"] for c in scann_candidates(NO_TREE_MAX_ITEMS, 120))


@pytest.mark.parametrize("n", [1200, 3000])
def test_tuned_index_reaches_the_target_and_is_the_fastest_it_measured(n):
    items, queries = clustered(n, 96, seed=n), clustered(300, 96, seed=n + 1)
    config, recall, tried, index = tune_scann(items, queries, 40, target=0.95)
    assert recall >= 0.95
    # the shipped index answers at the recall measured, searched with the chosen reordering pool
    assert int(index.reorder.numpy()) == config["reorder"]
    exact = exact_top_k(queries, items, 40)
    assert recall_against_exact(search_positions(index, queries, 40), exact) == pytest.approx(recall)
    timed = [entry for entry in tried if "latency_us" in entry]
    assert timed and all(entry["recall"] >= 0.95 for entry in timed)
    chosen = [entry for entry in timed if {k: entry[k] for k in config} == config]
    assert chosen and chosen[0]["latency_us"] == min(entry["latency_us"] for entry in timed)
    # every family tried stops at its first pool that reaches the target: none timed twice
    families = [(entry["num_leaves"], entry["leaves_to_search"], entry["dims_per_block"]) for entry in timed]
    assert len(families) == len(set(families))
    assert (0, 0) in {family[:2] for family in families}   # below ScaNN's 100k items, no tree competes


def test_a_caller_can_restrict_the_tuner_to_tree_configurations():
    items, queries = clustered(2000, 32, seed=3), clustered(200, 32, seed=4)
    trees = [c for c in scann_candidates(len(items), 20) if c["num_leaves"]]
    config, recall, tried, _ = tune_scann(items, queries, 20, target=0.9, candidates=trees)
    assert config["num_leaves"] and recall >= 0.9
    assert all(entry["num_leaves"] for entry in tried)


def test_an_unreachable_target_ships_the_best_configuration_it_measured():
    items, queries = clustered(600, 32, seed=5), clustered(100, 32, seed=6)
    trees = [c for c in scann_candidates(len(items), 20) if c["num_leaves"]][:8]   # two families, few leaves
    config, recall, tried, index = tune_scann(items, queries, 20, target=1.01, candidates=trees)
    assert len(tried) == 2   # each family's widest pool only: it misses, so the smaller ones are not tried
    assert recall == max(entry["recall"] for entry in tried) < 1.01
    assert not any("latency_us" in entry for entry in tried)
    assert int(index.reorder.numpy()) == config["reorder"]
    exact = exact_top_k(queries, items, 20)
    assert recall_against_exact(search_positions(index, queries, 20), exact) == pytest.approx(recall)
