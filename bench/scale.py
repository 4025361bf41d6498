"""Multi-worker training on this machine, and what it projects to on a cluster.

Usage: python bench/scale.py [--users 2000 --items 1500 --batch 512 --epochs 3] [--out docs/scaling.md]
       python bench/scale.py --report docs/scaling.json   (re-render the section from saved measurements)

Runs the same job four ways through the real command line: one process with the per-worker batch b, one process
with 2·b (the same global batch as two workers), two local workers (``twotower submit --target local``) and two
Ray Train workers on a throwaway loopback Ray head (``--target ray``). Each reads the steady-state examples/s
of the epochs after the first (the first traces the graph). The communication per step is computed from the
model's tensors: the gradient all-reduce, the all-gather of candidate embeddings and rows, and the all-reduce
of their gradient. Both feed a projection to 8 and 64 workers, written with the measurements to docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLI = [sys.executable, "-m", "twotower.cli", "-q"]
LATENCY_S = 50e-6          # per message hop between machines (assumed)
BANDWIDTHS = {"10 Gbit/s": 1.25e9, "100 Gbit/s": 12.5e9}   # per worker, each direction (assumed)


def _job_file(folder: Path, world: Path, cache: Path, batch: int, epochs: int, run: Path, workers: int) -> Path:
    job = {"name": "scale", "config": str(ROOT / "configs" / "default.yaml"), "data": str(world),
           "set": [f"training.batch_size={batch}", f"training.epochs={epochs}", f"training.text_cache_dir={cache}",
                   "training.early_stopping_patience=100"],
           "run_dir": str(run), "workers": workers}
    path = folder / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _steady(run: Path, batch: int, workers: int) -> dict:
    """Examples/s actually trained (a multi-worker epoch drops its last partial global batch) after epoch 1."""
    from training.run import RunDir

    history = json.loads(RunDir(run).state.read_text())["history"][1:]
    count = _examples(run)
    trained = (count // (batch * workers)) * batch * workers if workers > 1 else count
    rates = [h["examples_per_second"] * trained / count for h in history]
    best = max(rates)
    return {"examples_per_second": best, "step_s": batch * workers / best, "epochs": len(history) + 1}


def _examples(run: Path) -> int:
    """The run's training examples, from its log ("N training examples, M validation users")."""
    from training.run import RunDir

    log = RunDir(run).log.read_text()
    line = next(line for line in log.splitlines() if "training examples," in line)
    return int(line.split(" training examples")[0].split()[-1])


def _model_size(run: Path) -> tuple[int, int]:
    """(trainable parameters, embedding dimension) of the run's model."""
    from training import artifacts as artifacts_io
    from training.model import build_model
    from training.run import RunDir

    config = RunDir(run).read_config()
    model = build_model(config, artifacts_io.load(RunDir(run).artifacts))
    model.embed_users(np.array(["x"]), np.array([[""] * config["model"]["history_len"]]))
    return int(sum(np.prod(v.shape) for v in model.trainable_variables)), int(config["model"]["embedding_dim"])


def communication(workers: int, batch: int, params: int, dim: int) -> dict:
    """Bytes one worker sends per step (ring collectives): what each exchange moves."""
    ring = (workers - 1) / workers
    return {"gradients (all-reduce)": 2 * ring * 4 * params,
            "candidates (all-gather)": ring * workers * batch * (4 * dim + 8 + 4),
            "candidate gradients (all-reduce)": 2 * ring * 4 * workers * batch * dim}


def _flops_per_second() -> float:
    """This machine's float32 matmul rate on the in-batch score shape (b × N·b × d), for the projection."""
    import tensorflow as tf

    a, b = tf.random.normal([512, 64]), tf.random.normal([8192, 64])
    tf.linalg.matmul(a, b, transpose_b=True)
    started = time.perf_counter()
    for _ in range(20):
        tf.linalg.matmul(a, b, transpose_b=True).numpy()
    return 20 * 2 * 512 * 8192 * 64 / (time.perf_counter() - started)


