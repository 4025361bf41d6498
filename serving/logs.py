"""Structured logs: one JSON object per line for every server event (startup, loads, unloads, failures, shutdown).

Why it exists: operators feed server logs to a collector; a JSON line per event with fixed keys (``event``,
``model``, ``version``, ...) can be filtered without parsing prose.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

log = logging.getLogger("twotower.serving.events")


def log_event(event: str, level: int = logging.INFO, **fields: object) -> None:
    record = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "event": event, **fields}
    log.log(level, json.dumps(record, default=str, ensure_ascii=False))
