"""The run configuration: one typed schema, YAML files, ``--set key=value`` overrides, checked as a whole.

Why it exists: a run is reproducible only if every knob it used is written down, and a bad knob must be refused
before anything is written. :class:`RunConfig` (pydantic) is the single source of every key, its type, its
range, its default and its meaning (docs/config.md is generated from it); the cross-field rules live on it too.
Defaults ← a YAML file ← ``--set`` overrides are merged and validated here, and the result is written to
RUN/config.yaml. Every error names the key by its dotted path.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from ingest.formats import FORMATS
from ingest.normalize import ON_BAD_ROWS, TIMESTAMP_UNITS
from ingest.schema import DataError
from ingest.split import to_unix_seconds
from towers.config import ConfigError, Float, ModelConfig, PositiveInt, Section

log = logging.getLogger("twotower.config")
DATA_FORMATS = tuple(FORMATS)
FILE_KEYS = ("items", "interactions", "users")   # the shop's own files: only format `files` reads them
# Keys a format never reads (beyond the file paths): setting one is a mistake, not a wish to be ignored.
NO_EFFECT = {name: fmt.unused_keys for name, fmt in FORMATS.items() if fmt.unused_keys}
NO_GIVEN_SPLIT = tuple(name for name, fmt in FORMATS.items() if not fmt.ships_split)   # no split of their own
NO_EFFECT_WHY = {"on_bad_rows": "`twotower prepare` validated the rows", "max_users": "the shards hold every user",
                 "timestamp_unit": "its timestamps come in a fixed form"}
METRIC = re.compile(r"(recall|ndcg)@([1-9][0-9]*)")

# Keys added after runs were already trained: the value an old RUN/config.yaml without the key trained with, where
# that differs from today's default (the feature did not exist, so it was off).
ABSENT_IN_OLD_RUNS = {("model", "cold_user_dropout"): 0.0, ("training", "fit_semantic_weights"): False}


Moment = int | float | str | datetime.datetime | datetime.date   # YAML reads 2024-03-01 as a date


class LeaveLastOut(Section):
    """Per user: last interaction → test, second-to-last → valid, the rest train."""

    type: Literal["leave_last_out"] = Field(description="`leave_last_out`")


class Temporal(Section):
    """Cut by time: before valid_start → train, before test_start → valid, the rest test."""

    type: Literal["temporal"] = Field(description="`temporal`")
    valid_start: Moment = Field(description="first moment of the validation window (a date such as 2024-03-01, "
                                "taken as UTC, or unix seconds)")
    test_start: Moment = Field(description="first moment of the test window (after valid_start)")

    @model_validator(mode="after")
    def _ordered(self) -> Temporal:
        try:
            valid, test = (to_unix_seconds(getattr(self, key), key) for key in ("valid_start", "test_start"))
        except DataError as err:
            raise ValueError(f"data.{err}") from None
        if not valid < test:
            raise ValueError(f"data.split.valid_start ({self.valid_start!r}) must be before data.split.test_start "
                             f"({self.test_start!r})")
        return self


class Given(Section):
    """The split the dataset ships with (the research datasets, a generated world's cut-offs)."""

    type: Literal["given"] = Field(description="`given`")


Split = Annotated[LeaveLastOut | Temporal | Given, Field(discriminator="type")]


class DataConfig(Section):
    """``data:``: where the interactions, items and users come from and how they are read and split."""

    format: Literal[DATA_FORMATS] = Field("files", description="`files` (the shop's own CSV/TSV/Parquet/JSONL), "
                                          "`generated` (`twotower generate`), `amazon_scientific`, `amazon_beauty`, "
                                          "`movielens_100k` (directories) or `prepared` (`twotower prepare` shards)")
    path: str | None = Field(None, description="the dataset directory (every format but `files`)")
    items: str | None = Field(None, description="items file (format `files`): item_id, title [, description, "
                              "category, brand, price, ...]")
    interactions: str | None = Field(None, description="interactions file (format `files`): user_id, item_id, "
                                     "timestamp [, event, weight]")
    users: str | None = Field(None, description="optional users file (format `files`): user_id [, profile_text, "
                              "...]")
    item_text_columns: list[str] = Field(["title", "description", "category", "brand"], min_length=1,
                                         description="item columns joined into the item text")
    user_text_columns: list[str] = Field(["profile_text"], description="user columns joined into the user text")
    split: Split = Field(LeaveLastOut(type="leave_last_out"), description="how interactions are split: "
                         "`{type: leave_last_out}`, `{type: temporal, valid_start: DATE, test_start: DATE}` or "
                         "`{type: given}`")
    on_bad_rows: Literal[ON_BAD_ROWS] = Field("drop", description="`drop` (counted, with reasons, in the run log) "
                                              "or `error` (stop at the first bad row, naming file and line)")
    timestamp_unit: Literal[TIMESTAMP_UNITS] = Field("auto", description="unit of numeric timestamps: `s`, `ms`, "
                                                     "`us`, `ns`, or `auto` (from their magnitude; a file whose "
                                                     "values disagree is refused, naming a line)")
    max_users: PositiveInt | None = Field(None, description="keep only the first N users (a quick slice)")
    hash_user_ids: bool = Field(False, description="replace user ids by a salted hash at ingestion")
    hash_salt: str | None = Field(None, description="the salt for hash_user_ids; null: the TWOTOWER_HASH_SALT "
                                  "environment variable")

    @model_validator(mode="after")
    def _keys_for_format(self) -> DataConfig:
        if self.format == "files":
            missing = [f"data.{key}" for key in ("items", "interactions") if not getattr(self, key)]
            if missing:
                raise ValueError(f"data: format 'files' needs data.items and data.interactions paths (missing: "
                                 f"{', '.join(missing)})")
            if self.path is not None:
                raise ValueError("data.path has no effect for data.format 'files' (it reads data.items, "
                                 "data.interactions and data.users); remove it")
        else:
            if not self.path:
                raise ValueError(f"data.path (the dataset directory) is required for data.format '{self.format}'")
            for key in FILE_KEYS:
                if getattr(self, key) is not None:
                    raise ValueError(f"data.{key} has no effect for data.format '{self.format}' (it reads "
                                     f"data.path); remove it, or use data.format files")
        if self.split.type == "given" and self.format in NO_GIVEN_SPLIT:
            raise ValueError(f"data.split: type 'given' needs a dataset that ships its own split; data.format "
                             f"'{self.format}' has none (use leave_last_out or temporal)")
        unused = NO_EFFECT.get(self.format, ())
        for key in unused:
            if getattr(self, key) != DataConfig.model_fields[key].default:
                raise ValueError(f"data.{key} has no effect for data.format '{self.format}' ({NO_EFFECT_WHY[key]}); "
                                 f"remove it")
        return self


class TrainingConfig(Section):
    """``training:``: optimisation, the loss, early stopping and the text cache."""

    seed: int = Field(0, ge=0, description="seeds initialisation, data order, dropout and negatives")
    epochs: PositiveInt = Field(10, description="most epochs to train")
    batch_size: PositiveInt = Field(1024, description="examples per step (per worker in a multi-worker job); "
                                  "sequence windows of model.history_len steps with history_encoder `causal`")
    learning_rate: Float = Field(0.003, gt=0.0, description="peak AdamW learning rate (after warm-up)")
    weight_decay: Float = Field(0.0001, ge=0.0, description="AdamW weight decay")
    warmup_steps: int = Field(50, ge=0, description="steps of linear warm-up before the cosine decay")
    temperature: Float = Field(0.05, gt=0.0, description="softmax temperature of the retrieval loss")
    logq_correction: bool = Field(True, description="subtract each candidate's log sampling probability")
    item_frequency: Literal["counts", "streaming"] = Field("counts", description="logQ from `counts` (a pass "
                                                           "over the training data) or `streaming` (estimated "
                                                           "during training)")
    remove_accidental_hits: bool = Field(True, description="a batch's other copies of the target are not "
                                         "negatives")
    uniform_negatives: int = Field(0, ge=0, description="extra negatives per batch drawn uniformly from the "
                                   "items training has seen")
    use_weights: bool = Field(True, description="use the interactions' weight column in the loss")
    fit_semantic_weights: bool = Field(True, description="with model.semantic_channel: after training, set each "
                                       "request kind's channel weight to the one that ranks its validation cases "
                                       "best by early_stopping_metric, the towers frozen, and the search weight "
                                       "(`search_query` requests) on the validation users' search queries where the "
                                       "data has a search log (training/calibrate.py)")
    early_stopping_metric: str = Field("recall@10", description="validation metric that picks the best epoch: "
                                       "`recall@K` or `ndcg@K` with K in evaluation.ks")
    early_stopping_patience: PositiveInt = Field(3, description="epochs without improvement before stopping")
    deterministic: bool = Field(True, description="deterministic TensorFlow ops (reproducible runs)")
    steps_per_execution: PositiveInt = Field(1, description="steps per call into the graph (>1: less Python "
                                             "overhead)")
    text_cache_dir: str = Field(".cache/text", min_length=1, description="on-disk cache of encoded texts")
    encode_batch_size: PositiveInt = Field(128, description="texts per batch when encoding")
    warm_start_from: str | None = Field(None, description="a finished run whose weights start this one (ids "
                                        "matched row by row)")

    @model_validator(mode="after")
    def _metric(self) -> TrainingConfig:
        if not METRIC.fullmatch(self.early_stopping_metric):
            raise ValueError(f"training.early_stopping_metric {self.early_stopping_metric!r} must be recall@K or "
                             f"ndcg@K (K a positive integer in evaluation.ks)")
        return self


class EvaluationConfig(Section):
    """``evaluation:``: full-catalogue ranking metrics."""

    ks: list[PositiveInt] = Field([10, 50], min_length=1, description="cut-offs K of recall@K and ndcg@K")
    batch_size: PositiveInt = Field(1024, description="users scored per batch")


class RunConfig(Section):
    """A whole run configuration (a configs/*.yaml file, with defaults for what it leaves out)."""

    data: DataConfig = Field(description="the data")
    model: ModelConfig = Field(ModelConfig(), description="the model")
    training: TrainingConfig = Field(TrainingConfig(), description="training")
    evaluation: EvaluationConfig = Field(EvaluationConfig(), description="evaluation")

    @model_validator(mode="after")
    def _causal_in_memory(self) -> RunConfig:
        if self.model.history_encoder == "causal" and self.data.format == "prepared":
            raise ValueError("model.history_encoder 'causal' trains on whole sequences and cannot stream data.format "
                             "'prepared' shards (one example per interaction); train from the source data")
        return self

    @model_validator(mode="after")
    def _metric_in_ks(self) -> RunConfig:
        metric = self.training.early_stopping_metric
        if int(METRIC.fullmatch(metric).group(2)) not in self.evaluation.ks:
            raise ValueError(f"training.early_stopping_metric {metric!r} must be recall@K or ndcg@K with K in "
                             f"evaluation.ks {self.evaluation.ks}")
        return self


SECTIONS: dict[str, type[Section]] = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig,
                                      "evaluation": EvaluationConfig}


