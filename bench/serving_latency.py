"""Serving latency and throughput: gRPC and REST, loaded from separate client processes, against the same SavedModel
called in-process.

Usage: python bench/serving_latency.py [--run-dir runs/demo] [--work /tmp/bench-serving] [--out docs/benchmarks.md]
       [--repeat 2] [--processes 2] [--tuned-flags '...'] [--quick] [--no-compiled]

Exports the run twice into ``WORK/models/shop`` (version 1 = ScaNN, version 2 = brute force) unless those
versions exist, and measures one-row ``serving_default`` requests of two kinds: ``id+history`` (a known user id, a
5-item history, empty ``user_text``: no BERT run) and ``user_text`` (the same plus a sentence: the text tower
runs). Each cell runs for a fixed time after a warm-up, and reports p50/p99 latency, QPS and errors:

- in-process: ``tf.saved_model.load`` + the signature called from threads of this process: the reference;
- gRPC (official ``PredictionServiceStub``, one channel per thread) and REST (``http.client``, one keep-alive
  connection per thread), from client **processes** started once for the whole run (concurrency 1: one process;
  concurrency 32: 4 processes x 8 threads), so that the client's GIL does not cap what is measured;
- a second opinion from compiled load generators, where they are installed (Debian's ``nghttp2-client`` and
  ``wrk``; ``--no-compiled`` leaves them out): ``h2load`` sends the same Predict framed as a gRPC message over
  HTTP/2 (it cannot read gRPC's status trailer, so errors are counted from the server's metrics) and ``wrk`` the
  same REST body, to the default server, right after the Python clients' cells;
- servers: ``default`` (``twotower serve`` with no tuning flag) and ``tuned`` (the flags docs/serving.md
  recommends for a latency-sensitive CPU service: ``--num_serving_processes`` = cores), both with both versions
  loaded; server RSS is read from /proc (every process of the server), and once more with one version loaded.

The key rows (concurrency 1 and 32, in-process vs gRPC vs REST) are measured ``--repeat`` times, interleaved, and
the median is reported with the spread, since the machine may be shared. Writes the "Serving" section of
docs/benchmarks.md and docs/serving_latency.png. ``--quick`` (to weigh one flag against another, e.g.
``--processes 1 --tuned-flags '--enable_batching ...'``): ScaNN and id+history only, one repeat, no memory
rows, and only printed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import datetime
import http.client
import json
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")   # as the server sets it (serving/server.py)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.run import RunDir  # noqa: E402 - after the path and environment set-up above
from twotower import layout  # noqa: E402

TITLE = "Serving (bench/serving_latency.py)"
MODEL = "shop"
VERSIONS = {"scann": 1, "brute-force": 2}
CLIENT_PROCESSES = 4                # at concurrency 32: 4 processes x 8 threads
WARMUP_SECONDS = 1.5
CELL_SECONDS = {1: 4.0, 32: 6.0}
COMPILED = {"gRPC (h2load)": "h2load", "REST (wrk)": "wrk"}   # the compiled clients' rows and their tools
USER_TEXT = "a warm waterproof jacket for hiking in the rain"


# -- requests ----------------------------------------------------------------------------------------------------

def request_inputs(user: str, history: list[str], kind: str) -> dict:
    return {"user_id": [user], "history": [history], "user_text": [USER_TEXT if kind == "user_text" else ""]}


def in_process_call(loaded, inputs: dict):
    """A no-argument call of ``loaded``'s (an export.loaded.LoadedVersion) ``serving_default`` on ``inputs``, the
    in-process reference. The SignatureDef's defaults are filled in as TF Serving fills them: a signature function
    loaded in-process has no optional arguments, so the reference call passes them."""
    import tensorflow as tf

    function = loaded.loaded.signatures["serving_default"]
    arguments = {**{key: tf.constant(value) for key, value in loaded.defaults("serving_default").items()},
                 **{key: tf.constant(value) for key, value in inputs.items()}}

    def call() -> None:
        function(**arguments)["item_ids"].numpy()
    return call


def predict_request(version: int, inputs: dict):
    """The one-row PredictRequest of ``request_inputs``, as a client builds it."""
    from tensorflow_serving.apis import predict_pb2

    from serving.client import string_tensor

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.version.value = version
    request.model_spec.signature_name = "serving_default"
    for name, value in inputs.items():
        shape = [1, len(value[0])] if isinstance(value[0], list) else [1]
        flat = value[0] if isinstance(value[0], list) else value
        request.inputs[name].CopyFrom(string_tensor(flat, shape))
    return request


def grpc_call(target: str, version: int, inputs: dict):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = predict_request(version, inputs)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))

    def call():
        response = stub.Predict(request, timeout=30)
        if "item_ids" not in response.outputs:
            raise RuntimeError("no item_ids in the response")
    return call


def rest_call(port: int, version: int, inputs: dict):
    body = json.dumps({"signature_name": "serving_default",
                       "instances": [{name: value[0] for name, value in inputs.items()}]}).encode()
    path = f"/v1/models/{MODEL}/versions/{version}:predict"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call():
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
    return call


def h2load_task(target: str, version: int, inputs: dict, c: int, seconds: float, folder: Path) -> dict:
    """gRPC Predict from h2load (nghttp2's compiled HTTP/2 load generator): the serialized request framed as a
    gRPC message, ``c`` connections with one call in flight each. h2load cannot read gRPC's status trailer, so
    errors are counted from the server's metrics (``served_errors``)."""
    message = predict_request(version, inputs).SerializeToString()
    body, log = folder / "h2load-request.bin", folder / "h2load.log"
    body.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
    log.unlink(missing_ok=True)
    began = time.time()
    subprocess.run(["h2load", "-c", str(c), "-m", "1", "-t", str(min(c, CLIENT_PROCESSES)),
                    "-D", f"{seconds * 1000:.0f}ms", "--warm-up-time", f"{WARMUP_SECONDS * 1000:.0f}ms",
                    "-d", str(body), "--log-file", str(log),
                    "-H", "content-type: application/grpc", "-H", "te: trailers",
                    f"http://{target}/tensorflow.serving.PredictionService/Predict"],
                   check=True, capture_output=True)
    times, errors = [], []
    for line in log.read_text().splitlines():
        start_us, status, duration_us = (int(x) for x in line.split("\t"))
        if start_us / 1e6 < began + WARMUP_SECONDS:
            continue
        if status != 200:
            errors.append(f"HTTP {status}")
        else:
            times.append(duration_us / 1e6)
    return {"times": times, "errors": errors}


def wrk_task(port: int, version: int, inputs: dict, c: int, seconds: float, folder: Path) -> dict:
    """REST predict from wrk (a compiled HTTP/1.1 load generator), ``c`` keep-alive connections: a warm-up run,
    then the measured one; p50/p99 from wrk's own latency histogram."""
    script = folder / "wrk-predict.lua"
    body = json.dumps({"signature_name": "serving_default",
                       "instances": [{name: value[0] for name, value in inputs.items()}]})
    script.write_text(f"wrk.method = 'POST'\nwrk.body = {json.dumps(body)}\n"
                      "wrk.headers['Content-Type'] = 'application/json'\n"
                      "done = function(summary, latency, requests)\n"
                      "  io.write(string.format('RESULT %d %d %d %d %d\\n', summary.requests, summary.errors.status"
                      " + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,"
                      " latency:percentile(50), latency:percentile(99), summary.duration))\nend\n")
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL}/versions/{version}:predict"
    threads = str(min(c, CLIENT_PROCESSES))
    for duration in (WARMUP_SECONDS, seconds):   # wrk takes whole seconds
        out = subprocess.run(["wrk", "-t", threads, "-c", str(c), "-d", f"{math.ceil(duration)}s", "-s", str(script),
                              url],
                             check=True, capture_output=True, text=True).stdout
    requests, errors, p50_us, p99_us, duration_us = (int(x) for x in out.split("RESULT")[1].split())
    return {"n": requests, "errors": errors, "first_error": "", "p50": p50_us / 1e3, "p99": p99_us / 1e3,
            "qps": requests / (duration_us / 1e6)}


