"""The served-equals-evaluated check (export/parity.py): ids that tie in the evaluated scores may swap, also across
the k-th place; any other difference is reported."""

import numpy as np

from export.parity import Evaluated, differences


def _outputs(expected: Evaluated, ids: list[str], scores: list[float]) -> dict:
    row = np.array([ids], object)
    return {"query/embedding": expected.user_vectors, "search/embedding": expected.search_vectors,
            **{f"{name}/item_ids": row for name in ("evaluated", "served", "kept")},
            **{f"{name}/scores": np.array([scores]) for name in ("evaluated", "served", "kept")}}


EXPECTED = Evaluated(user_id=["u"], history=[[]], exclude=[[]], item_ids=["a", "b", "c", "d"],
                     user_vectors=np.zeros((1, 2), np.float32),
                     scores=np.array([[0.9, 0.5, 0.5, 0.1]]),   # b and c tie; the top 2 is a, then b or c
                     search_text=["tent"], search_vectors=np.ones((1, 2), np.float32))


def test_a_tie_at_the_kth_place_may_go_either_way():
    assert differences(EXPECTED, _outputs(EXPECTED, ["a", "b"], [0.9, 0.5]), k=2) == []
    assert differences(EXPECTED, _outputs(EXPECTED, ["a", "c"], [0.9, 0.5]), k=2) == []


def test_an_item_that_does_not_tie_is_reported():
    found = differences(EXPECTED, _outputs(EXPECTED, ["a", "d"], [0.9, 0.1]), k=2)
    assert len(found) == 3 and "returned ['a', 'd'], expected ['a', 'b']" in found[0]
    assert [f.split(" case")[0] for f in found] == ["evaluated", "served", "kept"]
    found = differences(EXPECTED, _outputs(EXPECTED, ["b", "a"], [0.5, 0.9]), k=2)
    assert len(found) == 3


def test_a_search_request_whose_vector_differs_is_reported():
    outputs = _outputs(EXPECTED, ["a", "b"], [0.9, 0.5])
    outputs["search/embedding"] = EXPECTED.search_vectors + 1e-3
    assert differences(EXPECTED, outputs, k=2) == [
        "embed_query with search_query differs from the evaluated search requests by up to 1.00e-03"]
