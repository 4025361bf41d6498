"""Where a lone gRPC request's time goes: the graph, the server's own Python around it, and the gRPC round trip
(grpcio's threaded server and its asyncio one), measured interleaved in one run, as latency and as CPU per call.

Usage: python bench/serving_breakdown.py [--run-dir runs/demo] [--work /tmp/bench-serving] [--rounds 3]
       [--seconds 2] [--kind id+history|user_text] [--server NAME='FLAGS' ...]

Uses (and makes, as bench/serving_latency.py does) the ScaNN export in ``WORK/models/shop/1`` and sends the same
one-row ``serving_default`` request as that benchmark, one call at a time (concurrency 1). Each round measures,
for ``--seconds`` each, in this order:

- **graph**: the signature called in this process (bench/serving_latency.py's in-process reference);
- **graph in a Session**: the same signature as the server runs it (serving/session.py: the MetaGraph in a
  Session, feeds and fetches bound once), on the validated inputs;
- **servicer**: ``PredictionService.Predict`` called in this process on a real ``ModelServer``: request proto →
  numpy → checks → graph → response proto, everything the server does except the transport;
- **echo (threaded / asyncio)**: the official ``PredictionServiceStub`` against a bare gRPC server in another
  process (``grpc.server`` with a thread pool, or ``grpc.aio.server`` answering on its event loop) that answers
  every Predict with the serialized response of the real one, without reading the request: grpcio's round trip
  (client and server) with the same bytes and nothing else;
- **served**: the same stub against ``twotower serve``, and against one more server per ``--server NAME='FLAGS'``.

For each: the p50 (median over the rounds) and the CPU time per call of the process that answers (this one for
graph and servicer, the server otherwise), which a busy machine disturbs far less than the latency. Printed with
the derived shares: the server's Python work (servicer − graph) and the transport (served − servicer), next to
the echo round trip. Nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving_latency import (  # noqa: E402 - after the path set-up above
    MODEL,
    VERSIONS,
    export,
    grpc_call,
    models_config,
    predict_request,
    request_inputs,
    start_server,
    user_and_history,
)

TRANSPORTS = ("threaded", "asyncio")   # the echo servers: grpc.server, grpc.aio.server


class InProcessCall:
    """The servicer's view of a call made in this process: no deadline; a failure is raised, not sent."""

    def time_remaining(self) -> None:
        return None

    def abort(self, code, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(call, seconds: float, pid: int) -> tuple[float, float]:
    """Calls ``call`` back to back for ``seconds`` after a short warm-up: the median latency and the CPU time of
    process ``pid`` (the one that answers) per call, both in ms."""
    until = time.monotonic() + 0.3
    while time.monotonic() < until:
        call()
    times = []
    cpu = cpu_seconds(pid)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        started = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - started)
    return statistics.median(times) / 1e6, (cpu_seconds(pid) - cpu) * 1e3 / len(times)


# -- the echo server (run as a subprocess: --echo TRANSPORT --port N --response FILE) ------------------------------

def echo_server(transport: str, port: int, response: bytes) -> None:
    """A PredictionService/Predict that answers ``response`` (bytes, no (de)serialization) until killed."""
    from concurrent import futures

    import grpc

    def answer(_request: bytes, _context) -> bytes:
        return response

    async def answer_async(_request: bytes, _context) -> bytes:
        return response

    def handlers(function) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            "tensorflow.serving.PredictionService", {"Predict": grpc.unary_unary_rpc_method_handler(function)})

    if transport == "threaded":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), handlers=[handlers(answer)])
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        print("ready", flush=True)
        server.wait_for_termination()
        return

    async def serve() -> None:
        server = grpc.aio.server(handlers=[handlers(answer_async)])
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(serve())


def start_echo(transport: str, response: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, __file__, "--echo", transport, "--port", str(port), "--response",
                                str(response)], stdout=subprocess.PIPE, text=True)
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the {transport} echo server did not start (status {process.wait()})")
    return process, f"127.0.0.1:{port}"


