"""The tower hyper-parameters, one typed place (the YAML `model:` block maps onto it field by field)."""

from __future__ import annotations

import dataclasses

ITEM_FEATURES = ("text", "id", "category", "brand", "price")
USER_FEATURES = ("text", "history", "id")
HISTORY_ENCODERS = ("mean", "attention")


@dataclasses.dataclass
class TowerConfig:
    embedding_dim: int = 64
    hidden_units: tuple[int, ...] = (256,)
    id_dim: int = 32
    categorical_dim: int = 16
    text_projection_dim: int = 128
    item_features: tuple[str, ...] = ITEM_FEATURES
    user_features: tuple[str, ...] = USER_FEATURES
    id_dropout: float = 0.1
    cold_user_dropout: float = 0.0   # share of training examples shown as a new user: text only
    history_len: int = 20
    history_decay: float = 0.9
    history_encoder: str = "mean"       # mean: recency-weighted mean | attention: Transformer over the history
    history_layers: int = 2
    history_heads: int = 2
    history_dropout: float = 0.0
    semantic_channel: bool = False      # the raw BERT vectors' similarity joins the score (semantic_channel.py)
    seed: int = 0

    def __post_init__(self) -> None:
        self.hidden_units = tuple(int(u) for u in self.hidden_units)
        self.item_features = tuple(self.item_features)
        self.user_features = tuple(self.user_features)
        for name, allowed, given in (("model.item_features", ITEM_FEATURES, self.item_features),
                                     ("model.user_features", USER_FEATURES, self.user_features)):
            unknown = sorted(set(given) - set(allowed))
            if unknown or not given:
                raise ValueError(f"{name}: unknown or empty {unknown or given} (choose from {', '.join(allowed)})")
        if self.semantic_channel and ("text" not in self.item_features or
                                      not {"text", "history"} & set(self.user_features)):
            raise ValueError("model.semantic_channel needs 'text' in model.item_features and 'text' or 'history' "
                             "in model.user_features (it compares the query's text with the item's)")
        if self.history_encoder not in HISTORY_ENCODERS:
            raise ValueError(f"model.history_encoder: {self.history_encoder!r} is not one of "
                             f"{', '.join(HISTORY_ENCODERS)}")
