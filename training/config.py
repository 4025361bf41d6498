"""The run configuration: defaults, YAML files, ``--set key=value`` overrides, checked against the schema.

Why it exists: a run is reproducible only if every knob it used is written down. Defaults live here, once; a
YAML file overrides some; ``--set`` overrides those; the result is validated (unknown keys are errors, not typos
silently ignored) and written to RUN/config.yaml.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

DEFAULTS: dict = {
    "data": {
        "format": "files",          # files | generated | amazon_scientific | amazon_beauty | movielens_100k | prepared
        "path": None,               # directory, for the dataset formats that are a directory
        "items": None,
        "interactions": None,
        "users": None,
        "item_text_columns": ["title", "description", "category", "brand"],
        "user_text_columns": ["profile_text"],
        "split": {"type": "leave_last_out"},
        "on_bad_rows": "drop",      # drop (counted, with reasons, in the run log) | error
        "max_users": None,
        "hash_user_ids": False,     # salted-hash user ids at ingestion (ingest/privacy.py)
        "hash_salt": None,          # null: the salt comes from the TWOTOWER_HASH_SALT environment variable
    },
    "model": {
        "encoder": "minilm",        # minilm | tiny | /path/to/a/local/bert
        "encoder_mode": "frozen",   # frozen | finetune_top_n | full
        "finetune_top_n": 2,
        "max_seq_len": 64,
        "tiny_hidden": 64,
        "tiny_layers": 2,
        "embedding_dim": 64,
        "hidden_units": [256],
        "id_dim": 32,
        "categorical_dim": 16,
        "text_projection_dim": 128,
        "item_features": ["text", "id", "category", "brand", "price"],
        "user_features": ["text", "history", "id"],
        "id_dropout": 0.1,
        "cold_user_dropout": 0.1,   # share of training examples shown as a brand-new user (text only)
        "history_len": 20,
        "history_decay": 0.9,
        "history_encoder": "mean",  # mean (recency-weighted) | attention (Transformer over the history)
        "history_layers": 2,
        "history_heads": 2,
        "history_dropout": 0.0,
        "semantic_channel": False,  # the raw BERT similarity joins the score with learned weights (towers/semantic_channel.py)
    },
    "training": {
        "seed": 0,
        "epochs": 10,
        "batch_size": 1024,
        "learning_rate": 0.003,
        "weight_decay": 0.0001,
        "warmup_steps": 50,
        "temperature": 0.05,
        "logq_correction": True,
        "item_frequency": "counts",  # logQ from: counts (a pass over the training data) | streaming (Yi et al.)
        "remove_accidental_hits": True,
        "uniform_negatives": 0,
        "use_weights": True,
        "early_stopping_metric": "recall@10",
        "early_stopping_patience": 3,
        "deterministic": True,
        "steps_per_execution": 1,   # >1 runs several steps per call into the graph: less Python overhead
        "text_cache_dir": ".cache/text",
        "encode_batch_size": 128,
        "warm_start_from": None,    # a finished run: its weights start this one (ids matched row by row)
    },
    "evaluation": {
        "ks": [10, 50],
        "batch_size": 1024,
    },
}


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


def _merge(base: dict, override: Mapping, where: str, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        path = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"{where}: unknown key '{path}' (known: {', '.join(sorted(base))})")
        if isinstance(base[key], dict) and key != "split":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: '{path}' must be a mapping")
            out[key] = _merge(base[key], value, where, path + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], object]:
    """``training.epochs=3`` → (["training", "epochs"], 3); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. training.epochs=3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({err})") from err
    return key.strip().split("."), value


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> dict:
    """Defaults ← YAML file ← ``--set`` overrides, validated."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: top level must be a mapping of sections ({', '.join(DEFAULTS)})")
        config = _merge(config, loaded, str(path))
    for text in overrides:
        keys, value = parse_override(text)
        nested: dict = value
        for key in reversed(keys):
            nested = {key: nested}
        config = _merge(config, nested, f"--set {text}")
    validate(config)
    return config


def validate(config: dict) -> None:
    training, model, data = config["training"], config["model"], config["data"]
    if data["format"] in ("files",) and (not data["items"] or not data["interactions"]):
        raise ConfigError("data: format 'files' needs data.items and data.interactions paths")
    if model["encoder_mode"] not in ("frozen", "finetune_top_n", "full"):
        raise ConfigError(f"model.encoder_mode: {model['encoder_mode']!r} is not frozen, finetune_top_n or full")
    for key in ("epochs", "batch_size", "embedding_dim", "history_len", "max_seq_len"):
        section = training if key in training else model
        if not isinstance(section[key], int) or section[key] <= 0:
            raise ConfigError(f"{'training' if section is training else 'model'}.{key} must be a positive "
                              f"integer, got {section[key]!r}")
    if training["item_frequency"] not in ("counts", "streaming"):
        raise ConfigError(f"training.item_frequency: {training['item_frequency']!r} is not counts or streaming")
    if training["temperature"] <= 0:
        raise ConfigError("training.temperature must be > 0")
    metric = training["early_stopping_metric"]
    if metric.split("@")[0] not in ("recall", "ndcg") or int(metric.split("@")[1]) not in config["evaluation"]["ks"]:
        raise ConfigError(f"training.early_stopping_metric {metric!r} must be recall@K or ndcg@K with K in "
                          f"evaluation.ks {config['evaluation']['ks']}")
    if not isinstance(data["split"], Mapping) or "type" not in data["split"]:
        raise ConfigError("data.split must be a mapping with a 'type' (leave_last_out, temporal, given)")


def dump_config(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