# -- the run -----------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "demo"))
    parser.add_argument("--work", default="/tmp/bench-serving")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--kind", choices=["id+history", "user_text"], default="id+history")
    parser.add_argument("--server", action="append", default=[], metavar="NAME=FLAGS",
                        help="one more served row: twotower serve with these flags (space-separated), repeatable")
    parser.add_argument("--echo", choices=TRANSPORTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--response", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo:
        echo_server(args.echo, args.port, Path(args.response).read_bytes())
        return 0

    import numpy as np
    import tensorflow as tf

    from export.loaded import LoadedVersion
    from serving.config import ModelConfig
    from serving.core import ModelServer
    from serving.grpc_service import PredictionService
    from serving.metrics import Metrics

    work, run_dir = Path(args.work), Path(args.run_dir)
    work.mkdir(parents=True, exist_ok=True)
    base = work / "models" / MODEL
    export(run_dir, base, 10)
    version = VERSIONS["scann"]
    user, history = user_and_history(run_dir)
    inputs = request_inputs(user, history, args.kind)

    loaded = LoadedVersion(base / str(version))
    function = loaded.loaded.signatures["serving_default"]
    feeds = {**{key: tf.constant(value) for key, value in loaded.defaults("serving_default").items()},
             **{key: tf.constant(value) for key, value in inputs.items()}}
    core = ModelServer([ModelConfig(MODEL, str(base), "specific", versions=(version,))], Metrics(), poll_seconds=0)
    core.start()
    servable = core.manager.acquire(MODEL, version)   # the server's own loaded version, held until the end
    session_signature = servable.signatures["serving_default"]
    ready = session_signature.validate({key: np.asarray(value, dtype=object) for key, value in inputs.items()})
    servicer = PredictionService(core)
    request = predict_request(version, inputs)
    answer = work / "predict_response.bin"
    answer.write_bytes(servicer.Predict(request, InProcessCall()).SerializeToString())

    here = os.getpid()
    calls = {"graph": (lambda: function(**feeds)["item_ids"].numpy(), here),   # name → (call, answering pid)
             "graph in a Session": (lambda: session_signature.run(ready)["item_ids"], here),
             "servicer": (lambda: servicer.Predict(request, InProcessCall()), here)}
    servers: dict[str, list[str]] = {"served": []}
    servers.update((f"served ({name})", flags.split()) for name, _, flags in
                   (item.partition("=") for item in args.server))
    processes = []
    config = models_config(work / "models-breakdown.config", base, f"specific {{ versions: {version} }}")
    try:
        for transport in TRANSPORTS:
            process, target = start_echo(transport, answer)
            processes.append(process)
            calls[f"echo ({transport})"] = (grpc_call(target, version, inputs), process.pid)
        for name, flags in servers.items():
            server = start_server(work, f"breakdown-{len(processes)}", config, *flags)
            processes.append(server)
            calls[name] = (grpc_call(server.target, version, inputs), server.process.pid)
        rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
        loads = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            for name, (call, pid) in calls.items():
                rounds[name].append(measure(call, args.seconds, pid))
                loads.append(os.getloadavg()[0])
    finally:
        for process in processes:
            if isinstance(process, subprocess.Popen):
                process.kill()
                process.wait()
            else:
                process.stop()
        servable.release()
        core.stop()
    p50 = {name: statistics.median(r[0] for r in values) for name, values in rounds.items()}
    cpu = {name: statistics.median(r[1] for r in values) for name, values in rounds.items()}
    print(f"\n{args.kind} request, ScaNN, concurrency 1; {args.rounds} rounds of {args.seconds:g} s; load average "
          f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")
    print("| measured | p50 ms | p50 / graph | CPU ms per call (answering process) | p50 of each round |\n"
          "|---|---:|---:|---:|---|")
    for name in calls:
        print(f"| {name} | {p50[name]:.3f} | {p50[name] / p50['graph']:.2f}x | {cpu[name]:.3f} | "
              f"{', '.join(f'{r[0]:.2f}' for r in rounds[name])} |")
    print(f"\nthe server's Python around the graph (servicer - graph): {p50['servicer'] - p50['graph']:+.3f} ms p50, "
          f"{cpu['servicer'] - cpu['graph']:+.3f} ms CPU")
    for name in servers:
        print(f"{name}: served - servicer {p50[name] - p50['servicer']:+.3f} ms p50, "
              f"{cpu[name] - cpu['servicer']:+.3f} ms CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
