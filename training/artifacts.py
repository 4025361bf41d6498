"""What a run derives from its data once and every later stage reuses: catalogue, user texts, vocabularies,
frequencies, cached text vectors.

Why it exists: evaluation and export must rebuild exactly the towers that were trained (same vocabularies, same
catalogue rows, same text vectors) without re-reading or re-encoding the data. Training writes these to
RUN/artifacts/ atomically; everything else loads them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ingest.schema import Dataset
from towers.item_tower import price_statistics
from towers.text_fields import join_columns
from twotower.layout import rename_new, temporary_sibling, write_atomic

# RUN/artifacts/: the file names, once.
CATALOG = "catalog.parquet"
USERS = "users.parquet"
ITEM_COUNTS = "item_counts.npy"
VOCAB = "vocab.json"             # vocabularies, price statistics, encoder, user-id hash; written last
TEXT_VECTORS = ("item_text_vectors", "user_text_vectors")   # frozen mode: NAME.npy
ITEM_ITEM_VECTORS = "item_item_vectors"   # model.item_item_rank: NAME.npy
TEXT_CENTERING = "text_centering"   # model.text_centering: NAME.npy
VECTORS = (*TEXT_VECTORS, ITEM_ITEM_VECTORS, TEXT_CENTERING)
DATA_FILES = (CATALOG, USERS, VOCAB, ITEM_COUNTS)   # what the run derived from its data (its fingerprint)
SAMPLE_QUERIES = "sample_queries.json"   # test users and histories: export tunes and measures its index on them
SAMPLE_QUERIES_LIMIT = 5000


@dataclasses.dataclass
class Artifacts:
    catalog: pd.DataFrame            # item_id, title, description, text, category, brand, price (every item)
    users: pd.DataFrame              # user_id, text (every user in the users file; text may be "")
    train_item_ids: list[str]        # item-id vocabulary (seen in training interactions)
    train_user_ids: list[str]        # user-id vocabulary
    item_counts: np.ndarray          # training interactions per catalogue row (logQ, popularity)
    price_stats: tuple[float, float]
    encoder: dict                    # {"name", "directory", "fingerprint", "dim"}
    item_text_vectors: np.ndarray | None = None  # frozen mode: [len(catalog), dim]
    user_text_vectors: np.ndarray | None = None  # frozen mode: [len(users), dim]
    user_id_hash: str | None = None  # fingerprint of the key user ids were hashed with (data.hash_user_ids)
    item_item_vectors: np.ndarray | None = None  # model.item_item_rank: [len(catalog), rank] (towers/item_item.py)
    text_centering: np.ndarray | None = None     # model.text_centering: [2, dim] script means (script_centering.py)

    @property
    def categories(self) -> list[str]:
        return sorted(set(self.catalog["category"]) - {""})

    @property
    def brands(self) -> list[str]:
        return sorted(set(self.catalog["brand"]) - {""})


def derive(dataset: Dataset, labels: pd.Series, item_text_columns: list[str],
           user_text_columns: list[str]) -> Artifacts:
    """Catalogue, users and vocabularies of a dataset under a split (text vectors and encoder come later)."""
    catalog, users = tables(dataset.items, dataset.users, item_text_columns, user_text_columns)
    train = dataset.interactions[labels.to_numpy() == "train"]
    counts = train["item_id"].value_counts()
    item_counts = catalog["item_id"].map(counts).fillna(0).to_numpy(np.float64)
    return Artifacts(catalog=catalog, users=users,
                     train_item_ids=sorted(counts.index.astype(str)),
                     train_user_ids=sorted(train["user_id"].astype(str).unique()),
                     item_counts=item_counts, price_stats=price_statistics(catalog["price"].to_numpy()),
                     encoder={}, user_id_hash=dataset.user_id_hash)


def tables(items: pd.DataFrame, user_rows: pd.DataFrame | None, item_text_columns: list[str],
           user_text_columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The catalogue (every item, its joined text) and the users (every user, its joined text)."""
    missing = [c for c in item_text_columns if c not in items.columns]
    if missing:
        from ingest.schema import DataError
        raise DataError(f"data.item_text_columns names column(s) the items lack: {', '.join(missing)} "
                        f"(items have: {', '.join(items.columns)})")
    catalog = pd.DataFrame({
        "item_id": items["item_id"].astype(str).to_numpy(),
        "title": items["title"].astype(str).to_numpy(),
        "description": items["description"].astype(str).to_numpy(),
        "text": join_columns([items[c].astype(str).tolist() for c in item_text_columns]),
        "category": items["category"].astype(str).to_numpy(),
        "brand": items["brand"].astype(str).to_numpy(),
        "price": pd.to_numeric(items["price"], errors="coerce").astype(float).to_numpy(),
    })
    if user_rows is not None:
        present = [c for c in user_text_columns if c in user_rows.columns]
        texts = join_columns([user_rows[c].astype(str).tolist() for c in present]) if present \
            else [""] * len(user_rows)
        users = pd.DataFrame({"user_id": user_rows["user_id"].astype(str).to_numpy(), "text": texts})
    else:
        users = pd.DataFrame({"user_id": pd.Series([], dtype=str), "text": pd.Series([], dtype=str)})
    return catalog, users


