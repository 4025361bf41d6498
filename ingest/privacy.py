"""Salted hashing of user ids at ingestion (``data.hash_user_ids: true``).

Why it exists: a shop's user ids are often e-mail addresses or account numbers. With hashing on, every user id
is replaced by a keyed hash the moment a dataset is loaded, so the run's vocabularies, its logs, its checkpoints
and the exported SavedModel only ever hold hashes. The key comes from a secret salt (``data.hash_salt``, or the
environment variable ``TWOTOWER_HASH_SALT`` when that is null) through SHA-256, so the salt itself is never
stored anywhere; a short fingerprint of the key is kept to catch a run resumed or warm-started with another salt.

The hash is TensorFlow's keyed SipHash (``tf.strings.to_hash_bucket_strong``), so the exported model applies the
very same function to the raw ``user_id`` a client sends: clients keep sending raw ids. The model therefore holds
the derived key. That lets whoever holds the model test whether a given raw id was a training user, which they
could already do by querying it (a known id answers differently from an unknown one); it never lets them list
the users.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

import numpy as np

SALT_ENV = "TWOTOWER_HASH_SALT"
PREFIX = "u_"
_BUCKETS = 2 ** 63 - 1


class HashKey(tuple):
    """The two SipHash key words (63 bits each) derived from a salt (never the salt itself)."""

    @classmethod
    def from_salt(cls, salt: str) -> HashKey:
        digest = hashlib.sha256(("twotower user id v1\x00" + salt).encode("utf-8")).digest()
        # 63 bits per word: the op takes the key as int64 attributes
        return cls((int.from_bytes(digest[:8], "little") >> 1, int.from_bytes(digest[8:16], "little") >> 1))

    @property
    def fingerprint(self) -> str:
        """A short public digest of the key: equal fingerprints mean equal hashes, and it reveals nothing else."""
        words = b"".join(w.to_bytes(8, "little") for w in self)
        return hashlib.sha256(b"fingerprint\x00" + words).hexdigest()[:16]


def key_from_config(data: Mapping) -> HashKey | None:
    """The key for a config's ``data`` block: None when hashing is off; an error naming both places to set the salt
    when it is on and no salt is given."""
    from ingest.schema import DataError

    if not data.get("hash_user_ids"):
        return None
    salt = data.get("hash_salt")
    if salt is None:
        salt = os.environ.get(SALT_ENV, "")
    if not str(salt):
        raise DataError(f"data.hash_user_ids is true but no salt is set: set the environment variable {SALT_ENV} "
                        f"(preferred: it never lands in a file) or data.hash_salt")
    return HashKey.from_salt(str(salt))


def hash_ids(ids, key: HashKey):
    """String tensor of user ids → the same shape of ``u_<decimal>`` hashes, in the graph; "" stays "" (no id)."""
    import tensorflow as tf

    ids = tf.convert_to_tensor(ids, tf.string)
    hashed = PREFIX + tf.strings.as_string(tf.strings.to_hash_bucket_strong(ids, _BUCKETS, list(key)))
    return tf.where(ids == "", ids, hashed)


def hash_column(values, key: HashKey) -> np.ndarray:
    """A pandas/numpy column of user ids → an object array of their hashes (eager, same function as the graph)."""
    values = np.asarray(values, dtype=object).astype(str)
    if values.size == 0:
        return values.astype(object)
    return np.array([v.decode("utf-8") for v in hash_ids(values, key).numpy()], dtype=object)


def hash_dataset(dataset, key: HashKey):
    """The dataset with every user id (interactions and users file) replaced by its hash, re-sorted by (hashed user,
    timestamp) as the Dataset contract asks, its given split carried along; ``user_id_hash`` holds the key's
    fingerprint."""
    inter = dataset.interactions.copy()
    inter["user_id"] = hash_column(inter["user_id"].to_numpy(), key)
    order = inter.sort_values(["user_id", "timestamp"], kind="stable").index
    dataset.interactions = inter.loc[order].reset_index(drop=True)
    if dataset.given_split is not None:
        dataset.given_split = dataset.given_split.loc[order].reset_index(drop=True)
    if dataset.users is not None:
        users = dataset.users.copy()
        users["user_id"] = hash_column(users["user_id"].to_numpy(), key)
        dataset.users = users
    dataset.user_id_hash = key.fingerprint
    return dataset
