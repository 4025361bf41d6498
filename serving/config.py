"""Which models to serve: ``ModelConfig`` from the command-line flags or from a ModelServerConfig text proto.

Why it exists: TF Serving takes either ``--model_name/--model_base_path`` or a ``--model_config_file`` holding a
``model_config_list`` (with ``model_version_policy`` and ``version_labels``); both must give the same plain
description, so the rest of the server never touches the protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import ServingError, invalid

POLICIES = ("latest", "all", "specific")


@dataclass(frozen=True)
class ModelConfig:
    """One model: its name, its base path of numeric version directories, which versions to serve, labels.

    ``version_policy`` is "latest" (the ``latest_versions`` highest), "all" or "specific" (``versions``).
    """

    name: str
    base_path: str
    version_policy: str = "latest"
    latest_versions: int = 1
    versions: tuple[int, ...] = ()
    version_labels: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise invalid("a model config needs a name")
        if not self.base_path:
            raise invalid(f"model {self.name}: base_path is empty")
        if self.version_policy not in POLICIES:
            raise invalid(f"model {self.name}: version policy must be one of {POLICIES}, got {self.version_policy!r}")
        if self.version_policy == "latest" and self.latest_versions < 1:
            raise invalid(f"model {self.name}: latest num_versions must be at least 1, got {self.latest_versions}")
        if self.version_policy == "specific" and not self.versions:
            raise invalid(f"model {self.name}: the specific version policy lists no versions")

    def wanted(self, candidates: list[int]) -> set[int]:
        """The versions this policy asks for among ``candidates`` (the loadable ones found on disk)."""
        if self.version_policy == "all":
            return set(candidates)
        if self.version_policy == "specific":
            return set(candidates) & set(self.versions)
        return set(sorted(candidates)[-self.latest_versions:])

def from_flags(name: str, base_path: str) -> ModelConfig:
    """``--model_name NAME --model_base_path PATH``: latest version only, as TF Serving does."""
    return ModelConfig(name=name, base_path=str(Path(base_path).expanduser().resolve()))


def from_proto(config: model_server_config_pb2.ModelServerConfig,
               relative_to: Path | None = None) -> list[ModelConfig]:
    """A ModelServerConfig with a ``model_config_list`` → configs (names must be unique, platform tensorflow)."""
    if config.WhichOneof("config") != "model_config_list":
        raise invalid("the model config must hold a model_config_list (custom_model_config is not supported)")
    configs: list[ModelConfig] = []
    seen: set[str] = set()
    for entry in config.model_config_list.config:
        if entry.name in seen:
            raise invalid(f"model {entry.name!r} appears twice in the model config")
        seen.add(entry.name)
        if entry.model_platform not in ("", "tensorflow"):
            raise invalid(f"model {entry.name}: model_platform {entry.model_platform!r} is not supported "
                          "(only tensorflow)")
        base = Path(entry.base_path).expanduser()
        if not base.is_absolute() and relative_to is not None:
            base = relative_to / base
        policy = entry.model_version_policy
        kind = policy.WhichOneof("policy_choice") or "latest"
        configs.append(ModelConfig(
            name=entry.name, base_path=str(base.resolve()) if entry.base_path else "", version_policy=kind,
            latest_versions=(policy.latest.num_versions or 1) if kind == "latest" else 1,
            versions=tuple(int(v) for v in policy.specific.versions) if kind == "specific" else (),
            version_labels={label: int(version) for label, version in entry.version_labels.items()}))
    return configs


def parse_text(text: str, source: str = "model config", relative_to: Path | None = None) -> list[ModelConfig]:
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise invalid(f"Invalid protobuf file: '{source}' (not a ModelServerConfig text proto): Error parsing "
                      f"text-format tensorflow.serving.ModelServerConfig: {err}") from None
    return from_proto(config, relative_to)


def load_file(path: str | Path) -> list[ModelConfig]:
    """``--model_config_file``: relative base paths are taken relative to the file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"cannot read the model config {path}: {err}") from err
    return parse_text(text, str(path), path.resolve().parent)
