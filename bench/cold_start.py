"""Cold start: text-only new users, and items that arrive after the model was exported, measured on the served model.

Usage: python bench/cold_start.py [--quick] [--no-scientific] [--out docs/cold_start.md]

Generated world (``twotower generate``, 2000 users, 1500 items, seed 0), trained with configs/default.yaml
(MiniLM, frozen) on a catalogue that *lacks* the world's cold items (released after the validation cut-off): the
model never sees them, not even as catalogue rows. Exported (ScaNN, K = 50), then asked in-process through
``serving_default`` for every test user (first novel item of the test window; its earlier items excluded, as in
``twotower evaluate``):

- **full request**: user id + the last 20 history items (+ the profile stored for the id);
- **text only**: no id, no history, only the user's profile and search queries as ``user_text`` (a new user);
- **cold targets**: test cases whose target is a cold item, before and after ``twotower index add`` put the cold
  items into the next version (no retraining);
- popularity (training counts) beside each;
- **search queries**: each test user's search queries alone as ``user_text`` to version 2, precision@10 and
  recall@50 against the generator's ground truth (``search_queries.csv``), beside the run's raw text similarity
  and popularity; and how many tents ``make demo``'s "lightweight camping tent for two" returns.

Amazon Scientific (../shared/datasets/amazon-scientific, skipped where absent): configs/amazon_scientific.yaml
trained for a few epochs, its ``cold_items`` block (test targets never seen in a training interaction, found only
through their text) from ``twotower evaluate``'s full-catalogue ranking, against popularity.

Writes docs/cold_start.md and docs/cold_start.png.
"""

from __future__ import annotations

import argparse
import json
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
KS = (10, 50)
TENT_QUERY = "lightweight camping tent for two"   # make demo's text-only request


