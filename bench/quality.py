"""Retrieval quality side by side: our text two tower and the peers a user would pick instead, on the shared data.

Usage: python bench/quality.py [--quick] [--datasets amazon-scientific,amazon-beauty,movielens-100k]
                               [--out docs/quality.md] [--runs runs/quality]

One run trains our model with each dataset's shipped config (configs/<dataset>.yaml: its defaults are the tuned
ones), fits every peer of bench/peers.py over its small grid, picks each peer's setting on the validation split,
and ranks the full catalogue for the test split with it: the same cases, the same protocol
(training.evaluate.ranks: every item a candidate, the user's earlier items excluded, ties broken at random).
Every dataset is also ranked without excluding history items, the way the published numbers were made, with the
published figures (PUBLISHED) beside ours and how far ours is from issue 11's bar. Writes one table per dataset,
the cold-start block and a plot to docs/quality.md and docs/quality.png.

``--quick`` is the CI-sized smoke run: a slice of users, the tiny encoder, one setting per peer, two epochs. Peers
whose library is not installed (implicit and lightfm are benchmark-only: bench/install_peers.sh) are skipped with
a note.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from bench.peers import Peer, TrainData, all_peers  # noqa: E402

DATASETS = {"amazon-scientific": "amazon_scientific", "amazon-beauty": "amazon_beauty",
            "movielens-100k": "movielens_100k"}
TEXT_DATASETS = {"amazon-scientific", "amazon-beauty", "movielens-100k"}
PEER_HISTORY = 50          # history items a peer sees per case (peers use the whole history set anyway)
KS = (10, 50)
# Published full-ranking test figures on the same files and splits (recall@10, ndcg@10), history items kept.
PUBLISHED = {"amazon-scientific": [("MISSRec (Wang et al. 2023)", 0.1360, 0.0753),
                                   ("VQ-Rec (Hou et al. 2023)", 0.1238, 0.0645)],
             "amazon-beauty": [("eSASRec (transformer_benchmark)", 0.0928, 0.0523),
                               ("SASRec+SS (transformer_benchmark)", 0.0921, 0.0531),
                               ("TIGER (Rajput et al. 2023)", 0.0648, 0.0384),
                               ("S3-Rec (Zhou et al. 2020)", 0.0647, 0.0327),
                               ("SASRec (Kang & McAuley 2018)", 0.0605, 0.0318)]}
# On their own processing of the same Amazon category: not the same files, for orientation only (not in the table)
ORIENTATION = {"amazon-scientific": [("RecFormer (Li et al. 2023)", 0.1448, 0.1027),
                                     ("LEARN (Jia et al. 2024)", 0.1594, 0.1060)]}
TARGET_OVER_PUBLISHED = 1.05   # issue 11's bar: the best published figure of each metric times this
QUICK_USERS = 300
SERVED_CHECK_USERS = 500   # test users whose served top-10 is compared with the evaluated one
log = logging.getLogger("twotower.bench")


@dataclasses.dataclass
class Result:
    """One model on one dataset: the chosen setting, its validation metrics and its test metrics."""

    model: str
    params: dict
    valid: dict
    test: dict
    test_with_history: dict | None = None     # ranked without excluding history items (the published protocol)
    seconds: float = 0.0
    served: dict | None = None    # ours: the exported model checked against this evaluation (served_check)


def load(dataset: str, quick: bool, runs: Path):
    """(config, RunDir, prepared data) for our model on ``dataset``, trained here."""
    from training.config import load_config
    from training.run import RunDir, setup_logging
    from training.trainer import train

    overrides = [f"data.path={ROOT.parent / 'shared' / 'datasets' / dataset}"]
    if quick:   # the tiny encoder: a smoke run must not spend minutes encoding the catalogue with MiniLM
        overrides += [f"data.max_users={QUICK_USERS}", "training.epochs=2", "model.encoder=tiny",
                      "model.max_seq_len=32", f"training.text_cache_dir={runs / 'text-cache'}"]
    config = load_config(ROOT / "configs" / f"{DATASETS[dataset]}.yaml", overrides)
    run = RunDir(runs / dataset)
    if run.path.exists():
        import shutil

        shutil.rmtree(run.path)
    setup_logging(run.log)
    started = time.time()
    train(config, run, progress=not quick)
    return config, run, time.time() - started


def train_data(prepared, encoder: str) -> TrainData:
    interactions, labels = prepared.dataset.interactions, prepared.labels
    train = interactions[labels.to_numpy() == "train"]
    item_ids = prepared.artifacts.catalog["item_id"].tolist()
    item_index = {item: row for row, item in enumerate(item_ids)}
    user_ids = sorted(train["user_id"].astype(str).unique())
    user_index = {user: row for row, user in enumerate(user_ids)}
    users = train["user_id"].astype(str).map(user_index).to_numpy()
    items = train["item_id"].astype(str).map(item_index).to_numpy()
    matrix = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(len(user_ids), len(item_ids)))
    return TrainData(item_ids, user_ids, matrix, (users, items), prepared.artifacts.catalog["text"].tolist(),
                     prepared.artifacts.item_text_vectors, encoder)


def evaluate(scorer, cases, item_index: dict, repeat_offset: float = 0.0) -> tuple[dict, dict]:
    """Test metrics with history items excluded (what the served model does) and kept (the published protocol,
    where ours adds its repeat offset: towers/repeat.py), from one scoring pass."""
    from training import evaluate as ev

    excluded, kept = ev.both_ranks(scorer, cases, item_index, repeat_offset=repeat_offset)
    return ev.report(excluded, cases, KS), ev.summarize(kept, KS)


def run_peer(peer: Peer, data: TrainData, cases: dict, quick: bool) -> Result:
    started = time.time()
    grid = list(peer.grid)[:1] if quick else list(peer.grid)
    best = None
    for params in grid:
        peer.fit(data, **params)
        valid, _ = evaluate(peer.score, cases["valid"], data.item_index)
        log.info("%s %s: valid recall@10 %.4f", peer.name, params, valid["recall@10"])
        if best is None or valid["recall@10"] > best[1]["recall@10"]:
            best = (params, valid)
    if len(grid) > 1:
        peer.fit(data, **best[0])
    test, kept = evaluate(peer.score, cases["test"], data.item_index)
    return Result(peer.name, best[0], best[1], test, kept, time.time() - started)


def run_ours(config: dict, run, prepared, cases: dict, seconds: float) -> Result:
    import tensorflow as tf

    from training import evaluate as ev
    from training.model import build_model

    model = build_model(config, prepared.artifacts)
    tf.train.Checkpoint(model=model).read(str(run.best)).expect_partial()
    scorer = ev.model_scorer(model, prepared.artifacts.catalog["item_id"].tolist())
    index = {item: row for row, item in enumerate(prepared.artifacts.catalog["item_id"].tolist())}
    offset = model.user_tower.repeat.value()
    valid, _ = evaluate(scorer, cases["valid"], index, offset)
    test, kept = evaluate(scorer, cases["test"], index, offset)
    model_cfg = config["model"]
    params = {"history": model_cfg["history_encoder"], "user": "+".join(model_cfg["user_features"]),
              "item": "+".join(model_cfg["item_features"]),
              "best_epoch": json.loads(run.state.read_text())["best_epoch"],
              "repeat_offset": round(offset, 3)}   # towers/repeat.py: history kept only
    return Result("twotower (ours)", params, valid, test, kept, seconds)


def served_check(run, dataset: str, runs: Path, cases: int) -> dict:
    """Exports the run we report (brute force, K = 10) and checks that the SavedModel's top-10 and query vectors
    equal this evaluation's for a sample of test users (export/parity.py), so that no reported figure belongs to
    a model that cannot be served. A difference stops the benchmark."""
    from export.parity import differences, evaluated, in_process
    from export.writer import export_run

    version = export_run(str(run.path), str(runs / "models" / dataset), index="brute-force", k=10)
    expected = evaluated(run.path, cases=cases)
    found = differences(expected, in_process(version)(expected.requests()), 10)
    if found:
        raise SystemExit(f"error: {dataset}: the exported model {version} does not rank as evaluated:\n  " +
                         "\n  ".join(found[:5]))
    log.info("%s: served top-10 = evaluated top-10 for %d sampled test users (%s)", dataset,
             len(expected.user_id), version)
    return {"version": str(version), "users": len(expected.user_id)}


def bench_dataset(dataset: str, quick: bool, runs: Path) -> list[Result]:
    from training.examples import evaluation_cases
    from training.prepare import prepare

    config, run, seconds = load(dataset, quick, runs)
    prepared = prepare(config, run, progress=False)
    interactions, labels = prepared.dataset.interactions, prepared.labels
    novel = config["data"]["split"]["type"] == "temporal"
    ours_cases = {s: evaluation_cases(interactions, labels, s, config["model"]["history_len"], novel)[0]
                  for s in ("valid", "test")}
    peer_cases = {s: evaluation_cases(interactions, labels, s, PEER_HISTORY, novel)[0] for s in ("valid", "test")}
    results = [run_ours(config, run, prepared, ours_cases, seconds)]
    results[0].served = served_check(run, dataset, runs, 50 if quick else SERVED_CHECK_USERS)
    data = train_data(prepared, config["model"]["encoder"])
    for peer in all_peers(with_text=dataset in TEXT_DATASETS):
        try:
            results.append(run_peer(peer, data, peer_cases, quick))
        except ImportError as err:
            log.warning("%s skipped: %s (bench/install_peers.sh installs the peers)", peer.name, err)
            continue
        r = results[-1]
        log.info("%s on %s: test recall@10 %.4f ndcg@10 %.4f (%s, %.0fs)", r.model, dataset,
                 r.test["recall@10"], r.test["ndcg@10"], r.params, r.seconds)
    return results


def _metrics_row(name: str, block: dict, extra: str = "") -> str:
    cells = [f"{block[f'{m}@{k}']:.4f}" for k in KS for m in ("recall", "ndcg")]
    return f"| {name} | " + " | ".join(cells) + f" |{extra}"


def table(dataset: str, results: list[Result]) -> str:
    best_peer = max((r for r in results if r.model != "twotower (ours)"), key=lambda r: r.test["recall@10"],
                    default=None)
    lines = [f"### {dataset}", "",
             "| model | test recall@10 | ndcg@10 | recall@50 | ndcg@50 | valid recall@10 | chosen setting | s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: -r.test["recall@10"]):
        name = f"**{r.model}**" if r.model == "twotower (ours)" else r.model
        lines.append(_metrics_row(name, r.test) + f" {r.valid['recall@10']:.4f} | "
                     f"{', '.join(f'{k}={v}' for k, v in r.params.items())} | {r.seconds:.0f} |")
    ours = next(r for r in results if r.model == "twotower (ours)")
    if ours.served:
        lines += ["", f"Served = evaluated: the exported model (`{Path(ours.served['version']).parent.name}`, "
                      f"brute force) returned the evaluated top-10, in order, for all {ours.served['users']} "
                      f"sampled test users."]
    if best_peer is not None:
        lines += ["", f"Ours vs the best peer ({best_peer.model}): recall@10 "
                      f"{ours.test['recall@10'] / max(best_peer.test['recall@10'], 1e-9):.2f}x, ndcg@10 "
                      f"{ours.test['ndcg@10'] / max(best_peer.test['ndcg@10'], 1e-9):.2f}x."]
    kept = [r for r in results if r.test_with_history is not None]
    if kept:
        lines += ["", "Ranked without excluding history items (the protocol of the published numbers):", "",
                  "| model | recall@10 | ndcg@10 | recall@50 | ndcg@50 |", "|---|---|---|---|---|"]
        kept = sorted(kept, key=lambda r: -r.test_with_history["recall@10"])
        lines += [_metrics_row(r.model, r.test_with_history) for r in kept]
        published = PUBLISHED.get(dataset, [])
        lines += [f"| {name} (published) | {r10:.4f} | {n10:.4f} | – | – |" for name, r10, n10 in published]
        if published:
            lines += ["", published_comparison(ours.test_with_history, published)]
        if dataset in ORIENTATION:
            lines += ["", "On their own processing of this category (not the same files; orientation only): " +
                      "; ".join(f"{name} recall@10 {r10:.4f}, ndcg@10 {n10:.4f}"
                                for name, r10, n10 in ORIENTATION[dataset]) + "."]
    cold = [r for r in results if "cold_items" in r.test]
    if cold and cold[0].test["cold_items"]["users"]:
        users = cold[0].test["cold_items"]["users"]
        lines += ["", f"Cold-start targets (items no training interaction names; {users} test users):", "",
                  "| model | recall@10 | ndcg@10 | recall@50 | ndcg@50 |", "|---|---|---|---|---|"]
        cold = sorted(cold, key=lambda r: -r.test["cold_items"]["recall@10"])
        lines += [_metrics_row(r.model, r.test["cold_items"]) for r in cold]
    return "\n".join(lines)


def published_comparison(kept: dict, published: list[tuple[str, float, float]]) -> str:
    """Ours (history kept) against the best published recall@10 and ndcg@10 and issue 11's bar (1.05x each)."""
    lines = []
    for metric, column in (("recall@10", 1), ("ndcg@10", 2)):
        best = max(published, key=lambda row: row[column])
        bar = TARGET_OVER_PUBLISHED * best[column]
        lines.append(f"{metric} {kept[metric]:.4f} = {kept[metric] / best[column]:.2f}x the best published "
                     f"({best[0]}, {best[column]:.4f}); bar {bar:.4f} ({TARGET_OVER_PUBLISHED}x): "
                     f"{'met' if kept[metric] >= bar else 'not met'}")
    return "Ours, history kept: " + "; ".join(lines) + "."


