"""A run directory: what a training job reads back and writes, in one place.

Why it exists: ``train`` (fresh or resumed), ``evaluate`` and later ``export`` all open the same RUN/ layout;
naming its files once keeps them agreeing, and every write to it is atomic (temporary file, then rename), so a
killed job never leaves a half-written state, config or metrics file behind.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from training.config import ConfigError, load_stored
from twotower.layout import write_atomic


class RunDirError(ConfigError):
    """A ``--run-dir`` that does not hold what the command needs (no run, no checkpoint yet)."""


BEST = "best"   # checkpoints/best: the best epoch's weights (a TF checkpoint prefix)


def epoch_checkpoint(epoch: int) -> str:
    """The checkpoint prefix of ``epoch`` under checkpoints/ (kept for resuming)."""
    return f"epoch-{epoch:04d}"


class RunDir:
    """RUN/: config.yaml, state.json, metrics.json, train.log, artifacts/, checkpoints/ (best, epoch-NNNN),
    encoder/, tensorboard/."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    state = property(lambda self: self.path / "state.json")
    metrics = property(lambda self: self.path / "metrics.json")
    log = property(lambda self: self.path / "train.log")
    artifacts = property(lambda self: self.path / "artifacts")
    checkpoints = property(lambda self: self.path / "checkpoints")
    encoder = property(lambda self: self.path / "encoder")
    tensorboard = property(lambda self: self.path / "tensorboard")
    best = property(lambda self: self.checkpoints / BEST)

    def trained(self) -> bool:
        """Whether an epoch has finished (checkpoints/best is written)."""
        return self.best.with_name(f"{BEST}.index").exists()

    def exists(self) -> bool:
        return self.config.exists()

    def read_json(self, path: Path, default=None):
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default

    def write_json(self, path: Path, value) -> None:
        write_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")

    def read_config(self) -> dict:
        """The run's config.yaml, checked against today's schema (an older run's file loads too)."""
        if not self.config.exists():
            raise RunDirError(f"{self.path} is not a run directory (no config.yaml); train one first")
        return load_stored(self.config)


def setup_logging(log_file: Path | None, verbose: bool = False) -> None:
    """Messages to stderr and, for a run, appended to RUN/train.log (the record of drops and warnings)."""
    root = logging.getLogger("twotower")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(console)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.propagate = False