def generated(args, work: Path) -> dict:
    import numpy as np
    import pandas as pd

    from bench.served import ServedModel, padded, popularity_recall, recall
    from export.add_items import add_items
    from export.writer import export_run
    from ingest.generate import generate_world
    from training import artifacts as artifacts_io
    from training.config import load_config
    from training.examples import evaluation_cases
    from training.prepare import load_split
    from training.run import RunDir, setup_logging
    from training.trainer import train
    from twotower import layout

    world = work / "world"
    meta = generate_world(world, users=args.users, items=args.items, seed=args.seed, progress=False)
    items = pd.read_csv(world / "items.csv", dtype=str, keep_default_na=False)
    cold = set(meta["cold_items"])
    items[~items["item_id"].isin(cold)].drop(columns="release_time").to_csv(work / "warm_items.csv", index=False)
    items[items["item_id"].isin(cold)].drop(columns="release_time").to_csv(work / "cold_items.csv", index=False)
    split = f"data.split={{type: temporal, valid_start: '{meta['valid_start']}', test_start: '{meta['test_start']}'}}"
    common = [f"training.text_cache_dir={args.cache}", *(["training.epochs=3"] if args.quick else [])]
    config = load_config(ROOT / "configs" / "default.yaml", [
        "data.format=files", "data.path=null", f"data.items={work / 'warm_items.csv'}",
        f"data.interactions={world / 'interactions.csv'}",
        f"data.users={world / 'users.csv'}", split, *common])
    run = RunDir(work / "run")
    setup_logging(run.log)
    started = time.time()
    train(config, run, progress=False)
    train_seconds = time.time() - started
    base = work / "models" / "shop"
    version = export_run(str(run.path), str(base), index="scann", k=max(KS))

    full = load_config(ROOT / "configs" / "default.yaml", [f"data.path={world}", *common])
    dataset, labels = load_split(full)
    cases, _ = evaluation_cases(dataset.interactions, labels, "test", full["model"]["history_len"], True)
    warm = pd.read_parquet(run.artifacts / artifacts_io.CATALOG)["item_id"].tolist()
    counts = dict(zip(warm, np.load(run.artifacts / artifacts_io.ITEM_COUNTS)))
    users = pd.read_parquet(run.artifacts / artifacts_io.USERS)
    text = dict(zip(users["user_id"], users["text"]))
    exclude = padded([list(e) for e in cases.exclude])
    served = ServedModel(version)
    n = len(cases)
    asked = {
        "full request": served(user_id=cases.user_id.astype(str), history=cases.history.astype(str),
                               user_text=np.array([""] * n, object), exclude=exclude)["item_ids"],
    }
    has_text = np.array([bool(text.get(u, "").strip()) for u in cases.user_id])
    asked["text only"] = served(user_id=np.array([""] * n, object), history=np.array([[""]] * n, object),
                                user_text=np.array([text.get(u, "") for u in cases.user_id], object),
                                exclude=exclude)["item_ids"]
    started = time.time()
    added = add_items(str(base), str(work / "cold_items.csv"), progress=False)
    add_seconds = time.time() - started
    after = ServedModel(added)
    asked["full request, after index add"] = after(user_id=cases.user_id.astype(str),
                                                   history=cases.history.astype(str),
                                                   user_text=np.array([""] * n, object), exclude=exclude)["item_ids"]
    asked["text only, after index add"] = after(user_id=np.array([""] * n, object),
                                                history=np.array([[""]] * n, object),
                                                user_text=np.array([text.get(u, "") for u in cases.user_id], object),
                                                exclude=exclude)["item_ids"]
    searches = search_queries(world, items, cases, run, after)
    is_cold = np.array([t in cold for t in cases.target])
    groups = {"all test users": np.ones(n, bool), "cold targets": is_cold, "new users": cases.new_user}
    rows = []
    for group, mask in groups.items():
        for name, ranked in asked.items():
            subset = mask & (has_text if name.startswith("text only") else True)
            rows.append({"group": group, "request": name, "cases": int(subset.sum()),
                         **{f"recall@{k}": recall(ranked[subset], cases.target[subset], k) for k in KS}})
        subset = mask
        rows.append({"group": group, "request": "popularity", "cases": int(subset.sum()),
                     **{f"recall@{k}": popularity_recall(counts, cases.target[subset],
                                                         [cases.exclude[i] for i in np.flatnonzero(subset)], k)
                        for k in KS}})
    card = json.loads(layout.asset(added, layout.MODEL_CARD).read_text())
    return {"rows": rows, "users": args.users, "items": args.items, "cold": len(cold), "train_s": train_seconds,
            "add_s": add_seconds, "index": card["index"], "warm_items": len(warm), "version": str(added),
            "search_queries": searches}


def search_queries(world: Path, items, cases, run, served) -> dict:
    """Every test user's search queries as text-only requests to the served model after ``index add`` (the whole
    catalogue), sent as ``search_query`` and as ``user_text``, scored against the generator's ground truth
    (training/search_queries.py); the run's raw text similarity and popularity beside. And the demo's tent query
    (as ``search_query``): how many tents in its top 5 and top 10."""
    import numpy as np

    from ingest.formats.generated import read_search_queries
    from training import search_queries as sq
    from training.artifacts import tables
    from training.prepare import prepare

    config = run.read_config()
    prepared = prepare(config, run, progress=False)
    truth = read_search_queries(world)
    catalog_ids = items["item_id"].tolist()
    asked = sq.query_cases(truth, catalog_ids, np.unique(cases.user_id.astype(str)),
                           cases.user_id[cases.new_user].astype(str))
    blank = np.array([""] * len(asked), object)
    said = np.array(asked.text, object)
    answers = served(user_id=blank, history=blank[:, None], user_text=blank, search_query=said)["item_ids"]
    as_user_text = served(user_id=blank, history=blank[:, None], user_text=said)["item_ids"]
    queries = sq.text_vectors(asked.text, config, prepared)
    texts = tables(items, None, config["data"]["item_text_columns"], [])[0]["text"].tolist()
    counts = dict(zip(prepared.artifacts.catalog["item_id"], prepared.artifacts.item_counts))
    popularity = np.array([counts.get(item, 0.0) for item in catalog_ids])
    tents = set(truth.loc[truth["noun"] == "tent", "relevant"].iloc[0]) if (truth["noun"] == "tent").any() else set()
    top = served(user_id=np.array([""], object), history=np.array([[""]], object), user_text=np.array([""], object),
                 search_query=np.array([TENT_QUERY], object))["item_ids"][0]
    return {"users": int(len(np.unique(asked.user_id))),
            "two-tower (served)": sq.report_ids(answers, asked, catalog_ids),
            "two-tower (served, as user_text)": sq.report_ids(as_user_text, asked, catalog_ids),
            "text similarity": sq.score(sq.cosine_scorer(queries, sq.text_vectors(texts, config, prepared)), asked),
            "popularity": sq.score(sq.popularity_scorer(popularity), asked),
            "tent query": {"tents": len(tents), "top 5": sum(i in tents for i in top[:5]),
                           "top 10": sum(i in tents for i in top[:10]), "top 10 ids": top[:10].tolist()}}


