"""The ``model:`` block of the configuration, typed: the single source of the towers' settings and their defaults.

Why it exists: the towers and the run configuration must agree on every model setting, its default and what
values make sense. This is the one place those are written down (with pydantic: types, ranges and the rules that
tie fields together, such as attention heads dividing the embedding size), so that a bad value is refused, with
its dotted key, before anything is built or written. :class:`Section` is the strict base every block of the
configuration uses (training/config.py composes the whole file from it); towers sit below training in the flow,
so the base lives here.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

ITEM_FEATURES = ("text", "id", "category", "brand", "price")
USER_FEATURES = ("text", "history", "id")
HISTORY_ENCODERS = ("mean", "attention", "causal")
ENCODER_MODES = ("frozen", "finetune_top_n", "full")

_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _yaml_number(value):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: take it as the number it plainly is; anything else stays
    as given, so ``fast`` or ``true`` is still refused."""
    return float(value) if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()) else value


PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Float = Annotated[float, BeforeValidator(_yaml_number)]
Share = Annotated[Float, Field(ge=0.0, le=1.0)]


class ConfigError(ValueError):
    """A configuration that cannot be used (a key, a flag, a run directory); the message names the file and the
    key. The command line prints it as one ``error:`` line."""


class Section(BaseModel):
    """A block of the configuration: strict types (``true`` is not a number, ``"fast"`` not a rate), unknown keys
    refused, every field documented (``description``: docs/config.md is generated from it)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


def _features(name: str, allowed: tuple[str, ...], given: list[str]) -> list[str]:
    unknown = sorted(set(given) - set(allowed))
    if unknown or not given:
        raise ValueError(f"model.{name}: unknown or empty {unknown or given} (choose from {', '.join(allowed)})")
    if len(set(given)) != len(given):
        raise ValueError(f"model.{name}: {given} names a feature twice")
    return list(given)


class ModelConfig(Section):
    """``model:``: the text encoder and the two towers."""

    encoder: str = Field("minilm", min_length=1, description="text encoder: `minilm` (installed offline), "
                         "`m3e-small` (Chinese, installed offline; non-commercial licence), `tiny` (a small "
                         "random-init BERT built from the run's corpus), `hub:DIR` (a TF Hub BERT pair) or a "
                         "local BERT directory")
    encoder_mode: Literal[ENCODER_MODES] = Field("frozen", description="`frozen` (cached text vectors, the CPU "
                                                 "path), `finetune_top_n` (train the top layers) or `full`")
    finetune_top_n: PositiveInt = Field(2, description="encoder layers trained under encoder_mode "
                                        "`finetune_top_n`; at most the encoder's layer count")
    max_seq_len: int = Field(64, gt=0, le=512, description="tokens per text (longer texts are cut)")
    tiny_hidden: PositiveInt = Field(64, description="hidden size of the `tiny` encoder (even: it has 2 heads)")
    tiny_layers: PositiveInt = Field(2, description="transformer layers of the `tiny` encoder")
    embedding_dim: PositiveInt = Field(64, description="size of the user and item vectors that are compared")
    hidden_units: list[PositiveInt] = Field([256], description="hidden layer sizes of each tower's MLP head")
    id_dim: PositiveInt = Field(32, description="size of the user and item id embeddings")
    categorical_dim: PositiveInt = Field(16, description="size of the category and brand embeddings")
    text_projection_dim: PositiveInt = Field(128, description="size the text vector is projected to")
    item_features: list[str] = Field(list(ITEM_FEATURES), description="item tower inputs, "
                                                        f"a non-empty subset of {', '.join(ITEM_FEATURES)}")
    user_features: list[str] = Field(list(USER_FEATURES), description="user tower inputs, "
                                                        f"a non-empty subset of {', '.join(USER_FEATURES)}")
    id_dropout: Float = Field(0.1, ge=0.0, lt=1.0, description="share of training examples whose ids are "
                              "replaced by the unknown id (teaches the towers to work without them)")
    cold_user_dropout: Share = Field(0.1, description="share of training examples shown as a brand-new user "
                                     "(text only, no id or history)")
    history_len: PositiveInt = Field(20, description="most recent interactions a user vector reads")
    history_decay: Float = Field(0.9, gt=0.0, le=1.0, description="weight of each older history item relative "
                                 "to the next newer one (`mean` history encoder; `causal` corrects this mean)")
    history_encoder: Literal[HISTORY_ENCODERS] = Field("mean", description="`mean` (recency-weighted mean), "
                                                       "`attention` (a Transformer over the history) or `causal` "
                                                       "(a causal Transformer trained on next-item prediction at "
                                                       "every position of each training sequence; training."
                                                       "batch_size then counts sequences; needs `history` in "
                                                       "user_features)")
    history_layers: PositiveInt = Field(2, description="Transformer layers of the `attention` and `causal` history "
                                        "encoders")
    history_heads: PositiveInt = Field(2, description="attention heads of the `attention` and `causal` history "
                                       "encoders; must divide embedding_dim")
    history_dropout: Float = Field(0.0, ge=0.0, lt=1.0, description="dropout inside the `attention` and `causal` "
                                   "history encoders")
    semantic_channel: bool = Field(False, description="the raw BERT similarity joins the score: each side appends "
                                   "its text vector, the query's scaled by a weight learned per request kind "
                                   "(towers/semantic_channel.py); needs `text` in item_features and `text` or "
                                   "`history` in user_features")
    text_centering: bool = Field(False, description="each text vector less its script's mean (Chinese or not, "
                                 "the catalogue's means) before the towers read it: a multilingual encoder's "
                                 "Chinese search then finds English items of the same thing "
                                 "(towers/script_centering.py); needs encoder_mode `frozen`")
    lexical_dim: NonNegativeInt = Field(0, description="with semantic_channel: the item vector gets a block of "
                                        "this many dimensions holding its words (idf-weighted Latin words and "
                                        "CJK characters and pairs, sketched; towers/lexical.py) that a request's "
                                        "`search_query` is matched against word for word, with its own weight; "
                                        "0: none (a search is matched by the BERT vectors alone)")
    item_item_rank: NonNegativeInt = Field(0, description="the item-to-item channel: EASE's closed-form item "
                                           "weights, fitted on the training interactions and factored to this "
                                           "many dimensions, join the score (each item's block in its vector, the "
                                           "sum of the history's blocks times a weight fitted on the validation "
                                           "split in the query; towers/item_item.py); needs `history` in "
                                           "user_features; 0: none")
    item_item_l2: Float = Field(100.0, gt=0.0, description="EASE's L2 penalty λ for the item-to-item channel: "
                                "larger trusts rare co-occurrences less")
    item_item_neighbours: NonNegativeInt = Field(20, description="the item-to-item channel: an item without "
                                                 "training interactions (a new listing, `index add`) takes the mean "
                                                 "block of this many items nearest it in the item tower's learned "
                                                 "space (towers/item_item.py); 0: it keeps a zero block")

    @field_validator("hidden_units", "item_features", "user_features", mode="before")
    @classmethod
    def _sequence(cls, value):
        """Code may pass tuples; YAML gives lists. A string is not a list of anything."""
        return list(value) if isinstance(value, tuple) else value

    @field_validator("item_features")
    @classmethod
    def _item_features(cls, value: list[str]) -> list[str]:
        return _features("item_features", ITEM_FEATURES, value)

    @field_validator("user_features")
    @classmethod
    def _user_features(cls, value: list[str]) -> list[str]:
        return _features("user_features", USER_FEATURES, value)

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.semantic_channel and ("text" not in self.item_features or
                                      not {"text", "history"} & set(self.user_features)):
            raise ValueError("model.semantic_channel needs 'text' in model.item_features and 'text' or 'history' "
                             "in model.user_features (it compares the query's text with the item's)")
        if self.text_centering and self.encoder_mode != "frozen":
            raise ValueError("model.text_centering needs model.encoder_mode: frozen (the means are the frozen "
                             "encoder's; a fine-tuned encoder moves them)")
        if self.lexical_dim and not self.semantic_channel:
            raise ValueError("model.lexical_dim needs model.semantic_channel: true (the words' block is part of the "
                             "semantic channel's search)")
        if self.item_item_rank and "history" not in self.user_features:
            raise ValueError("model.item_item_rank needs 'history' in model.user_features (the channel scores an "
                             "item by the history items it is bought with)")
        if self.history_encoder == "causal" and "history" not in self.user_features:
            raise ValueError("model.history_encoder 'causal' needs 'history' in model.user_features (it encodes "
                             "the history)")
        if self.history_encoder != "mean" and self.embedding_dim % self.history_heads:
            raise ValueError(f"model.history_heads ({self.history_heads}) must divide model.embedding_dim "
                             f"({self.embedding_dim})")
        if self.encoder == "tiny":
            if self.tiny_hidden % 2:
                raise ValueError(f"model.tiny_hidden ({self.tiny_hidden}) must be even (the tiny encoder has 2 "
                                 f"attention heads)")
            if self.encoder_mode == "finetune_top_n" and self.finetune_top_n > self.tiny_layers:
                raise ValueError(f"model.finetune_top_n ({self.finetune_top_n}) exceeds the tiny encoder's "
                                 f"{self.tiny_layers} layer(s) (model.tiny_layers)")
        return self


class TowerConfig(ModelConfig):
    """What the towers are built from: the ``model:`` block and the run's seed (``training.seed``)."""

    seed: int = Field(0, description="seeds the towers' dropout masks")