def run_threads(callers: list, start_at: float, stop_at: float) -> dict:
    """Each caller in its own thread: warm-up until ``start_at``, then calls until ``stop_at`` (monotonic clock,
    shared by every process on the machine); latencies in seconds and errors."""
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def work(call):
        mine, failed = [], []
        while time.monotonic() < start_at:
            try:
                call()
            except Exception as err:  # noqa: BLE001 - a failed warm-up shows up in the measured calls too
                failed.append(f"warm-up: {type(err).__name__}: {err}"[:200])
                time.sleep(0.05)
        while True:
            t0 = time.monotonic()
            if t0 >= stop_at:
                break
            try:
                call()
            except Exception as err:  # noqa: BLE001 - counted and reported, the run goes on
                failed.append(f"{type(err).__name__}: {err}"[:200])
                continue
            mine.append(time.monotonic() - t0)
        with lock:
            times.extend(mine)
            errors.extend(e for e in failed if not e.startswith("warm-up"))

    threads = [threading.Thread(target=work, args=(call,), daemon=True) for call in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"times": times, "errors": errors}


def client_task(protocol: str, address: str, version: int, inputs: dict, threads: int, start_at: float,
                stop_at: float) -> dict:
    """Runs in a client process: ``threads`` connections of its own."""
    if protocol == "gRPC":
        callers = [grpc_call(address, version, inputs) for _ in range(threads)]
    else:
        callers = [rest_call(int(address), version, inputs) for _ in range(threads)]
    return run_threads(callers, start_at, stop_at)


