"""Shared by the benchmarks: an exported version asked in-process, as TF Serving would run it, and the metrics of
its answers on evaluation cases.

Why it exists: the cold-start and diversity benchmarks measure the served graph itself (index, filters,
diversity, explanations), not the in-memory towers; asking it the same way (omitted optional inputs filled from
the SignatureDef's defaults) and scoring the answers the same way belongs in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


class ServedModel:
    """One signature (``serving_default``) of a version directory (``export.loaded``), called on numpy batches."""

    def __init__(self, version: Path, signature: str = "serving_default"):
        from export.loaded import LoadedVersion

        self.version = Path(version)
        self.model = LoadedVersion(version)
        self.signature = signature

    def __call__(self, batch_size: int = 256, **inputs) -> dict[str, np.ndarray]:
        """Runs the inputs (each with the same number of rows, or one row for all) in batches; outputs as numpy,
        strings decoded."""
        rows = max(len(v) for v in inputs.values())
        parts = []
        for start in range(0, rows, batch_size):
            parts.append(self.model(self.signature, **{k: (v if len(v) == 1 else v[start:start + batch_size])
                                                       for k, v in inputs.items()}))
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return {k: (np.vectorize(lambda b: b.decode("utf-8"))(v) if v.dtype == object else v)
                for k, v in merged.items()}


def padded(rows: Sequence[Sequence[str]]) -> np.ndarray:
    """Lists of ids → a [B, max length] string array, "" at the front (as the served model reads a history)."""
    width = max(1, max((len(r) for r in rows), default=1))
    return np.array([[""] * (width - len(r)) + list(r) for r in rows], dtype=object)


def recall(ranked: np.ndarray, targets: Sequence[str], k: int) -> float:
    """Share of cases whose target is in their top ``k``."""
    return float(np.mean([t in row[:k] for row, t in zip(ranked, targets)])) if len(targets) else float("nan")


def popularity_recall(counts: dict[str, float], targets: Sequence[str], exclude: Sequence[Sequence[str]],
                      k: int) -> float:
    """Recall@k of the most-interacted items, each user's excluded items left out."""
    order = [item for item, _ in sorted(counts.items(), key=lambda kv: -kv[1])]
    hits = []
    for target, seen in zip(targets, exclude):
        seen = set(seen)
        top = [item for item in order[:k + len(seen)] if item not in seen][:k]
        hits.append(target in top)
    return float(np.mean(hits)) if hits else float("nan")