def project(step_1: float, batch: int, params: int, dim: int, flops: float, workers: int,
            bandwidth: float) -> dict:
    """Weak scaling (batch b per worker): step = one worker's step + the extra scores against N·b candidates
    (forward and backward) + the three collectives (bandwidth and per-hop latency)."""
    scores = 6 * batch * (workers - 1) * batch * dim / flops
    volume = sum(communication(workers, batch, params, dim).values())
    # Messages in sequence (ring collectives): 3 all-gathers forward (embeddings, rows, sizes), an all-reduce and
    # an all-gather backward, the gradient all-reduce and the reported loss's sum: 10 (N - 1) hops.
    hops = 10 * (workers - 1)
    comm = volume / bandwidth + hops * LATENCY_S
    step = step_1 + scores + comm
    return {"step_s": step, "examples_per_second": workers * batch / step, "efficiency": step_1 / step,
            "comm_share": comm / step, "volume_mb": volume / 2**20}


def run(args: argparse.Namespace) -> dict:
    """Generates a world in a temporary directory, measures the four cases there, and removes it."""
    work = Path(tempfile.mkdtemp(prefix="scale-"))
    try:
        return _measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(args: argparse.Namespace, work: Path) -> dict:
    from jobs.ray_target import local_head

    world, cache = work / "world", ROOT / ".cache" / "text"
    subprocess.run([*CLI, "generate", "--out", str(world), "--users", str(args.users), "--items", str(args.items)],
                   check=True)
    b, rows, loads = args.batch, [], []

    def case(name: str, command: list[str], run_dir: Path, batch: int, workers: int) -> None:
        loads.append(os.getloadavg()[0])
        started = time.time()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        rows.append({"case": name, "batch": batch, "workers": workers, "wall_s": time.time() - started,
                     **_steady(run_dir, batch, workers)})
        print(rows[-1], flush=True)

    for name, batch, workers, target in (("1 process", b, 1, None), ("1 process, doubled batch", 2 * b, 1, None),
                                         ("2 local workers", b, 2, "local"), ("2 Ray workers", b, 2, "ray")):
        run_dir = work / name.replace(" ", "-").replace(",", "")
        job = _job_file(work, world, cache, batch, args.epochs, run_dir, workers)
        if target is None:
            spec = yaml.safe_load(job.read_text())
            command = [*CLI, "train", "--config", spec["config"], "--set", f"data.path={world}",
                       *[a for s in spec["set"] for a in ("--set", s)], "--run-dir", str(run_dir)]
            case(name, command, run_dir, batch, workers)
        elif target == "local":
            case(name, [*CLI, "submit", str(job), "--target", "local"], run_dir, batch, workers)
        else:
            with local_head() as address:
                case(name, [*CLI, "submit", str(job), "--target", "ray", "--address", address], run_dir, batch,
                     workers)
    loads.append(os.getloadavg()[0])
    params, dim = _model_size(work / "1-process")
    return {"rows": rows, "loads": loads, "params": params, "dim": dim, "flops": _flops_per_second(),
            "args": {k: getattr(args, k) for k in ("users", "items", "batch", "epochs")},
            "date": time.strftime("%Y-%m-%d")}