def save(artifacts: Artifacts, directory: Path) -> None:
    """Writes to a temporary sibling with a unique name and renames it into place, so a killed run leaves the old
    artifacts or the new ones (never a part), and two writers never share a temporary directory (the last one's
    tables win, whole)."""
    tmp = temporary_sibling(directory)
    tmp.mkdir(parents=True)   # with the umask's mode, as the directory it replaces
    try:
        artifacts.catalog.to_parquet(tmp / CATALOG, index=False)
        artifacts.users.to_parquet(tmp / USERS, index=False)
        np.save(tmp / ITEM_COUNTS, artifacts.item_counts)
        for name in VECTORS:
            value = getattr(artifacts, name)
            if value is not None:
                np.save(tmp / f"{name}.npy", value)
        meta = {"train_item_ids": artifacts.train_item_ids, "train_user_ids": artifacts.train_user_ids,
                "price_stats": list(artifacts.price_stats), "encoder": artifacts.encoder,
                "user_id_hash": artifacts.user_id_hash}
        (tmp / VOCAB).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        _swap_in(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(new: Path, directory: Path) -> None:
    """Renames ``new`` to ``directory``. A rename cannot replace a non-empty directory, so the one there is moved
    aside (to a unique hidden name, removed after); another writer may swap its own in meanwhile: try again."""
    while True:
        try:
            rename_new(new, directory)
            return
        except FileExistsError:
            pass
        aside = temporary_sibling(directory, "old")
        with contextlib.suppress(FileNotFoundError):   # another writer moved it first
            os.replace(directory, aside)
            shutil.rmtree(aside, ignore_errors=True)


def save_sample_queries(directory: Path, user_ids: np.ndarray, history: np.ndarray,
                        limit: int = SAMPLE_QUERIES_LIMIT, seed: int = 0) -> None:
    """Keeps up to ``limit`` evaluation cases (a seeded sample, in case order) as the run's sample queries:
    export embeds them with the trained towers to tune ScaNN and measure its recall, without the raw data."""
    keep = np.sort(np.random.default_rng(seed).permutation(len(user_ids))[:limit])
    sample = {"user_id": [str(user_ids[i]) for i in keep], "history": [[str(h) for h in history[i]] for i in keep]}
    write_atomic(directory / SAMPLE_QUERIES, json.dumps(sample, ensure_ascii=False))


def load_sample_queries(directory: Path) -> tuple[list[str], list[list[str]]] | None:
    """The run's sample queries (user ids, histories); None for a run trained before they were kept."""
    path = directory / SAMPLE_QUERIES
    if not path.exists():
        return None
    sample = json.loads(path.read_text(encoding="utf-8"))
    return sample["user_id"], sample["history"]


def saved(directory: Path) -> bool:
    """Whether ``directory`` holds saved artifacts (``save`` completed there)."""
    return (directory / VOCAB).exists()


def load(directory: Path) -> Artifacts:
    meta = json.loads((directory / VOCAB).read_text(encoding="utf-8"))
    vectors = {name: np.load(directory / f"{name}.npy") if (directory / f"{name}.npy").exists() else None
               for name in VECTORS}
    catalog = pd.read_parquet(directory / CATALOG)
    users = pd.read_parquet(directory / USERS)
    return Artifacts(catalog=catalog, users=users, train_item_ids=meta["train_item_ids"],
                     train_user_ids=meta["train_user_ids"], item_counts=np.load(directory / ITEM_COUNTS),
                     price_stats=tuple(meta["price_stats"]), encoder=meta["encoder"],
                     user_id_hash=meta.get("user_id_hash"), **vectors)