def defaults(schema: type[Section]) -> dict:
    """Every key of a section with its default (nested sections as mappings); a required key maps to None."""
    out = {}
    for name, field in schema.model_fields.items():
        if field.is_required():
            out[name] = None
            continue
        value = field.get_default(call_default_factory=True)
        out[name] = value.model_dump(mode="json") if isinstance(value, Section) else value
    return out


DEFAULTS: dict = {name: defaults(schema) for name, schema in SECTIONS.items()}


def _merge(base: dict, override: Mapping, where: str, prefix: str = "") -> dict:
    """``override`` laid over ``base`` key by key; a section (a mapping of keys) merges, any other value
    (data.split included: its type decides its keys) replaces."""
    out = dict(base)
    for key, value in override.items():
        path = f"{prefix}{key}"
        if prefix == "" and key not in SECTIONS:
            raise ConfigError(f"{where}: unknown key '{path}' (known: {', '.join(SECTIONS)})")
        if prefix == "" or (isinstance(base.get(key), Mapping) and key != "split"):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: '{path}' must be a mapping of keys")
            out[key] = _merge(base.get(key, {}), value, where, path + ".")
        else:
            out[key] = value
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


def _dotted(root: type[BaseModel], loc: tuple) -> tuple[str, type[BaseModel] | None]:
    """An error's location as the dotted key a user writes (union tags left out), and the block it ends in."""
    keys: list[str] = []
    schema: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            keys.append(str(part))
            schema = None
            continue
        field = schema.model_fields.get(part) if schema is not None else None
        if field is None:   # a union's tag (split: temporal, ...), not a key
            continue
        keys.append(part)
        kinds = typing.get_args(field.annotation) or (field.annotation,)
        kinds = [a for k in kinds for a in (typing.get_args(k) or (k,))]   # Annotated[Union[...]] too
        schema = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
    return ".".join(keys), schema


