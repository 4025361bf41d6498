"""What a model's channels cost a served request: in-process latency of two runs that differ in their channels.

The same request on exports of two runs of one world whose ``model`` settings differ (the report lists how).

Usage: python bench/semantic_cost.py --on RUN --off RUN [--work /tmp/bench-semantic] [--rounds 8] [--out FILE]

e.g. ``--on runs/demo`` (``make demo``: the semantic channel, the search words and the item-to-item channel on)
and ``--off runs/demo-off`` from ``twotower train --config configs/default.yaml --set model.semantic_channel=false
--set model.lexical_dim=0 --set model.item_item_rank=0 --run-dir runs/demo-off``; or one channel at a time.

Why it exists: each channel appends numbers to the item and query vectors (the semantic channel the unit text
vector, 384 numbers with MiniLM; the search words ``lexical_dim``; the item-to-item block ``item_item_rank``), so
every served request scores a wider index, and an id+history request looks up more of its history items. The
quality docs measure what the channels are worth; this measures what they cost, on the signature a server calls
(``serving_default``, the SignatureDef's defaults filled in as TF Serving fills them), for both indexes and both
request kinds of bench/serving_latency.py (``id+history``: no BERT run; ``user_text``: the text tower runs). Each
run is exported once per index into ``WORK/<on|off>/shop`` (version 1 ScaNN, version 2 brute force) unless there
already. The four exports are timed in interleaved rounds (one request at a time, back to back, after a warm-up:
the timing of bench/serving_latency.py's in-process reference), so that a machine whose speed drifts moves all of
them alike; p50 and p99 over all rounds, and the on/off ratio of the p50s. Writes its section (``TITLE``) of
``--out`` (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# bench.serving_latency also sets TensorFlow's environment as the server does (before TensorFlow is imported)
from bench.serving_latency import (  # noqa: E402, I001
    MODEL, VERSIONS, WARMUP_SECONDS, export, in_process_call, request_inputs, run_threads, summary, user_and_history)
from bench.report import write_section  # noqa: E402

KINDS = ("id+history", "user_text")
ROUND_SECONDS = {"id+history": 1.0, "user_text": 1.5}
TITLE = "What the model's channels cost a served request (bench/semantic_cost.py)"


def timed_rounds(calls: dict, rounds: int) -> dict:
    """{key: latencies in seconds} of every call of ``calls``, timed one at a time in ``rounds`` interleaved rounds
    (each after its own warm-up), as bench/serving_latency.py times its in-process reference."""
    times: dict = {key: [] for key in calls}
    for done in range(rounds):
        for key, call in calls.items():
            start_at = time.monotonic() + WARMUP_SECONDS
            result = run_threads([call], start_at, start_at + ROUND_SECONDS[key[-1]])
            if result["errors"]:
                raise RuntimeError(f"{key}: {result['errors'][0]}")
            times[key].extend(result["times"])
        print(f"round {done + 1}/{rounds} done", flush=True)
    return times


def model_differences(on: Path, off: Path) -> str:
    """The ``model`` settings in which the two runs' configs differ, as ``key: off → on``."""
    import yaml

    models = [yaml.safe_load((run / "config.yaml").read_text()).get("model", {}) for run in (off, on)]
    keys = sorted(set(models[0]) | set(models[1]))
    return ", ".join(f"`{key}` {models[0].get(key)} → {models[1].get(key)}" for key in keys
                     if models[0].get(key) != models[1].get(key)) or "none"


def scann_params(base: Path) -> str:
    """The ScaNN version's tuned configuration under ``base``, from its model card."""
    import json

    from export.index import describe

    card = json.loads((base / str(VERSIONS["scann"]) / "assets" / "model_card.json").read_text())
    return describe(card["index"]["params"])


def report(times: dict, on: Path, off: Path, rounds: int, elapsed: float, loads: tuple[float, float],
           indexes: dict) -> str:
    rows = ["| index | request | p50 ms, off | p50 ms, on | on / off | p99 ms, off | p99 ms, on | calls each |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for index in VERSIONS:
        for kind in KINDS:
            without, with_ = (summary(times[(name, index, kind)], [], 1.0) for name in ("off", "on"))
            rows.append(f"| {index} | {kind} | {without['p50']:.2f} | {with_['p50']:.2f} | "
                        f"{with_['p50'] / without['p50']:.2f}x | {without['p99']:.2f} | {with_['p99']:.2f} | "
                        f"{min(without['n'], with_['n'])} |")
    shipped = "; ".join(f"{name}: {index}" for name, index in indexes.items())
    return (f"`python bench/semantic_cost.py --on {on} --off {off} --rounds {rounds}` on {os.cpu_count()} cores "
            f"({platform.machine()}), {datetime.date.today().isoformat()}: {elapsed / 60:.1f} minutes, 1-minute "
            f"load average {loads[0]:.1f} before and {loads[1]:.1f} after. The two runs' `model` settings differ "
            f"in {model_differences(on, off)}; one request at a time, in-process, on `serving_default`, the four "
            f"exports timed in interleaved rounds. The ScaNN versions as tuned (model card `index.params`): "
            f"{shipped}.\n\n" + "\n".join(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--on", required=True, help="trained run with model.semantic_channel: true")
    parser.add_argument("--off", required=True, help="the same run trained with model.semantic_channel: false")
    parser.add_argument("--work", default="/tmp/bench-semantic")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    from export.loaded import LoadedVersion

    began, load_before = time.time(), os.getloadavg()[0]
    runs = {"on": Path(args.on), "off": Path(args.off)}
    user, history = user_and_history(runs["on"])
    calls, versions, indexes = {}, [], {}   # the loaded versions are kept alive while their functions are called
    for name, run_dir in runs.items():
        base = Path(args.work) / name / MODEL
        export(run_dir, base, args.k)
        indexes[name] = scann_params(base)
        for index, version in VERSIONS.items():
            loaded = LoadedVersion(base / str(version))
            versions.append(loaded)
            for kind in KINDS:
                calls[(name, index, kind)] = in_process_call(loaded, request_inputs(user, history, kind))
    times = timed_rounds(calls, args.rounds)
    body = report(times, runs["on"], runs["off"], args.rounds, time.time() - began, (load_before, os.getloadavg()[0]),
                  indexes)
    print(body, flush=True)
    write_section(Path(args.out), TITLE, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
