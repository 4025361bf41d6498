"""Served = evaluated: an export's answers against the model ``twotower evaluate`` scored, on the run's test cases.

Why it exists: every figure the project reports comes from ``evaluate`` (the Python towers ranking the full
catalogue); a user gets the SavedModel's ``serving_default``. The two are built by different code (export
precomputes item vectors, looks histories up in the served catalogue, searches an index), so a figure is only
worth reporting if they agree: the same top-K ids in the same order, and ``embed_query`` the same vectors. The
tests check it in a fresh process for every tower configuration; bench/quality.py checks the model it reports.

Three rankings are compared: ``recommend_including_history`` with evaluate's own exclusions (every earlier item
of the user but the target) as ``exclude``, which is exactly the candidate set ``evaluate`` ranks, plain
``serving_default``, which excludes the request's history in the graph, and ``recommend_including_history`` with
nothing excluded, which is evaluate's ``history_kept`` protocol. The repeat offset (towers/repeat.py) is in the
expected scores of the history's items: both ``recommend_including_history`` requests add it (in the first, only a
repeated target is a history item left to rank; evaluate's history-excluded block scores that one without it, as
``serving_default`` never reaches the offset). Search requests (a few catalogue titles as
``search_query``, nothing else) are compared as vectors: ``embed_query`` against the search path the search-query
evaluation scores (training/search_queries.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

SCORE_TOLERANCE = 1e-5   # float32 scores of the same vectors computed by two graphs


def padded(rows: Sequence[Sequence[str]]) -> list[list[str]]:
    """Ragged string rows → a rectangle padded with "" (at least one column)."""
    width = max([len(r) for r in rows] + [1])
    return [list(r) + [""] * (width - len(r)) for r in rows]


@dataclasses.dataclass
class Evaluated:
    """What ``evaluate`` computes for a sample of a run's test cases."""

    user_id: list[str]
    history: list[list[str]]
    exclude: list[list[str]]
    item_ids: list[str]
    user_vectors: np.ndarray   # [N, D]
    scores: np.ndarray         # [N, items]: the evaluated model's score of every catalogue item, as `score`
                               # gives it (the repeat offset on the history's items: towers/repeat.py)
    search_text: list[str]     # search-box requests (nothing else given) ...
    search_vectors: np.ndarray  # ... and their evaluated query vectors [S, D]

    def requests(self) -> dict:
        """The sample as served requests: {name: {"signature": ..., "inputs": {...}}}."""
        query = {"user_id": self.user_id, "history": self.history, "user_text": [""] * len(self.user_id)}
        none = [""] * len(self.search_text)
        search = {"user_id": none, "history": [[""]] * len(none), "user_text": none, "search_query": self.search_text}
        return {"query": {"signature": "embed_query", "inputs": query},
                "search": {"signature": "embed_query", "inputs": search},
                "evaluated": {"signature": "recommend_including_history",
                              "inputs": {**query, "exclude": padded(self.exclude)}},
                "kept": {"signature": "recommend_including_history", "inputs": query},
                "served": {"signature": "serving_default", "inputs": query}}

    def ranking(self, excluded: Sequence[Sequence[str]], k: int) -> tuple[list[list[str]], np.ndarray]:
        """The evaluated model's top-k ids and scores with ``excluded`` ids removed per case."""
        index = {item: row for row, item in enumerate(self.item_ids)}
        scores = self.scores.copy()
        for row, ids in enumerate(excluded):
            scores[row, [index[i] for i in ids if i in index]] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[self.item_ids[j] for j in r] for r in order], np.take_along_axis(scores, order, axis=1)


