"""The on-disk layout of an export, named once: a TF Serving base path of numbered version directories, what goes
in each version, what goes beside the base path, and how files there are written.

Why it exists: ``export`` and ``index add`` write this layout; ``inspect``, the model server, the client and the
benchmarks read it. TF Serving fixes part of it (numeric version directories, ``saved_model.pb``,
``assets.extra/tf_serving_warmup_requests``, a version's ``batching_params.pbtxt``), twotower adds the rest (the
model card, ``items.tsv`` and the sample query vectors in ``assets/``; ``models.config`` and
``batching_parameters.txt`` beside the base path). A leaf that imports the standard library only: the serving
process, which imports none of the earlier stages, and export both use it. Files beside the base path are written
atomically through a temporary file with a unique name in the same directory, so two writers never share one.
"""

from __future__ import annotations

import csv
import errno
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

SAVED_MODEL = "saved_model.pb"
ASSETS = "assets"
MODEL_CARD = "model_card.json"           # assets/: what was exported, from what, and how well its index recalls
ITEMS_TSV = "items.tsv"                  # assets/: item_id<TAB>title, one line per catalogue item (a header first)
SAMPLE_QUERIES = "sample_queries.npy"    # assets/: query vectors (users, searches); index add re-tunes ScaNN on them
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"   # TF Serving's fixed name
VERSION_BATCHING = "batching_params.pbtxt"   # a version's own BatchingParameters (TF Serving's name)
MODELS_CONFIG = "models.config"              # beside the base path: model_config_list text proto
BATCHING_PARAMETERS = "batching_parameters.txt"   # beside the base path: for --enable_batching
TMP_PREFIX = ".tmp-"   # a version being written: .tmp-VERSION-PID-RANDOM, renamed to VERSION when complete


def version_dirs(base: str | os.PathLike) -> dict[int, Path]:
    """The numeric version directories under ``base`` by number; hidden and temporary ones (``.tmp-3-...``) are
    not versions. Empty when ``base`` is missing or unreadable."""
    try:
        return {int(p.name): p for p in Path(base).iterdir() if p.name.isdigit() and p.is_dir()}
    except OSError:
        return {}


def next_version(base: str | os.PathLike) -> int:
    """The number the next version under ``base`` gets: one above the highest there (1 for the first)."""
    return max(version_dirs(base), default=0) + 1


def newest_version(base: str | os.PathLike, holding: str | os.PathLike = SAVED_MODEL) -> Path | None:
    """The highest-numbered version directory under ``base`` that holds ``holding`` (None when none does)."""
    for _, path in sorted(version_dirs(base).items(), reverse=True):
        if (path / holding).exists():
            return path
    return None


def asset(version: str | os.PathLike, name: str) -> Path:
    """A file in a version's ``assets/`` directory."""
    return Path(version) / ASSETS / name


def beside(base: str | os.PathLike, name: str) -> Path:
    """A file beside the base path (``models.config``, ``batching_parameters.txt``)."""
    return Path(base).parent / name


def read_items(path: str | os.PathLike) -> list[tuple[str, str]]:
    """The (item_id, title) rows of an ``items.tsv`` in file order (a line without a tab has an empty title)."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader, None)
        return [(row[0], row[1] if len(row) > 1 else "") for row in reader if row]


def write_items(path: str | os.PathLike, rows: Iterable[tuple[str, str]]) -> None:
    """Writes ``items.tsv``: a header, then one ``item_id<TAB>title`` line per row (whitespace in a title, tabs
    and newlines included, collapsed to single spaces)."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("item_id\ttitle\n")
        for item, title in rows:
            handle.write(f"{item}\t{' '.join(str(title).split())}\n")


def temporary_sibling(path: str | os.PathLike, suffix: str = "tmp") -> Path:
    """A hidden name beside ``path``, unique to this writer (``.NAME.<uuid>.tmp``): a file or directory written
    there and renamed onto ``path`` is never shared with, or removed by, a concurrent writer of the same path."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.{suffix}")


def rename_new(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Renames the directory ``tmp`` (a ``temporary_sibling``) to ``path``, where nothing may be: FileExistsError
    when another writer put a non-empty directory there meanwhile (an empty one is replaced, as rename does).
    ``tmp`` stays for the caller to remove or retry with."""
    try:
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(err.errno, "another writer made it meanwhile", str(path)) from None
        raise


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes ``data`` (text as UTF-8) to ``path`` so that readers see the old file or the new one, never a part:
    a temporary file with a unique name in the same directory, then ``os.replace``. The directory is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)   # created new ("x"), with the umask's mode
    try:
        with open(tmp, "xb") as out:
            out.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