def client_init() -> None:
    import tensorflow_serving.apis.prediction_service_pb2_grpc  # noqa: F401 - imported before the clock starts


def summary(times: list[float], errors: list[str], seconds: float) -> dict:
    import numpy as np

    ms = np.array(times) * 1e3 if times else np.array([float("nan")])
    return {"n": len(times), "errors": len(errors), "first_error": errors[0] if errors else "",
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "qps": len(times) / seconds}


# -- servers -----------------------------------------------------------------------------------------------------

def start_server(work: Path, name: str, config: Path, *flags: str):
    sys.path.append(str(ROOT / "tests"))
    from serving_process import ServerProcess  # the tests' helper: free loopback ports, waits for "ready"

    return ServerProcess(work, name, "--model_config_file", str(config), "-q", *flags).wait()


def process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [pid]
    for child in (children.read_text().split() if children.exists() else []):
        found += process_tree(int(child))
    return found


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (the serving workers), MiB."""
    total = 0
    for each in process_tree(pid):
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def models_config(path: Path, base: Path, versions: str) -> Path:
    path.write_text(f'model_config_list {{\n  config {{\n    name: "{MODEL}"\n    base_path: "{base}"\n'
                    f'    model_platform: "tensorflow"\n    model_version_policy {{ {versions} }}\n  }}\n}}\n')
    return path


# -- the run -----------------------------------------------------------------------------------------------------

def export(run_dir: Path, base: Path, k: int) -> None:
    for index, version in VERSIONS.items():
        if (base / str(version)).is_dir():
            continue
        print(f"exporting {run_dir} ({index}) → {base}", flush=True)
        subprocess.run([sys.executable, "-m", "twotower.cli", "export", "--run-dir", str(run_dir), "--base-path",
                        str(base), "--index", index, "--k", str(k)], check=True, cwd=ROOT)
    for index, version in VERSIONS.items():
        card = json.loads(layout.asset(base / str(version), layout.MODEL_CARD).read_text())
        kind = card.get("index", {}).get("type", "").replace("_", "-")
        assert kind == index, f"{base}/{version} holds a {kind} index, expected {index}"


def user_and_history(run_dir: Path) -> tuple[str, list[str]]:
    """The first user with at least eight interactions in the run's world, and their last five items; for a run on
    data other than a generated world's files (a research dataset), the first of the run's sample test queries
    with five history items."""
    import yaml

    from training.artifacts import load_sample_queries

    run = RunDir(run_dir)
    config = yaml.safe_load(run.config.read_text())
    world = Path(config["data"]["path"])
    if not world.is_absolute():   # relative to the checkout that trained the run (this one, or the run's own)
        world = next((root / world for root in (ROOT, *run_dir.resolve().parents) if (root / world).is_dir()),
                     ROOT / world)
    if not (world / "interactions.csv").exists():
        users, histories = load_sample_queries(run.artifacts) or ([], [])
        for user, history in zip(users, histories):
            items = [h for h in history if h]
            if len(items) >= 5:
                return user, items[-5:]
        raise SystemExit(f"{run_dir}: no sample test query with five history items (artifacts/sample_queries.json)")
    seen: dict[str, list[str]] = {}
    with open(world / "interactions.csv", newline="") as f:
        for row in csv.DictReader(f):
            seen.setdefault(row["user_id"], []).append(row["item_id"])
            if len(seen[row["user_id"]]) >= 8:
                return row["user_id"], seen[row["user_id"]][-5:]
    user = max(seen, key=lambda u: len(seen[u]))
    return user, (seen[user] + [""] * 5)[-5:]


class Bench:
    def __init__(self, base: Path, user: str, history: list[str]):
        self.base = base
        self.user, self.history = user, history
        self.rows: list[dict] = []
        self.loads = [os.getloadavg()[0]]
        self.pool = concurrent.futures.ProcessPoolExecutor(
            CLIENT_PROCESSES, mp_context=multiprocessing.get_context("spawn"), initializer=client_init)
        list(self.pool.map(time.sleep, [0.1] * CLIENT_PROCESSES))   # the client processes start (and import) now
        self.loaded: dict = {}   # index → export.loaded.LoadedVersion

    def record(self, server: str, protocol: str, index: str, kind: str, c: int, result: dict) -> None:
        row = {"server": server, "protocol": protocol, "index": index, "kind": kind, "c": c, **result}
        self.rows.append(row)
        self.loads.append(os.getloadavg()[0])
        print(f"{server:9s} {protocol:10s} {index:11s} {kind:10s} c={c:<2d}: p50 {row['p50']:.2f} p99 "
              f"{row['p99']:.2f} ms, {row['qps']:.0f} q/s (n={row['n']}, errors={row['errors']}) "
              f"{row['first_error']}", flush=True)

    def in_process(self, index: str, kind: str, c: int) -> None:
        from export.loaded import LoadedVersion

        if index not in self.loaded:   # the ScaNN and TF Text kernels registered, as the server registers them
            self.loaded[index] = LoadedVersion(self.base / str(VERSIONS[index]))
        call = in_process_call(self.loaded[index], request_inputs(self.user, self.history, kind))
        now = time.monotonic()
        start_at, stop_at = now + WARMUP_SECONDS, now + WARMUP_SECONDS + CELL_SECONDS[c]
        result = run_threads([call] * c, start_at, stop_at)
        self.record("-", "in-process", index, kind, c, summary(result["times"], result["errors"], CELL_SECONDS[c]))

    def remote(self, server_name: str, server, protocol: str, index: str, kind: str, c: int) -> None:
        address = server.target if protocol == "gRPC" else str(server.rest_port)
        processes = 1 if c == 1 else CLIENT_PROCESSES
        now = time.monotonic()
        start_at, stop_at = now + WARMUP_SECONDS + 0.5, now + WARMUP_SECONDS + 0.5 + CELL_SECONDS[c]
        inputs = request_inputs(self.user, self.history, kind)
        futures = [self.pool.submit(client_task, protocol, address, VERSIONS[index], inputs, c // processes,
                                    start_at, stop_at) for _ in range(processes)]
        times, errors = [], []
        for future in futures:
            part = future.result()
            times += part["times"]
            errors += part["errors"]
        self.record(server_name, protocol, index, kind, c, summary(times, errors, CELL_SECONDS[c]))

    def compiled(self, server_name: str, server, protocol: str, index: str, kind: str, c: int) -> None:
        """The same cell from a compiled load generator: h2load (gRPC) or wrk (REST)."""
        inputs = request_inputs(self.user, self.history, kind)
        if protocol == "gRPC (h2load)":
            before = served_errors(server)
            calls = h2load_task(server.target, VERSIONS[index], inputs, c, CELL_SECONDS[c], self.base.parent)
            failed = int(served_errors(server) - before)
            result = summary(calls["times"], calls["errors"] + ["a gRPC error status (server metrics)"] * failed,
                             CELL_SECONDS[c])
        else:
            result = wrk_task(server.rest_port, VERSIONS[index], inputs, c, CELL_SECONDS[c], self.base.parent)
        self.record(server_name, protocol, index, kind, c, result)


def served_errors(server) -> float:
    """gRPC requests the server answered with another code than OK, from its Prometheus metrics (one process)."""
    import urllib.request

    with urllib.request.urlopen(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("twotower_requests_total{") and 'protocol="grpc"' in line and 'code="OK"' not in line)


def median_rows(rows: list[dict]) -> list[dict]:
    """One row per cell: the median p50/p99/QPS over its repeats, with the spread of p50 and QPS."""
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        cells.setdefault((row["server"], row["protocol"], row["index"], row["kind"], row["c"]), []).append(row)
    merged = []
    for group in cells.values():
        merged.append({**group[0], "repeats": len(group),
                       **{f: statistics.median(r[f] for r in group) for f in ("p50", "p99", "qps")},
                       "n": sum(r["n"] for r in group), "errors": sum(r["errors"] for r in group),
                       "p50_range": (min(r["p50"] for r in group), max(r["p50"] for r in group)),
                       "qps_range": (min(r["qps"] for r in group), max(r["qps"] for r in group))})
    return merged


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    paths = [("-", "in-process"), ("default", "gRPC"), ("default", "REST"), ("tuned", "gRPC"), ("tuned", "REST")]
    groups = [(index, kind) for index in VERSIONS for kind in ("id+history", "user_text")]
    width = 0.8 / len(paths)
    for i, (server, protocol) in enumerate(paths):
        label = protocol if server == "-" else f"{protocol} ({server})"
        for ax, c, field in ((left, 1, "p50"), (right, 32, "qps")):
            values = []
            for index, kind in groups:
                cell = [r for r in rows if (r["server"], r["protocol"], r["index"], r["kind"], r["c"])
                        == (server, protocol, index, kind, c)]
                values.append(cell[0][field] if cell else 0)
            ax.bar([g + i * width for g in range(len(groups))], values, width, label=label, color=f"C{i}")
    for ax, title in ((left, "p50 latency at concurrency 1 (ms)"), (right, "QPS at concurrency 32")):
        ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], [f"{i}\n{k}" for i, k in groups])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="trained run (default runs/demo, else a quick smoke run)")
    parser.add_argument("--work", default="/tmp/bench-serving")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2, help="times each key cell is measured (median reported)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="--num_serving_processes of the tuned server (default: the cores)")
    parser.add_argument("--tuned-flags", default="", help="more flags for the tuned server, space-separated")
    parser.add_argument("--no-compiled", action="store_true", help="leave out the h2load and wrk rows")
    parser.add_argument("--quick", action="store_true", help="ScaNN, id+history, once; printed, not written")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "serving_latency.png"))
    args = parser.parse_args()
    began = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "twotower.cli"]
    run_dir = Path(args.run_dir) if args.run_dir else ROOT / "runs" / "demo"
    if not RunDir(run_dir).checkpoints.is_dir():   # no demo run: a small smoke run, quickly
        run_dir = work / "run"
        if not RunDir(run_dir).checkpoints.is_dir():
            subprocess.run([*cli, "generate", "--out", str(work / "world"), "--users", "700", "--items", "500",
                            "--seed", "7"], check=True, cwd=ROOT)
            subprocess.run([*cli, "train", "--config", "configs/smoke.yaml", "--set", f"data.path={work / 'world'}",
                            "--set", "training.epochs=2", "--run-dir", str(run_dir)], check=True, cwd=ROOT)
    base = work / "models" / MODEL
    export(run_dir, base, args.k)
    all_versions = models_config(work / "models.config", base, "all {}")
    one_version = models_config(work / "models-one.config", base, "specific { versions: 1 }")
    user, history = user_and_history(run_dir)
    card = json.loads(layout.asset(base / "1", layout.MODEL_CARD).read_text())
    encoder = card.get("training_config", {}).get("model", {}).get("encoder", "?")
    n_items = card.get("items", "?")
    print(f"model {run_dir} (encoder {encoder}, {n_items} items, K={args.k}); user {user}, history {history}",
          flush=True)
    bench = Bench(base, user, history)
    tuned_flags = ["--num_serving_processes", str(args.processes), *args.tuned_flags.split()]
    memory: dict[str, float] = {}

    if not args.quick:
        server = start_server(work, "one-version", one_version)
        memory["default, version 1 (ScaNN) only"] = rss_mib(server.process.pid)
        server.stop()
    default = start_server(work, "default", all_versions)
    memory["default, both versions"] = rss_mib(default.process.pid)
    tuned = start_server(work, "tuned", all_versions, *tuned_flags)
    memory[f"tuned ({args.processes} processes), both versions"] = rss_mib(tuned.process.pid)
    servers = {"default": default, "tuned": tuned}
    # the second opinion, where the compiled load generators are installed (Debian: nghttp2-client, wrk)
    compiled = [protocol for protocol, tool in COMPILED.items() if shutil.which(tool) and not args.no_compiled]
    try:
        for _ in range(1 if args.quick else args.repeat):
            for index in (["scann"] if args.quick else VERSIONS):
                for kind in (["id+history"] if args.quick else ("id+history", "user_text")):
                    for c in (1, 32):
                        bench.in_process(index, kind, c)
                        for name, server in servers.items():
                            for protocol in ("gRPC", "REST"):
                                bench.remote(name, server, protocol, index, kind, c)
                        for protocol in compiled:
                            bench.compiled("default", default, protocol, index, kind, c)
    finally:
        for name, server in servers.items():
            print(f"{name} server stopped with status {server.stop()}", flush=True)
        bench.pool.shutdown()
    elapsed = time.time() - began
    rows = median_rows(bench.rows)
    if args.quick:
        print(json.dumps(memory), flush=True)
        return 0
    plot(rows, Path(args.plot))
    write_report(args, rows, memory, bench.loads, elapsed, run_dir, encoder, n_items, tuned_flags)
    return 0


def write_report(args, rows: list[dict], memory: dict, loads: list[float], elapsed: float, run_dir: Path,
                 encoder: str, n_items, tuned_flags: list[str]) -> None:
    import tensorflow as tf

    from bench.report import write_section

    def find(server, protocol, index, kind, c):
        return next(r for r in rows if (r["server"], r["protocol"], r["index"], r["kind"], r["c"])
                    == (server, protocol, index, kind, c))

    cores = os.cpu_count()
    table = ["| index | request | server | path | c | requests | p50 ms (range) | p99 ms | QPS (range) | errors | "
             "vs in-process |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (list(VERSIONS).index(r["index"]), r["kind"], r["c"], r["server"] != "-",
                                         r["server"], r["protocol"])):
        ref = find("-", "in-process", r["index"], r["kind"], r["c"])
        ratio = (f"{r['p50'] / ref['p50']:.2f}x p50" if r["c"] == 1 else f"{r['qps'] / ref['qps']:.2f}x QPS")
        table.append(f"| {r['index']} | {r['kind']} | {r['server']} | {r['protocol']} | {r['c']} | {r['n']} | "
                     f"{r['p50']:.2f} ({r['p50_range'][0]:.2f}–{r['p50_range'][1]:.2f}) | {r['p99']:.2f} | "
                     f"{r['qps']:.0f} ({r['qps_range'][0]:.0f}–{r['qps_range'][1]:.0f}) | {r['errors']} | "
                     f"{'' if r['server'] == '-' else ratio} |")
    goals = []
    for index in VERSIONS:
        for kind in ("id+history", "user_text"):
            ref1, ref32 = find("-", "in-process", index, kind, 1), find("-", "in-process", index, kind, 32)
            for server in ("default", "tuned"):
                g1, r1 = find(server, "gRPC", index, kind, 1), find(server, "REST", index, kind, 1)
                g32, r32 = find(server, "gRPC", index, kind, 32), find(server, "REST", index, kind, 32)
                goals.append(
                    f"| {index} | {kind} | {server} | {g1['p50'] / ref1['p50']:.2f}x "
                    f"{'✓' if g1['p50'] <= 1.3 * ref1['p50'] else '✗'} | {r1['p50'] / ref1['p50']:.2f}x "
                    f"{'✓' if r1['p50'] <= 1.4 * ref1['p50'] else '✗'} | {g32['qps'] / ref32['qps']:.2f}x "
                    f"{'✓' if g32['qps'] >= 0.8 * ref32['qps'] else '✗'} | {r32['qps'] / ref32['qps']:.2f}x "
                    f"{'✓' if r32['qps'] >= 0.8 * ref32['qps'] else '✗'} | {g32['p99'] / g32['p50']:.1f}x / "
                    f"{r32['p99'] / r32['p50']:.1f}x | {g32['errors'] + r32['errors'] + g1['errors'] + r1['errors']} |")
    memory_lines = [f"| {name} | {mib:,.0f} MiB |" for name, mib in memory.items()]
    second = ""
    if any(r["protocol"] in COMPILED for r in rows):
        lines = ["| index | request | gRPC p50 c=1 | REST p50 c=1 | gRPC QPS c=32 | REST QPS c=32 | "
                 "p99/p50 c=32 (gRPC / REST) | errors |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for index in VERSIONS:
            for kind in ("id+history", "user_text"):
                ref1, ref32 = find("-", "in-process", index, kind, 1), find("-", "in-process", index, kind, 32)
                (g1, r1), (g32, r32) = [[find("default", protocol, index, kind, c) for protocol in COMPILED]
                                        for c in (1, 32)]
                lines.append(f"| {index} | {kind} | {g1['p50'] / ref1['p50']:.2f}x | {r1['p50'] / ref1['p50']:.2f}x | "
                             f"{g32['qps'] / ref32['qps']:.2f}x | {r32['qps'] / ref32['qps']:.2f}x | "
                             f"{g32['p99'] / g32['p50']:.1f}x / {r32['p99'] / r32['p50']:.1f}x | "
                             f"{g1['errors'] + r1['errors'] + g32['errors'] + r32['errors']} |")
        second = f"""
