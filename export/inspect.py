"""``twotower inspect PATH``: what an exported model takes and returns, what it needs to load, and a live query.

Why it exists: people inspecting SavedModels reach for ``saved_model_cli``, which cannot list a model whose
custom ops (ScaNN, TF Text) its process has not loaded. This reads signatures and op types from the protobuf
itself, says which library provides each custom op and whether stock TF Serving can load the model, prints the
model card, and then loads the model (importing only tensorflow, tensorflow_text and scann) for one query.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from export.ops import SCANN, TF_TEXT, custom_ops, saved_model_proto, stock_server_can_load
from twotower import layout


class InspectError(ValueError):
    """PATH is neither a SavedModel version directory nor a base path holding one."""


def resolve_version(path: str | Path) -> Path:
    path = Path(path)
    if (path / layout.SAVED_MODEL).exists():
        return path
    version = layout.newest_version(path)
    if version is None:
        raise InspectError(f"{path}: no {layout.SAVED_MODEL} here nor in a numeric version directory below it")
    return version


def _shape(tensor_info) -> str:
    if tensor_info.tensor_shape.unknown_rank:
        return "[?]"
    return "[" + ", ".join("B" if d.size == -1 and i == 0 else ("?" if d.size == -1 else str(d.size))
                           for i, d in enumerate(tensor_info.tensor_shape.dim)) + "]"


def _dtype(tensor_info) -> str:
    from tensorflow.core.framework import types_pb2

    return types_pb2.DataType.Name(tensor_info.dtype).replace("DT_", "").lower()


def signature_lines(version: Path) -> list[str]:
    lines = []
    signatures = saved_model_proto(version).meta_graphs[0].signature_def
    for name in sorted(signatures, key=lambda n: (n != "serving_default", n)):
        if name.startswith("__"):
            continue
        signature = signatures[name]
        lines.append(f"  {name}  ({signature.method_name})")
        for kind, tensors in (("in ", signature.inputs), ("out", signature.outputs)):
            for key in sorted(tensors):
                default = ""
                if kind == "in " and key in signature.defaults:
                    default = f"  optional, default {_default(signature.defaults[key])}"
                lines.append(f"    {kind} {key:<16} {_dtype(tensors[key]):<8} {_shape(tensors[key])}{default}")
    return lines


def _default(proto) -> str:
    import tensorflow as tf

    return repr(tf.make_ndarray(proto).tolist())


def op_lines(groups: dict[str, list[str]]) -> list[str]:
    if not groups:
        return ["  none: core TensorFlow ops only"]
    lines = []
    for owner, ops in sorted(groups.items()):
        info = {SCANN["library"]: SCANN, TF_TEXT["library"]: TF_TEXT}.get(owner)
        how = f"load with `{info['load']}`" if info else "no library here provides them"
        stock = ("stock tensorflow_model_server has them" if info and info["stock_tf_serving"]
                 else "stock tensorflow_model_server cannot load them")
        lines.append(f"  {owner}: {', '.join(ops)}")
        lines.append(f"    → {how}; {stock}")
    return lines


def smoke_query(version: Path, card: dict) -> list[str]:
    from export.loaded import LoadedVersion

    items_file = layout.asset(version, layout.ITEMS_TSV)
    titles = dict(layout.read_items(items_file)) if items_file.exists() else {}
    model = LoadedVersion(version)
    seed = next(iter(titles), "")
    inputs = {"user_id": ["inspect-user"], "history": [[seed]], "user_text": [""]}
    model("serving_default", **inputs)  # warm-up
    started = time.perf_counter()
    out = model("serving_default", **inputs)
    millis = 1000 * (time.perf_counter() - started)
    ids = [i.decode() for i in out["item_ids"][0][:5]]
    scores = out["scores"][0][:5]
    because = [i.decode() for i in out["because"][0][:5]] if "because" in out else [""] * len(ids)
    lines = [f"  serving_default(user_id=['inspect-user'], history=[['{seed}']], user_text=['']) "
             f"in {millis:.1f} ms", f"    history: {seed}  {titles.get(seed, '')[:60]}"]
    lines += [f"    {rank}. {item}  {score:.4f}  {titles.get(item, '')[:60]}"
              + (f"  (because you viewed {reason})" if reason else "")
              for rank, (item, score, reason) in enumerate(zip(ids, scores, because), 1)]
    return lines


def inspect(path: str | Path, smoke: bool = True) -> str:
    version = resolve_version(path)
    card_file = layout.asset(version, layout.MODEL_CARD)
    card = json.loads(card_file.read_text(encoding="utf-8")) if card_file.exists() else {}
    groups = custom_ops(version)
    lines = [f"SavedModel {version}", "", "Signatures:"] + signature_lines(version)
    lines += ["", "Ops that need kernels beyond core TensorFlow:"] + op_lines(groups)
    lines.append("  stock tensorflow_model_server: " + ("can load this model" if stock_server_can_load(groups)
                                                         else "CANNOT load this model (use `twotower serve`)"))
    if card:
        index = card.get("index", {})
        added = [p for p in card.get("provenance", []) if p.get("action") == "index add"]
        test = card.get("metrics", {}).get("test", {})
        lines += ["", f"Model card ({card_file.relative_to(version)}):",
                  f"  created {card.get('created')}, {card.get('items')} items, dim {card.get('embedding_dim')}, "
                  f"history {card.get('history_len')}",
                  f"  encoder {card.get('encoder', {}).get('name')} ({card.get('encoder', {}).get('fingerprint')})",
                  f"  index {index.get('type')} k={index.get('k')} recall@k vs brute force "
                  f"{index.get('recall_at_k_vs_brute_force')} params {index.get('params')}",
                  "  test metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()
                                                  if isinstance(v, float)),
                  f"  data fingerprint {card.get('data_fingerprint')}; libraries "
                  + ", ".join(f"{k} {v}" for k, v in card.get("libraries", {}).items())]
        lines += [f"  index add: +{p.get('added')} items from {p.get('items_file')} (version {p.get('from_version')} "
                  f"→ {p.get('version')}, {p.get('at')})" for p in added]
    if smoke:
        lines += ["", "Smoke query:"] + smoke_query(version, card)
    return "\n".join(lines)
