"""Diversity: what the served ``diversity`` and ``max_per_category`` inputs cost in recall and buy in variety.

Usage: python bench/diversity.py [--run-dir RUN] [--out docs/diversity.md]

A trained run (``--run-dir``; by default the generated world of configs/default.yaml is generated and trained in
a temporary directory) is exported with a brute-force index and K = 10, and asked in-process through
``serving_default`` for every test user (user id + last 20 history items; earlier items excluded, as in
``twotower evaluate``), once per setting: ``diversity`` from 0 to 1, and ``max_per_category`` 1, 2, 3 at
diversity 0. For each setting: recall@10 of the test target, intra-list similarity (mean pairwise dot product of
the 10 items' unit item vectors), category coverage (distinct categories among the 10), and the p50 latency of a
one-user request. Writes docs/diversity.md and docs/diversity.png (the trade-off curve).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
K = 10
DIVERSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CAPS = (3, 2, 1)
LATENCY_CALLS = 60


def trained_run(args) -> Path:
    if args.run_dir:
        return Path(args.run_dir)
    from ingest.generate import generate_world
    from training.config import load_config
    from training.run import RunDir, setup_logging
    from training.trainer import train

    work = Path(tempfile.mkdtemp(prefix="bench-diversity-"))
    generate_world(work / "world", progress=False)
    config = load_config(ROOT / "configs" / "default.yaml",
                         [f"data.path={work / 'world'}", f"training.text_cache_dir={args.cache}"])
    run = RunDir(work / "run")
    setup_logging(run.log)
    train(config, run, progress=False)
    return run.path


def measure(args) -> tuple[list[dict], dict]:
    import numpy as np

    from bench.served import ServedModel, padded, recall
    from export.writer import export_run
    from training.examples import evaluation_cases
    from training.prepare import load_split
    from training.run import RunDir

    run = RunDir(trained_run(args))
    config = run.read_config()
    version = export_run(str(run.path), tempfile.mkdtemp(prefix="bench-diversity-models-") + "/shop",
                         index="brute-force", k=K)
    dataset, labels = load_split(config)
    cases, _ = evaluation_cases(dataset.interactions, labels, "test", config["model"]["history_len"], True)
    served = ServedModel(version)
    ids = [i.decode() for i in served.model.loaded.catalog.ids.numpy()]
    vectors = dict(zip(ids, served.model.loaded.catalog.vectors.numpy()))
    category = dict(zip(ids, (c.decode() for c in served.model.loaded.catalog.category.numpy())))
    n = len(cases)
    base = {"user_id": cases.user_id.astype(str), "history": cases.history.astype(str),
            "user_text": np.array([""] * n, object), "exclude": padded([list(e) for e in cases.exclude])}
    settings = [("diversity", d, {"diversity": np.full(n, d, np.float32)}) for d in DIVERSITIES]
    settings += [("max_per_category", c, {"max_per_category": np.full(n, c, np.int32)}) for c in CAPS]
    rows = []
    for knob, value, extra in settings:
        ranked = served(**base, **extra)["item_ids"]
        lists = [[i for i in row if i] for row in ranked]
        similarity = [_intra_list_similarity([vectors[i] for i in row]) for row in lists if len(row) > 1]
        one = {k: v[:1] for k, v in {**base, **extra}.items()}
        times = []
        for _ in range(LATENCY_CALLS):
            started = time.perf_counter()
            served(**one)
            times.append(time.perf_counter() - started)
        rows.append({"knob": knob, "value": value, "recall@10": recall(ranked, cases.target, K),
                     "ils": float(np.mean(similarity)),
                     "coverage": float(np.mean([len({category[i] for i in row}) for row in lists])),
                     "length": float(np.mean([len(row) for row in lists])),
                     "p50_ms": float(np.percentile(np.array(times[10:]) * 1e3, 50))})
        print(rows[-1], flush=True)
    return rows, {"run": str(run.path), "cases": n}


def _intra_list_similarity(vectors) -> float:
    import numpy as np

    matrix = np.stack(vectors)
    pairs = matrix @ matrix.T
    n = len(vectors)
    return float((pairs.sum() - np.trace(pairs)) / (n * (n - 1)))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = [r for r in rows if r["knob"] == "diversity"]
    caps = [r for r in rows if r["knob"] == "max_per_category"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = [r["value"] for r in curve]
    left.plot(xs, [r["recall@10"] for r in curve], "o-", color="tab:blue", label="recall@10")
    left.set_xlabel("diversity")
    left.set_ylabel("recall@10", color="tab:blue")
    twin = left.twinx()
    twin.plot(xs, [r["ils"] for r in curve], "s--", color="tab:red", label="intra-list similarity")
    twin.plot(xs, [r["coverage"] / K for r in curve], "^--", color="tab:green", label="categories / 10")
    twin.set_ylabel("intra-list similarity, categories / 10")
    left.set_title("the diversity input")
    lines = left.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    left.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="center left")
    right.plot([r["coverage"] for r in curve], [r["recall@10"] for r in curve], "o-", label="diversity 0 … 1")
    for r in curve[::2]:
        right.annotate(f"{r['value']:.1f}", (r["coverage"], r["recall@10"]), fontsize=7,
                       textcoords="offset points", xytext=(4, 4))
    right.plot([r["coverage"] for r in caps], [r["recall@10"] for r in caps], "s", color="tab:orange",
               label="max_per_category 3, 2, 1")
    right.set_xlabel("distinct categories in the top 10")
    right.set_ylabel("recall@10")
    right.set_title("trade-off")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", help="a trained run (default: train configs/default.yaml on a fresh world)")
    parser.add_argument("--cache", default=str(ROOT / ".cache" / "text"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "diversity.md"))
    args = parser.parse_args()
    began = time.time()
    rows, info = measure(args)
    out = Path(args.out)
    plot(rows, out.with_suffix(".png"))
    command = " ".join(["python", "bench/diversity.py", *sys.argv[1:]])
    run_text = args.run_dir or "configs/default.yaml on a fresh generated world (2000 users, 1500 items; MiniLM frozen)"
    lines = ["# Diversity (bench/diversity.py)", "",
             f"`{command}` on {os.cpu_count()} cores, {platform.machine()}, {time.strftime('%Y-%m-%d')}; "
             f"{(time.time() - began) / 60:.1f} min. Run: {run_text}. {info['cases']} test users, each asked once "
             "per setting through the "
             "exported `serving_default` (brute force, K = 10). Latency: one-user requests in-process, p50 of 50.", "",
             "| setting | recall@10 | intra-list similarity | categories in top 10 | items returned | p50 ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        setting = f"{r['knob']} = {r['value']:g}"
        lines.append(f"| {setting} | {r['recall@10']:.4f} | {r['ils']:.3f} | {r['coverage']:.2f} | "
                     f"{r['length']:.1f} | {r['p50_ms']:.2f} |")
    lines += ["", "Maximal marginal relevance re-ranks the top 3 × K candidates (`max_per_category`: the top "
              "10 × K, at least 500); `items returned` falls below 10 where a cap leaves too few candidates.", "",
              "![diversity trade-off](diversity.png)", ""]
    out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out} and {out.with_suffix('.png')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