The same targets from compiled load generators against the default server (the second opinion: no Python in the
client): {', '.join(f'`{tool}`' for tool in COMPILED.values())}, {CLIENT_PROCESSES} threads at concurrency 32,
measured right after the Python clients' cells:

{chr(10).join(lines)}
"""
    command = (f"python bench/serving_latency.py --run-dir {run_dir} --work {args.work} --repeat {args.repeat} "
               f"--processes {args.processes}" + (f" --tuned-flags '{args.tuned_flags}'" if args.tuned_flags else ""))
    machine = (f"{platform.machine()}, {cores} CPU cores, Python {platform.python_version()}, "
               f"TensorFlow {tf.__version__}; {datetime.date.today()}")
    busy = (" (other jobs shared the machine: read the ratios, measured a few seconds apart, not the absolute "
            "figures)" if max(loads) > 0.75 * (cores or 1) else "")
    body = f"""
`{command}` ({elapsed / 60:.1f} min). Machine: {machine}.
Load average (1 min) during the run: {min(loads):.1f}–{max(loads):.1f} on {cores} cores{busy}.

Model: `{run_dir}` ({encoder} encoder, {n_items} items), exported twice with K = {args.k} into one base path
(version 1 ScaNN, version 2 brute force). Requests: `serving_default`, one row, user, 5-item history and
`user_text` empty (**id+history**: no BERT run) or a sentence (**user_text**: the text tower runs). Servers:
**default** = `twotower serve` without tuning flags; **tuned** = `{' '.join(tuned_flags)}`. Clients: {CLIENT_PROCESSES}
client processes (concurrency 32: 8 threads each; concurrency 1: one thread), started once, separate from the
server and from the in-process reference (the SavedModel loaded in this process, signature called from threads).
Each cell: {WARMUP_SECONDS} s warm-up, then {CELL_SECONDS[1]:.0f} s (c=1) or {CELL_SECONDS[32]:.0f} s (c=32) of
calls; every cell measured {args.repeat}x, interleaved; the table gives the median and the range.

{chr(10).join(table)}

Targets (issue 13): gRPC p50 ≤ 1.3x and REST p50 ≤ 1.4x in-process at c=1; QPS ≥ 0.8x in-process at c=32 with
p99 ≤ 3x p50 and no errors.

| index | request | server | gRPC p50 c=1 | REST p50 c=1 | gRPC QPS c=32 | REST QPS c=32 | p99/p50 c=32 (gRPC / REST) \
| errors |
|---|---|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(goals)}
{second}
Server memory (resident set, all processes of the server):

| server | RSS |
|---|---:|
{chr(10).join(memory_lines)}

![p50 latency at concurrency 1 and QPS at concurrency 32](serving_latency.png)
"""
    write_section(Path(args.out), TITLE, body)
    print(f"wrote {args.out} and {args.plot} in {elapsed:.0f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
