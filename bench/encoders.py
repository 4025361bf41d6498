"""What the text encoder does to quality on a partly Chinese shop: the demo world trained with each encoder.

Usage: python bench/encoders.py [--encoders minilm,m3e-small,multilingual-e5-small] [--world worlds/default]
                                [--epochs 12] [--out docs/encoders.md] [--runs runs/encoders]

Each encoder trains configs/default.yaml (the demo) on the same generated world, is evaluated on the test split
(overall, the ``chinese`` block: the user's or the target item's text mostly Chinese, and ``cross_lingual``: a
user whose text is not Chinese and a Chinese target), timed encoding 512 catalogue texts, and exported with a
brute-force index (its size on disk). Writes a table and a plot to docs/encoders.md and docs/encoders.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BLOCKS = (("all", None), ("Chinese", "chinese"), ("cross-lingual", "cross_lingual"))
log = logging.getLogger("twotower.bench")


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_encoder(name: str, world: Path, epochs: int, runs: Path) -> dict:
    from export.writer import export_run
    from towers.text_encoder import TextEncoder, resolve_encoder
    from training.config import load_config
    from training.run import RunDir, setup_logging
    from training.trainer import train

    config = load_config(ROOT / "configs" / "default.yaml",
                         [f"model.encoder={name}", f"data.path={world}", f"training.epochs={epochs}"])
    run = RunDir(runs / name)
    if run.path.exists():
        import shutil

        shutil.rmtree(run.path)
    setup_logging(run.log)
    started = time.time()
    metrics = train(config, run, progress=False)
    train_seconds = time.time() - started
    import pandas as pd

    texts = (pd.read_csv(world / "items.csv")["title"].astype(str).tolist() * 2)[:512]
    encoder = TextEncoder(resolve_encoder(name), max_length=config["model"]["max_seq_len"])
    encoder.encode(texts[:64], batch_size=64, progress=False)          # traced once before timing
    started = time.time()
    encoder.encode(texts, batch_size=64, progress=False)
    speed = len(texts) / (time.time() - started)
    version = export_run(str(run.path), str(runs / "models" / name), index="brute-force", k=100)
    test = metrics["test"]
    return {"encoder": name, "blocks": {label: (test if key is None else test.get(key)) for label, key in BLOCKS},
            "texts_per_second": speed, "export_bytes": directory_size(version), "train_seconds": train_seconds,
            "best_epoch": test.get("best_epoch"), "dim": encoder.dim}


def table(results: list[dict]) -> str:
    header = "| encoder | " + " | ".join(f"{label} R@10 | {label} N@10 | {label} users" for label, _ in BLOCKS) + \
        " | texts/s (batch 64) | export MB | train s |"
    lines = [header, "|" + "---|" * (1 + 3 * len(BLOCKS) + 3)]
    for r in results:
        cells = []
        for label, _ in BLOCKS:
            block = r["blocks"][label]
            cells += ([f"{block['recall@10']:.4f}", f"{block['ndcg@10']:.4f}", str(block["users"])] if block
                      else ["–", "–", "0"])
        lines.append(f"| {r['encoder']} | " + " | ".join(cells) +
                     f" | {r['texts_per_second']:.0f} | {r['export_bytes'] / 1e6:.0f} | {r['train_seconds']:.0f} |")
    base = results[0]
    for r in results[1:]:
        ratios = [f"{label} recall@10 "
                  f"{r['blocks'][label]['recall@10'] / max(base['blocks'][label]['recall@10'], 1e-9):.2f}x"
                  for label, _ in BLOCKS if r["blocks"][label] and base["blocks"][label]]
        lines += ["", f"{r['encoder']} vs {base['encoder']}: " + ", ".join(ratios) + "."]
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(BLOCKS))
    width = 0.8 / len(results)
    for i, r in enumerate(results):
        values = [(r["blocks"][label] or {}).get("recall@10", 0.0) for label, _ in BLOCKS]
        ax.bar(x + i * width, values, width, label=r["encoder"])
    ax.set_xticks(x + width * (len(results) - 1) / 2, [label for label, _ in BLOCKS])
    ax.set_ylabel("test recall@10")
    ax.set_title("Demo world by text encoder (full catalogue, history excluded)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default="minilm,m3e-small,multilingual-e5-small")
    parser.add_argument("--world", default=str(ROOT / "worlds" / "default"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", default=str(ROOT / "docs" / "encoders.md"))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "encoders"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    world = Path(args.world)
    if not (world / "items.csv").exists():
        from ingest.generate import generate_world

        generate_world(str(world), progress=False)
    started = time.time()
    results = [bench_encoder(name.strip(), world, args.epochs, Path(args.runs))
               for name in args.encoders.split(",") if name.strip()]
    out = Path(args.out)
    plot(results, out.with_suffix(".png"))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    command = f"python bench/encoders.py --encoders {args.encoders} --epochs {args.epochs}"
    from bench.report import write_section

    write_section(out, "Results (bench/encoders.py)",
                  f"`{command}` on {os.cpu_count()} cores ({platform.machine()}), {time.strftime('%Y-%m-%d')}: "
                  f"{(time.time() - started) / 60:.1f} minutes.\n\n" + table(results) +
                  f"\n\n![test recall@10 by encoder]({out.with_suffix('.png').name})",
                  heading="# Text encoders on a partly Chinese shop")
    print(table(results))


if __name__ == "__main__":
    main()