def scientific(args, work: Path) -> dict | None:
    from training.config import load_config
    from training.run import RunDir, setup_logging
    from training.trainer import train

    data = ROOT.parent / "shared" / "datasets" / "amazon-scientific"
    if not data.exists():
        print(f"{data} not found: Amazon Scientific skipped", flush=True)
        return None
    config = load_config(ROOT / "configs" / "amazon_scientific.yaml", [
        f"data.path={data}", f"training.text_cache_dir={args.cache}", f"training.epochs={args.scientific_epochs}"])
    run = RunDir(work / "scientific")
    setup_logging(run.log)
    started = time.time()
    metrics = train(config, run, progress=False)
    return {"test": metrics["test"], "seconds": time.time() - started, "epochs": args.scientific_epochs}


def plot(result: dict, sci: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "after" not in r["request"] or r["group"] == "cold targets"]
    bars = [(f"{r['group']}\n{r['request']}", r["recall@10"], r["recall@50"], r["request"] == "popularity")
            for r in rows]
    if sci:
        cold, pop = sci["test"]["cold_items"], sci["test"]["baselines"]["popularity"]["cold_items"]
        bars += [("Scientific cold targets\ntwo-tower", cold["recall@10"], cold["recall@50"], False),
                 ("Scientific cold targets\npopularity", pop["recall@10"], pop["recall@50"], True)]
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 1.1 * len(bars)), 4.8), sharey=False)
    for ax, column, label in ((axes[0], 1, "recall@10"), (axes[1], 2, "recall@50")):
        ax.bar(range(len(bars)), [b[column] for b in bars],
               color=["tab:gray" if b[3] else "tab:blue" for b in bars])
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=65, ha="right", fontsize=7)
        ax.set_ylabel(label)
        ax.set_title(f"{label} (blue: two-tower, grey: popularity)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def search_report(block: dict) -> list[str]:
    tent = block["tent query"]
    lines = ["### Search queries, text only, served", "",
             f"Each test user's search queries ({block['users']} users) alone as `search_query` (no id, no "
             "history; and as `user_text`, what a client that sends no `search_query` gets) to version 2 (the "
             "whole catalogue), against the generator's ground truth (`search_queries.csv`: the "
             "items of the product type a query was generated from; training/search_queries.py). precision@10 "
             "is out of min(10, relevant items).", "",
             "| scorer | queries | precision@10 | recall@50 | new users P@10 | Chinese P@10 |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in ("two-tower (served)", "two-tower (served, as user_text)", "text similarity", "popularity"):
        m = block[name]
        lines.append(f"| {name} | {m['queries']} | {m['precision@10']:.4f} | {m['recall@50']:.4f} | "
                     f"{m.get('new_users', {}).get('precision@10', float('nan')):.4f} | "
                     f"{m.get('chinese', {}).get('precision@10', float('nan')):.4f} |")
    lines += ["", f"\"{TENT_QUERY}\": {tent['top 5']} tent(s) in the top 5, {tent['top 10']} in the top 10 "
              f"(the world has {tent['tents']}).", ""]
    return lines


def report(args, result: dict, sci: dict | None, seconds: float) -> str:
    lines = [f"`{' '.join(['python', 'bench/cold_start.py', *sys.argv[1:]])}` on {os.cpu_count()} cores, "
             f"{platform.machine()}, {time.strftime('%Y-%m-%d')}; {seconds / 60:.1f} min in all.", "",
             f"## Generated world ({result['users']} users, {result['items']} items, seed {args.seed})", "",
             f"Trained on the {result['warm_items']} items released before the validation cut-off "
             f"(configs/default.yaml, MiniLM frozen, {result['train_s']:.0f} s); the {result['cold']} cold items "
             f"were in no training interaction and not in the exported catalogue. `twotower index add` put them into "
             f"version 2 in {result['add_s']:.0f} s (ScaNN re-tuned: recall@{result['index']['k']} vs brute force "
             f"{result['index']['recall_at_k_vs_brute_force']:.3f}, {result['index']['params']}).", "",
             "| group | request | cases | recall@10 | recall@50 |", "|---|---|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['group']} | {r['request']} | {r['cases']} | {r['recall@10']:.4f} | "
                     f"{r['recall@50']:.4f} |")
    lines += ["", "Reading it: a text-only request (no id, no history) is a new user's search query or profile; "
              "\"cold targets\" can only be found once `index add` has put the items in, and then only through "
              "their text (their ids are unknown to the towers).", ""]
    lines += search_report(result["search_queries"])
    if sci:
        test = sci["test"]
        pop = test["baselines"]["popularity"]
        lines += ["## Amazon Scientific, cold targets", "",
                  f"configs/amazon_scientific.yaml, {sci['epochs']} epochs ({sci['seconds'] / 60:.1f} min), its own "
                  "leave-one-out split, full-catalogue ranking (`twotower evaluate`). Cold targets: test items that "
                  "no training interaction names; the ranking finds them through their text alone.", "",
                  "| targets | model | users | recall@10 | ndcg@10 | recall@50 |", "|---|---|---:|---:|---:|---:|"]
        for label, block, popular in (("all", test, pop), ("cold", test["cold_items"], pop["cold_items"])):
            for name, values in (("two-tower", block), ("popularity", popular)):
                lines.append(f"| {label} | {name} | {values['users']} | {values['recall@10']:.4f} | "
                             f"{values['ndcg@10']:.4f} | {values['recall@50']:.4f} |")
        lines.append("")
    lines += ["![cold start](cold_start.png)", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3 epochs, Scientific 2 epochs: a smoke run")
    parser.add_argument("--no-scientific", action="store_true")
    parser.add_argument("--scientific-epochs", type=int, default=8)
    parser.add_argument("--cache", default=str(ROOT / ".cache" / "text"), help="text vector cache")
    parser.add_argument("--work", help="working directory (default: a temporary one)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "cold_start.md"))
    args = parser.parse_args()
    if args.quick:
        args.scientific_epochs = min(args.scientific_epochs, 2)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-cold-"))
    began = time.time()
    result = generated(args, work)
    for r in result["rows"]:
        print(json.dumps(r), flush=True)
    sci = None if args.no_scientific else scientific(args, work)
    out = Path(args.out)
    plot(result, sci, out.with_suffix(".png"))
    out.write_text("# Cold start (bench/cold_start.py)\n\n" + report(args, result, sci, time.time() - began),
                   encoding="utf-8")
    print(f"wrote {out} and {out.with_suffix('.png')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
