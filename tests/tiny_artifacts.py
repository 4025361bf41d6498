"""The loss tests' tiny world as training artifacts: a 12-item catalogue and four known users.

Why it exists: tests/test_model_loss.py and the multi-worker probe (tests/multiworker_probe.py, run in worker
processes by tests/test_cross_replica.py) build the same small model on it.
"""

import numpy as np
import pandas as pd

from training.artifacts import Artifacts

ITEMS = [f"i{n}" for n in range(12)]


def artifacts(counts: np.ndarray | None = None) -> Artifacts:
    """A 12-item catalogue (i0 very popular unless ``counts`` says otherwise) and four known users, with random
    text vectors."""
    rng = np.random.default_rng(0)
    catalog = pd.DataFrame({"item_id": ITEMS, "title": ITEMS, "description": "", "text": ITEMS,
                            "category": ["a", "b"] * 6, "brand": "", "price": np.linspace(1, 12, 12)})
    counts = np.array([50.0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]) if counts is None else counts  # i0 is very popular
    return Artifacts(catalog=catalog, users=pd.DataFrame({"user_id": ["u0"], "text": ["x"]}),
                     train_item_ids=ITEMS, train_user_ids=["u0", "u1", "u2", "u3"], item_counts=counts,
                     price_stats=(1.0, 1.0), encoder={"dim": 6},
                     item_text_vectors=rng.normal(size=(12, 6)).astype(np.float32),
                     user_text_vectors=rng.normal(size=(1, 6)).astype(np.float32))
