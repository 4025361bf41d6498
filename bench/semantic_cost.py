"""What the semantic channel costs a served request: in-process latency with the channel against without it.

The same request on exports of two runs that differ only in ``model.semantic_channel``.

Usage: python bench/semantic_cost.py --on RUN --off RUN [--work /tmp/bench-semantic] [--rounds 8] [--out FILE]

e.g. ``--on runs/demo`` (``make demo``) and ``--off runs/demo-off`` from ``twotower train --config
configs/default.yaml --set model.semantic_channel=false --run-dir runs/demo-off``.

Why it exists: the channel appends the item's unit text vector to its learned one (64 + 384 numbers with MiniLM)
and the query's scaled text vector to the user's, so every served request scores a wider index; an id+history
request also looks up its history items' text vectors. docs/quality.md measures what the channel is worth; this
measures what it costs, on the signature a server calls (``serving_default``, the SignatureDef's defaults filled
in as TF Serving fills them), for both indexes and both request kinds of bench/serving_latency.py (``id+history``:
no BERT run; ``user_text``: the text tower runs). Each run is exported once per index into
``WORK/<on|off>/shop`` (version 1 ScaNN, version 2 brute force) unless there already. The four exports are timed
in interleaved rounds (one request at a time, back to back, after a warm-up), so that a machine whose speed drifts
moves all of them alike; p50 and p99 over all rounds, and the on/off ratio of the p50s. Writes its section (``TITLE``)
of ``--out`` (docs/benchmarks.md).
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
from bench.serving_latency import MODEL, VERSIONS, export, request_inputs, user_and_history  # noqa: E402, I001
from bench.report import write_section  # noqa: E402

import numpy as np  # noqa: E402

KINDS = ("id+history", "user_text")
WARMUP_CALLS = 20
ROUND_SECONDS = {"id+history": 1.0, "user_text": 1.5}
TITLE = "The semantic channel's serving cost (bench/semantic_cost.py)"


def signature_calls(base: Path, user: str, history: list[str]) -> tuple[dict, list]:
    """{(index, kind): a no-argument call of the export's serving_default on that request} for one model base, and
    the loaded versions (kept alive while their functions are called)."""
    import tensorflow as tf

    from export.loaded import LoadedVersion

    calls, versions = {}, []
    for index, version in VERSIONS.items():
        loaded = LoadedVersion(base / str(version))
        versions.append(loaded)
        function = loaded.loaded.signatures["serving_default"]
        defaults = {key: tf.constant(value) for key, value in loaded.defaults("serving_default").items()}
        for kind in KINDS:
            inputs = {**defaults, **{k: tf.constant(v) for k, v in request_inputs(user, history, kind).items()}}
            calls[(index, kind)] = lambda f=function, i=inputs: f(**i)["item_ids"].numpy()
    return calls, versions


def timed_rounds(calls: dict, rounds: int) -> dict:
    """{key: latencies in ms} of every call of ``calls``, timed in ``rounds`` interleaved rounds."""
    times: dict = {key: [] for key in calls}
    for done in range(rounds):
        for key, call in calls.items():
            for _ in range(WARMUP_CALLS):
                call()
            stop = time.monotonic() + ROUND_SECONDS[key[-1]]
            while time.monotonic() < stop:
                started = time.perf_counter()
                call()
                times[key].append((time.perf_counter() - started) * 1000.0)
        print(f"round {done + 1}/{rounds} done", flush=True)
    return times


def report(times: dict, on: Path, off: Path, rounds: int, elapsed: float, loads: tuple[float, float]) -> str:
    rows = ["| index | request | p50 ms, channel off | p50 ms, on | on / off | p99 ms, off | p99 ms, on | calls each |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for index in VERSIONS:
        for kind in KINDS:
            off_ms, on_ms = np.array(times[("off", index, kind)]), np.array(times[("on", index, kind)])
            rows.append(f"| {index} | {kind} | {np.median(off_ms):.2f} | {np.median(on_ms):.2f} | "
                        f"{np.median(on_ms) / np.median(off_ms):.2f}x | {np.percentile(off_ms, 99):.2f} | "
                        f"{np.percentile(on_ms, 99):.2f} | {min(len(off_ms), len(on_ms))} |")
    return (f"`python bench/semantic_cost.py --on {on} --off {off} --rounds {rounds}` on {os.cpu_count()} cores "
            f"({platform.machine()}), {datetime.date.today().isoformat()}: {elapsed / 60:.1f} minutes, 1-minute "
            f"load average {loads[0]:.1f} before and {loads[1]:.1f} after. The two runs differ only in "
            "`--set model.semantic_channel=true|false` (the off run: `twotower train --config <the on run's config> "
            "--set model.semantic_channel=false`); one request at a time, in-process, on `serving_default`, the four "
            "exports timed in interleaved rounds.\n\n"
            + "\n".join(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--on", required=True, help="trained run with model.semantic_channel: true")
    parser.add_argument("--off", required=True, help="the same run trained with model.semantic_channel: false")
    parser.add_argument("--work", default="/tmp/bench-semantic")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    began, load_before = time.time(), os.getloadavg()[0]
    runs = {"on": Path(args.on), "off": Path(args.off)}
    user, history = user_and_history(runs["on"])
    calls, versions = {}, []
    for name, run_dir in runs.items():
        base = Path(args.work) / name / MODEL
        export(run_dir, base, args.k)
        named, loaded = signature_calls(base, user, history)
        calls.update({(name, *key): call for key, call in named.items()})
        versions.extend(loaded)
    times = timed_rounds(calls, args.rounds)
    body = report(times, runs["on"], runs["off"], args.rounds, time.time() - began, (load_before, os.getloadavg()[0]))
    print(body, flush=True)
    write_section(Path(args.out), TITLE, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