def _message(error: dict, root: type[BaseModel]) -> str:
    """One pydantic error as ``section.key: what is wrong, got VALUE``."""
    if error["type"] == "extra_forbidden":
        block_key, block = _dotted(root, error["loc"][:-1])
        key = ".".join([*([block_key] if block_key else []), str(error["loc"][-1])])
        known = f" (known: {', '.join(block.model_fields)})" if block is not None else ""
        return f"unknown key '{key}'{known}"
    key, _ = _dotted(root, error["loc"])
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    if error["type"] == "missing":
        return f"{key} is required"
    message = error["msg"][0].lower() + error["msg"][1:]
    return f"{key}: {message}, got {error['input']!r}" if key else message


def validation_message(err: ValidationError, root: type[BaseModel]) -> str:
    """Every error of a validation against ``root``, each naming its dotted key."""
    return "; ".join(dict.fromkeys(_message(e, root) for e in err.errors()))


def check(config: Mapping, where: str = "config") -> dict:
    """The whole config checked against :class:`RunConfig`; returns it in canonical form (every key, plain YAML
    types). Raises ConfigError naming ``where`` and each offending dotted key."""
    try:
        return RunConfig.model_validate(config).model_dump(mode="json")
    except ValidationError as err:
        raise ConfigError(f"{where}: {validation_message(err, RunConfig)}") from None