def plot(all_results: dict[str, list[Result]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(all_results), figsize=(5.5 * len(all_results), 4.5), squeeze=False)
    for ax, (dataset, results) in zip(axes[0], all_results.items()):
        results = sorted(results, key=lambda r: r.test["recall@10"])
        y = np.arange(len(results))
        ax.barh(y - 0.2, [r.test["recall@10"] for r in results], 0.4, label="recall@10")
        ax.barh(y + 0.2, [r.test["ndcg@10"] for r in results], 0.4, label="ndcg@10")
        ax.set_yticks(y, [r.model for r in results], fontsize=8)
        ax.set_title(f"{dataset} (test, full ranking)")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized smoke run (a user slice, one setting each)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--out", default=str(ROOT / "docs" / "quality.md"))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "quality"))
    args = parser.parse_args()
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in names if d not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from {', '.join(DATASETS)}")
    missing = [d for d in names if not (ROOT.parent / "shared" / "datasets" / d).is_dir()]
    if missing:
        print(f"error: {', '.join(missing)} not found under {ROOT.parent / 'shared' / 'datasets'}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    started = time.time()
    all_results = {}
    for dataset in names:
        all_results[dataset] = bench_dataset(dataset, args.quick, Path(args.runs))
        print(table(dataset, all_results[dataset]), flush=True)
    minutes = (time.time() - started) / 60
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image = out.with_suffix(".png")
    plot(all_results, image)
    (out.with_suffix(".json")).write_text(json.dumps({d: [dataclasses.asdict(r) for r in rs]
                                                      for d, rs in all_results.items()}, indent=1))
    command = "python bench/quality.py" + (" --quick" if args.quick else "") + \
        ("" if names == list(DATASETS) else f" --datasets {','.join(names)}")
    header = (f"`{command}` on {os.cpu_count()} cores ({platform.machine()}), {time.strftime('%Y-%m-%d')}: "
              f"{minutes:.1f} minutes for everything below.\n\n")
    from bench.report import write_section

    write_section(out, "Results (bench/quality.py)", header + "\n\n".join(table(d, r) for d, r in all_results.items())
                  + f"\n\n![test recall@10 and ndcg@10 by model]({image.name})", heading="# Retrieval quality")
    print(f"wrote {out} and {image} in {minutes:.1f} minutes")


if __name__ == "__main__":
    main()