def evaluated(run_dir: str | Path, cases: int = 40, seed: int = 0, searches: int = 8) -> Evaluated:
    """A seeded sample of the run's test cases, scored by the model ``evaluate`` rebuilds (training.trainer), and
    the titles of ``searches`` seeded catalogue items as search requests."""
    import tensorflow as tf

    from training import evaluate as ev
    from training import search_queries as sq
    from training.run import RunDir
    from training.trainer import evaluated_model, evaluation_split

    config, prepared, model = evaluated_model(RunDir(str(run_dir)))
    split = evaluation_split(config, prepared, "test")
    pick = np.zeros(len(split), bool)
    pick[np.random.default_rng(seed).permutation(len(split))[:cases]] = True
    sample = split.subset(pick)
    item_ids = prepared.artifacts.catalog["item_id"].tolist()
    users, history = sample.user_id.astype(str).tolist(), sample.history.astype(str).tolist()
    vectors = model.embed_users(tf.constant(users), tf.constant(history)).numpy()
    scores = np.asarray(ev.model_scorer(model, item_ids)(sample), np.float64)
    ev.add_repeat_offset(scores, sample, {item: row for row, item in enumerate(item_ids)},
                         model.user_tower.repeat.value())
    texts = sq.seeded_titles(prepared.artifacts.catalog, searches, seed)
    features = sq.request_features(model, config, texts, sq.text_vectors(texts, config, prepared), search=True)
    searched = sq.request_vectors(model, features)
    return Evaluated(users, history, [list(map(str, e)) for e in sample.exclude], item_ids, vectors,
                     scores, texts, searched)


def differences(expected: Evaluated, outputs: dict, k: int) -> list[str]:
    """Where the served outputs ({"request/output": array}, for ``expected.requests()``) differ from the
    evaluated model; empty when they agree.

    Items whose evaluated scores differ by less than float noise may come in either order (two graphs can
    round differently); every other position must hold the same id, and the served ids' evaluated scores must
    be the evaluated top-k scores.
    """
    found = []
    gap = float(np.abs(outputs["query/embedding"] - expected.user_vectors).max())
    if gap > SCORE_TOLERANCE:
        found.append(f"embed_query differs from the evaluated user vectors by up to {gap:.2e}")
    gap = float(np.abs(outputs["search/embedding"] - expected.search_vectors).max())
    if gap > SCORE_TOLERANCE:
        found.append(f"embed_query with search_query differs from the evaluated search requests by up to {gap:.2e}")
    index = {item: row for row, item in enumerate(expected.item_ids)}
    for name, excluded in (("evaluated", expected.exclude), ("served", expected.history),
                           ("kept", [[]] * len(expected.user_id))):
        want, want_scores = expected.ranking(excluded, k)
        for case, (row, w, ws) in enumerate(zip(outputs[f"{name}/item_ids"], want, want_scores)):
            got = [i.decode() if isinstance(i, bytes) else str(i) for i in row]
            live = int(np.isfinite(ws).sum())          # fewer than k candidates left: the rest is padding
            where = f"{name} case {case} (user {expected.user_id[case]!r})"
            if not all(got[:live]) or any(i not in index for i in got[:live]):
                found.append(f"{where}: returned {got[:live]}, expected {w[:live]}")
                continue
            got_scores = expected.scores[case, [index[i] for i in got[:live]]]
            # another id may stand where the evaluated one ties it: within the top k, or the k-th with the next
            near_tie = np.abs(got_scores - ws[:live]) < SCORE_TOLERANCE
            if not np.allclose(got_scores, ws[:live], atol=SCORE_TOLERANCE) or \
                    any(g != e and not t for g, e, t in zip(got, w, near_tie)):
                found.append(f"{where}: returned {got[:live]}, expected {w[:live]}")
                continue
            served = outputs[f"{name}/scores"][case][:live]
            if not np.allclose(served, ws[:live], atol=SCORE_TOLERANCE):
                found.append(f"{where}: served scores {served.tolist()} differ from {ws[:live].tolist()}")
    return found


def in_process(version: str | Path) -> Callable[[dict], dict]:
    """Runs ``Evaluated.requests()`` against a version loaded in this process (omitted optional inputs filled
    from the SignatureDef's defaults, as TF Serving does)."""
    from export.loaded import LoadedVersion

    loaded = LoadedVersion(version)

    def run(requests: dict) -> dict:
        outputs = {}
        for name, request in requests.items():
            answer = loaded(request["signature"], **request["inputs"])
            outputs.update({f"{name}/{key}": value for key, value in answer.items()})
        return outputs

    return run