def report(measured: dict) -> str:
    """The Markdown section for docs/scaling.md from one run's measurements."""
    rows, loads, params, dim, flops = (measured[k] for k in ("rows", "loads", "params", "dim", "flops"))
    args = argparse.Namespace(**measured["args"])
    b = args.batch
    step_1 = rows[0]["step_s"]
    lines = [f"`python bench/scale.py --users {args.users} --items {args.items} --batch {b} --epochs {args.epochs}` "
             f"on {os.cpu_count()} cores, {platform.machine()}, {measured['date']}. 1-minute load "
             f"average before each case: {', '.join(f'{x:.1f}' for x in loads[:-1])}; after: {loads[-1]:.1f} "
             f"(the machine is shared with other work). configs/default.yaml (MiniLM frozen, cached vectors), "
             f"a generated world; examples/s of the fastest epoch after the first.", "",
             "| case | batch per worker | workers | examples/s | step ms | wall s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['batch']} | {r['workers']} | {r['examples_per_second']:,.0f} | "
              f"{1000 * r['step_s']:.0f} | {r['wall_s']:.0f} |" for r in rows]
    volume = communication(2, b, params, dim)
    lines += ["", f"Model: {params:,} trainable parameters, embeddings of dimension {dim}. Bytes one worker sends "
              f"per step with 2 workers and b = {b} (ring collectives; float32 values, int64 rows):", "",
              "| exchange | bytes per step |", "|---|---|"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in volume.items()]
    lines += ["", f"Projection (weak scaling, b = {b} per worker): the measured one-process step "
              f"({1000 * step_1:.0f} ms) + the extra in-batch scores against N·b candidates at this machine's "
              f"measured matmul rate ({flops / 1e9:.0f} GFLOP/s) + the collectives at an assumed bandwidth per "
              f"worker and {LATENCY_S * 1e6:.0f} µs per hop.", "",
              "| workers | network | sent per worker per step MB | step ms | examples/s | efficiency | "
              "communication share |", "|---|---|---|---|---|---|---|"]
    for workers in (2, 8, 64):
        for network, bandwidth in BANDWIDTHS.items():
            p = project(step_1, b, params, dim, flops, workers, bandwidth)
            lines.append(f"| {workers} | {network} | {p['volume_mb']:.1f} | {1000 * p['step_s']:.0f} | "
                         f"{p['examples_per_second']:,.0f} | {p['efficiency']:.0%} | {p['comm_share']:.0%} |")
    return "\n".join(lines)


def plot(measured: dict, path: Path) -> None:
    """Examples/s against workers: the projection for each bandwidth, and this machine's measured points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, b = measured["rows"], measured["args"]["batch"]
    step_1 = rows[0]["step_s"]
    workers = [1, 2, 4, 8, 16, 32, 64]
    figure, axis = plt.subplots(figsize=(6.4, 4))
    for network, bandwidth in BANDWIDTHS.items():
        rates = [b / step_1] + [project(step_1, b, measured["params"], measured["dim"], measured["flops"], n,
                                        bandwidth)["examples_per_second"] for n in workers[1:]]
        axis.plot(workers, rates, marker="o", label=f"projected, {network}")
    axis.plot(workers, [n * b / step_1 for n in workers], linestyle=":", color="grey", label="linear")
    for row, marker in zip(rows[2:], ("s", "^")):
        axis.plot([row["workers"]], [row["examples_per_second"]], marker=marker, linestyle="none",
                  label=f"measured here: {row['case']}")
    axis.set(xscale="log", yscale="log", xlabel="workers (batch b per worker)", ylabel="examples/s",
             title=f"Multi-worker training, b = {b} (bench/scale.py)")
    axis.set_xticks(workers, [str(n) for n in workers])
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "scaling.md"))
    parser.add_argument("--report", metavar="MEASURED.json", help="only rewrite the section from saved measurements")
    args = parser.parse_args()
    raw = Path(args.out).with_suffix(".json")
    if args.report:
        measured = json.loads(Path(args.report).read_text())
    else:
        measured = run(args)
        raw.write_text(json.dumps(measured, indent=2) + "\n")
    table = report(measured) + f"\n\n![examples/s against workers]({Path(args.out).with_suffix('.png').name})"
    plot(measured, Path(args.out).with_suffix(".png"))
    print(table)
    from bench.report import write_section

    write_section(Path(args.out), "Measured and projected (bench/scale.py)", table)


if __name__ == "__main__":
    main()