def read_mapping(path: Path, keys: Sequence[str], what: str = "config",
                 error: type[ConfigError] = ConfigError) -> dict:
    """A YAML file whose top level is a mapping (of ``keys``), or ``error`` naming the file."""
    if not path.is_file():
        raise error(f"{what} file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {err}") from err
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise error(f"{path}: top level must be a mapping with keys {', '.join(keys)}")
    return dict(loaded)


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> dict:
    """Defaults ← YAML file ← ``--set`` overrides, validated as a whole."""
    config: dict = {}
    where = "config"
    if path is not None:
        path = Path(path)
        where = str(path)
        config = _merge(config, read_mapping(path, list(SECTIONS)), where)
    for text in overrides:
        keys, value = parse_override(text)
        nested: Any = value
        for key in reversed(keys):
            nested = {key: nested}
        config = _merge(config, nested, f"--set {text}")
    if overrides:
        where += " with --set " + " ".join(overrides) if len(" ".join(overrides)) < 200 else " with --set"
    return check(config, where)


def load_stored(path: Path) -> dict:
    """A run directory's config.yaml, written by this or an older version: keys added since take the value the
    run trained with (``ABSENT_IN_OLD_RUNS``) or today's default."""
    stored = {section: dict(block) if isinstance(block, Mapping) else block
              for section, block in read_mapping(path, list(SECTIONS)).items()}
    for (section, key), value in ABSENT_IN_OLD_RUNS.items():
        if isinstance(stored.get(section), dict):
            stored[section].setdefault(key, value)
    data = stored.get("data")
    if isinstance(data, dict) and data.get("format", "files") != "files":
        # Older versions wrote the file paths a directory format ignored (null, or whatever --set gave them).
        for key in FILE_KEYS:
            if data.get(key) is not None:
                log.warning("%s: data.%s (%r) had no effect for data.format %r; ignored", path, key, data[key],
                            data["format"])
                data[key] = None
    return check(stored, str(path))


def dump_config(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
