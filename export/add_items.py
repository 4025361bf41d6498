"""``twotower index add``: new catalogue items into the next version of an exported model, without retraining.

Why it exists: a shop lists new products every day, and a two-tower model can place an item it never trained on
from its text alone; retraining (or even keeping the training run around) just to serve them is waste. This
reads the newest version under a TF Serving base path and nothing else:

1. the new items file is read and checked like a shop's items file (``ingest.read``, ``ingest.normalize``), and
   every id must be new to the model; any problem is one error naming the file, line and field, before anything
   is written;
2. the exported ``embed_items`` signature embeds the new items (their ids map to the OOV row, their text is
   encoded), and the model's words function gives their explanation words;
3. the loaded SavedModel's served catalogue grows by those rows (``catalog.append``, saved in the model), the
   index is rebuilt over old + new vectors (ScaNN re-tuned on the sample queries kept in the version's assets,
   brute force reads the grown catalogue as is), and the loaded object is saved again as the next version with
   the same signatures, atomically (``export.writer.write_version``), its model card updated (item count, index
   recall, provenance) and ``items.tsv`` extended.

A server polling the base path loads the new version and swaps it in between requests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from export.explain import item_words
from export.index import SCANN_TENSORS, check_target_recall, replace_scann_state, tuned_scann
from export.inspect import InspectError, resolve_version
from export.trained import ExportError
from export.writer import index_card, quiet_tensorflow, save_module, write_version
from ingest.normalize import normalize_items
from ingest.read import read_table
from ingest.schema import DataError, DropReport
from towers.text_fields import join_columns
from twotower import layout

log = logging.getLogger("twotower.export")
EMBED_BATCH = 256


def add_items(base_path: str, items_file: str, target_recall: float = 0.95, progress: bool = True) -> Path:
    """Writes the next version under ``base_path``: the newest version plus the items of ``items_file``."""
    check_target_recall(target_recall)
    with quiet_tensorflow():
        return _add_items(Path(base_path), Path(items_file), target_recall, progress)


def read_new_items(path: Path):
    """The new items as a normalised frame and each one's line (or row) in the file; DataError (file, line, field)
    for a missing file or column, an empty id or title, or a duplicate id."""
    raw = read_table(path, required=("item_id", "title"), kind="items")
    items = normalize_items(raw, str(path), DropReport(), on_bad_rows="error")   # keeps every row, or raises
    return items, [f"{raw.attrs['row_label']} {number}" for number in raw.index]


def refuse_known(path: Path, items, where: list[str], known: set[str]) -> None:
    """index add only adds: an id the model already has is an error naming its line."""
    clash = [(line, item) for line, item in zip(where, items["item_id"]) if item in known]
    if clash:
        listed = ", ".join(f"{line} ({item!r})" for line, item in clash[:10])
        more = f" and {len(clash) - 10} more" if len(clash) > 10 else ""
        raise DataError(f"{path}: {len(clash)} item_id(s) already in the model: {listed}{more} (field 'item_id'; "
                        f"index add only adds new items)")


def _source_version(base: Path) -> tuple[Path, dict, np.ndarray]:
    try:
        version = resolve_version(base)
    except InspectError as err:
        raise ExportError(f"--base-path {base}: {err}") from None
    card_file, queries_file = layout.asset(version, layout.MODEL_CARD), layout.asset(version, layout.SAMPLE_QUERIES)
    if not card_file.exists() or not queries_file.exists():
        raise ExportError(f"{version} has no {card_file.name} and {queries_file.name} in its assets: not a twotower "
                          f"export that index add can grow (export the run again)")
    return version, json.loads(card_file.read_text(encoding="utf-8")), np.load(queries_file)


def _embed(model, items, progress: bool) -> np.ndarray:
    embed = model.signatures["embed_items"]
    parts = []
    for start in tqdm(range(0, len(items), EMBED_BATCH), desc="embedding new items", unit="batch",
                      disable=not progress):
        rows = items.iloc[start:start + EMBED_BATCH]
        inputs = {name: tf.constant(rows[name].astype(str).tolist()) for name in
                  ("item_id", "title", "description", "category", "brand")}
        inputs["price"] = tf.constant(rows["price"].to_numpy(np.float32))
        parts.append(embed(**inputs)["embedding"].numpy())
    return np.concatenate(parts).astype(np.float32)


def _add_items(base: Path, items_file: Path, target_recall: float, progress: bool) -> Path:
    import scann  # noqa: F401 - kernels for the ScaNN index
    import tensorflow_text  # noqa: F401 - kernels for the in-graph tokenizer

    version, card, queries = _source_version(base)
    items, where = read_new_items(items_file)
    model = tf.saved_model.load(str(version))
    if not hasattr(model, "catalog") or not hasattr(model.catalog, "append"):
        raise ExportError(f"{version} has no growable catalogue (exported before index add existed): export the "
                          f"run again")
    refuse_known(items_file, items, where, {i.decode("utf-8") for i in model.catalog.ids.numpy()})
    vectors = _embed(model, items, progress)
    columns = card["training_config"]["data"]["item_text_columns"]
    texts = join_columns([items[c].astype(str).tolist() if c in items.columns else [""] * len(items)
                          for c in columns])
    size = int(model.catalog.append(tf.constant(items["item_id"].tolist()), tf.constant(vectors),
                                    tf.constant(items["category"].tolist()), tf.constant(item_words(texts))))
    everything = model.catalog.vectors.numpy()
    index, k = dict(card["index"]), int(card["index"]["k"])
    if index["type"] == "scann":   # brute force searches the grown catalogue variable as it is
        tuned, report = tuned_scann(everything, queries, min(k + int(card["history_len"]), size), target_recall, k)
        replace_scann_state(model.index, {key: getattr(tuned, key) for key in SCANN_TENSORS},
                            report.params["reorder"])
        index = index_card(report, k)
        log.info("ScaNN re-tuned over %d items: recall@%d vs brute force %.4f", size, k, report.recall_at_k)
    log.info("added %d items (%d in all)", len(items), size)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    card = {**card, "items": size, "index": index, "updated": now}
    card["provenance"] = [*card.get("provenance", []), {
        "action": "index add", "at": now, "from_version": int(version.name), "items_file": str(items_file.resolve()),
        "items_file_sha256": hashlib.sha256(items_file.read_bytes()).hexdigest(), "added": len(items),
        "items": size}]
    titles = [*layout.read_items(layout.asset(version, layout.ITEMS_TSV)), *zip(items["item_id"], items["title"])]
    return write_version(base, lambda path: save_module(model, path), card, titles, queries)

