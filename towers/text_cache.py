"""On-disk cache of text vectors, keyed by encoder fingerprint and text hash.

Why it exists: on CPU a frozen MiniLM encodes ~55 texts/s, so item and user texts are encoded once and reused by
every later epoch, run and evaluation. A changed text, weight file or tokenisation length misses the cache.
Shards are written atomically (temporary file, then rename), so a killed run never leaves a torn shard.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

KEY_BYTES = 20


def text_key(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8")).digest()


class TextVectorCache:
    """Vectors for texts under ``root/<fingerprint>/``, computed by ``encode`` only for texts not yet there."""

    def __init__(self, root: str | os.PathLike, fingerprint: str):
        self.directory = Path(root) / fingerprint
        self._vectors: dict[bytes, np.ndarray] | None = None

    def _load(self) -> dict[bytes, np.ndarray]:
        if self._vectors is None:
            self._vectors = {}
            for shard in sorted(self.directory.glob("*.npz")):
                with np.load(shard) as data:
                    for key, vector in zip(data["keys"], data["vectors"]):
                        # numpy's S20 strips trailing NUL bytes of a digest (1 text in 256): pad them back
                        self._vectors[bytes(key).ljust(KEY_BYTES, b"\0")] = vector
        return self._vectors

    def __len__(self) -> int:
        return len(self._load())

    def get(self, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> tuple[np.ndarray, int]:
        """Vectors for ``texts`` (row per text) and how many distinct texts had to be encoded now."""
        vectors = self._load()
        keys = [text_key(t) for t in texts]
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if key not in vectors:
                missing.setdefault(key, text)
        if missing:
            new = encode(list(missing.values()))
            self._write_shard(list(missing.keys()), new)
            vectors.update(zip(missing.keys(), new))
        return np.stack([vectors[k] for k in keys]) if keys else np.zeros((0, 0), np.float32), len(missing)

    def _write_shard(self, keys: list[bytes], new: np.ndarray) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        tmp = self.directory / f".{name}.tmp.npz"
        np.savez(tmp, keys=np.array(keys, dtype=f"S{KEY_BYTES}"), vectors=new.astype(np.float32))
        os.replace(tmp, self.directory / f"{name}.npz")
