"""The best any model can score on a generated world: the generator's own ranking, from the taste it hid.

Usage: python bench/world_ceiling.py [--config configs/default.yaml] [--encoders docs/encoders.json]
                                     [--out docs/ceiling.md] [--perfect-encoder RUNS [--seeds 0,1,2]]

Why it exists: a generated world's behaviour is drawn from known probabilities (ingest/generate.py): a user's
fresh view at time t picks an interest from their drifting taste, then an item of that category by popularity,
style, price, language and recency. Ranking every item by that probability, with the user's earlier items left
out as ``twotower evaluate`` leaves them out, is the Bayes-optimal ranking: no model, whatever it reads, can
expect a higher recall. It says how much of what can be got a model gets, per block (cold items, new users,
the Chinese block), and so whether a target asked of a block can be met at all.

Two figures per block: the ceiling's recall@10 and ndcg@10 on the real targets (what the table of a trained
model reads), and its expected recall@10 (the mean over cases of the probability mass in its top ten), which
has no sampling noise beyond the choice of cases. The trained models' figures come from ``--encoders``
(bench/encoders.py's JSON: the same world, the same test cases). ``--perfect-encoder`` adds two trained rows: the
demo's model with the text vectors a perfect multilingual encoder could give (:func:`meaning_vectors`), the bound
on what any encoder can do for a block in this model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

K = 10
log = logging.getLogger("twotower.bench")
# block name in the tables → its key in metrics.json (training/evaluate.py's GROUPS; None: every case)
METRIC_BLOCK = {"all": None, "cold items": "cold_items", "new users": "new_users", "Chinese": "chinese",
                "cross-lingual": "cross_lingual"}


def target_probabilities(hidden, user: int, purchase: bool, seconds: float, view_items: np.ndarray,
                         view_seconds: np.ndarray, ignore: frozenset[str] = frozenset()) -> np.ndarray:
    """[items] the probability that each item is the item of user number ``user``'s event at ``seconds``, given
    their earlier views (``view_items`` at ``view_seconds``, in time order) and whether the event is a purchase
    (the ceiling is told: of a viewed item) or a view (a fresh one, or a re-view of an earlier view)."""
    from ingest.generate import REPEAT_P, REVIEW_STEP_P, purchase_weights, view_probabilities

    if purchase:
        p = purchase_weights(hidden, user, view_items, view_seconds, seconds)
    else:
        p = (1 - REPEAT_P) * view_probabilities(hidden, user, seconds, ignore)
        if len(view_items):
            back = np.arange(len(view_items), 0, -1)   # the last view is one step back
            chance = REVIEW_STEP_P * (1 - REVIEW_STEP_P) ** (back - 1.0)
            chance[0] += (1 - REVIEW_STEP_P) ** len(view_items)   # a step back past the first view lands on it
            np.add.at(p, view_items, REPEAT_P * chance)
    return p / p.sum()


def ceiling_ranks(config: dict, ignores: Sequence[frozenset[str]] = (frozenset(),)) -> tuple[list[dict], dict]:
    """Per test case of ``config``'s world: the target's rank under the generator's probabilities, and the
    expected recall@K of that ranking, once per entry of ``ignores`` (what the ranking leaves out of a view's
    probabilities: ``view_probabilities``'s ``ignore``); and each block's mask."""
    from ingest.formats.generated import WORLD
    from ingest.generate import START, hidden_world
    from training import artifacts as artifacts_io
    from training import evaluate as ev
    from training.prepare import Prepared, load_split
    from training.trainer import evaluation_split

    dataset, labels = load_split(config)
    derived = artifacts_io.derive(dataset, labels, config["data"]["item_text_columns"],
                                  config["data"]["user_text_columns"])
    cases = evaluation_split(config, Prepared(dataset, labels, derived, None), "test")   # evaluate's own cases
    world = json.loads((Path(config["data"]["path"]) / WORLD).read_text(encoding="utf-8"))
    hidden = hidden_world(world)
    epoch = int((START - np.datetime64("1970-01-01T00:00:00", "s")).astype(np.int64))

    inter = dataset.interactions.assign(split=labels.to_numpy(), seconds=dataset.interactions["timestamp"] - epoch)
    by_user = {user: group for user, group in inter.groupby("user_id", sort=False)}

    def number(generated_id: str) -> int:
        return int(generated_id[1:])

    rank = np.empty((len(ignores), len(cases)), np.int64)
    expected = np.empty((len(ignores), len(cases)))
    for c, (user, target, excluded) in enumerate(zip(cases.user_id, cases.target, cases.exclude)):
        rows = by_user[user]
        # the target's row: the user's first test row, or (novel targets) the first test row of its item; either
        # way the first test row that holds it
        at = int(np.flatnonzero((rows["split"] == "test").to_numpy() & (rows["item_id"] == target).to_numpy())[0])
        event = rows.iloc[at]
        before = rows.iloc[:at]
        views = before[before["event"] == "view"]
        items = np.array([number(i) for i in views["item_id"]], np.int64)
        history = np.zeros(len(hidden.items["cat"]), bool)
        history[[number(i) for i in excluded]] = True
        at_time = (hidden, number(user), event["event"] == "purchase", float(event["seconds"]), items,
                   views["seconds"].to_numpy(np.float64))
        truth = target_probabilities(*at_time)
        for n, ignore in enumerate(ignores):
            p = target_probabilities(*at_time, ignore) if ignore else truth
            rank[n, c] = int((p[~history] > p[number(target)]).sum())
            # Each item may be the target; the candidates are then the items off the history, and that item.
            fresh = np.sort(p[~history])
            above = len(fresh) - np.searchsorted(fresh, p, side="right")
            expected[n, c] = truth[above < K].sum()
    masks = {name: (np.ones(len(cases), bool) if key is None else np.asarray(getattr(cases, ev.GROUPS[key]), bool))
             for name, key in METRIC_BLOCK.items()}
    return [{"rank": rank[n], "expected": expected[n]} for n in range(len(ignores))], masks


def meaning_vectors(hidden, item_ids, user_ids, profiles: dict[str, str], dim: int,
                    language: bool) -> tuple[np.ndarray, np.ndarray]:
    """Text vectors a perfect multilingual encoder could give: what each text says, whatever its language. An
    item: its category, category and style, category and product noun (and, weaker, its brand). A user: the mean
    of what their profile names (each interest's category and style; nothing for an empty profile) and what each
    search query names (its category, style and noun). With ``language``, the text's language as well (a
    Chinese user leans to Chinese items). Unit vectors, zero-padded to ``dim``; a user without text gets zeros."""
    from ingest.generate import CATEGORIES, SLOTS

    offsets, at = {}, len(CATEGORIES)
    for field in ("styles", "nouns", "brands"):
        for c, spec in enumerate(CATEGORIES):
            offsets[field, c] = at
            at += len(getattr(spec, field))
    if at + 2 > dim:
        raise ValueError(f"{at + 2} meaning dimensions do not fit the encoder's {dim}")

    def unit(v: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(v)
        return v / norm if norm else v

    def named(category: int, style: int, noun: int | None = None, brand: int | None = None) -> np.ndarray:
        v = np.zeros(dim)
        v[category] = v[offsets["styles", category] + style] = 1.0
        if noun is not None:
            v[offsets["nouns", category] + noun] = 1.0
        if brand is not None:
            v[offsets["brands", category] + brand] = 0.5
        return unit(v)

    def with_language(v: np.ndarray, chinese: bool, weight: float) -> np.ndarray:
        if language and v.any():
            v = v.copy()
            v[at + int(chinese)] = weight
        return unit(v)

    it, us = hidden.items, hidden.users
    items = np.stack([with_language(named(int(it["cat"][i]), int(it["style"][i]), int(it["noun"][i]),
                                          int(it["brand"][i])), bool(it["zh"][i]), 1.0)
                      for i in (int(x[1:]) for x in item_ids)])
    users = np.zeros((len(user_ids), dim))
    for row, user_id in enumerate(user_ids):
        u = int(user_id[1:])
        parts = [named(q.category, q.style, q.noun) for q in us["query_truth"][u]]
        if profiles.get(user_id, "").strip():
            parts += [named(int(us["cats"][u, j]), int(us["main_style"][u, j])) for j in range(SLOTS)
                      if us["cats"][u, j] >= 0 and us["w0"][u, j] >= 0.2]   # the slots _profile writes about
        if parts:
            users[row] = with_language(unit(np.mean(parts, axis=0)), bool(us["zh"][u]), 0.5)
    return items.astype(np.float32), users.astype(np.float32)


def perfect_encoder_runs(config: dict, runs: Path, seeds: list[int]) -> dict[str, dict]:
    """configs/default.yaml trained as the demo is, per training seed: with MiniLM, and with its cached text
    vectors replaced by :func:`meaning_vectors` (without and with the language): how far any text encoder could
    move each block in this model, beside the seeds' own spread. The perfect rows are a bound, not a model: no
    encoder gives these vectors from the text, so such a run cannot be exported. Returns "name, seed S" -> block
    -> recall@10."""
    import shutil

    import pandas as pd

    from ingest.formats.generated import FILES, WORLD
    from ingest.generate import hidden_world
    from training import artifacts as artifacts_io
    from training.prepare import prepare
    from training.run import RunDir, setup_logging
    from training.trainer import train

    world = Path(config["data"]["path"])
    hidden = hidden_world(json.loads((world / WORLD).read_text(encoding="utf-8")))
    table = pd.read_csv(world / FILES["users"], dtype=str, keep_default_na=False)
    profiles = dict(zip(table["user_id"], table["profile_text"]))
    out = {}
    for seed in seeds:
        seeded = {**config, "training": {**config["training"], "seed": seed}}
        for name, language in (("MiniLM", None), ("perfect encoder (meaning)", False),
                               ("perfect encoder (meaning + language)", True)):
            run = RunDir(runs / f"seed{seed}-{name.replace(' ', '-').replace('(', '').replace(')', '')}")
            if run.path.exists():
                shutil.rmtree(run.path)
            setup_logging(run.log)
            artifacts = prepare(seeded, run, progress=False).artifacts
            if language is not None:
                artifacts.item_text_vectors, artifacts.user_text_vectors = meaning_vectors(
                    hidden, artifacts.catalog["item_id"].tolist(), artifacts.users["user_id"].tolist(), profiles,
                    artifacts.item_text_vectors.shape[1], language)
                artifacts_io.save(artifacts, run.artifacts)
            test = train(seeded, run, progress=False, created=True)["test"]
            out[f"{name}, seed {seed}"] = {block: (test if key is None else test.get(key, {})).get(f"recall@{K}")
                                           for block, key in METRIC_BLOCK.items()}
            log.info("%s, seed %d: %s", name, seed, out[f"{name}, seed {seed}"])
    return out


def summarize(ranks: dict, masks: dict) -> dict:
    out = {}
    for name, mask in masks.items():
        r = ranks["rank"][mask]
        hit = r < K
        out[name] = {"cases": int(mask.sum()), f"recall@{K}": float(hit.mean()),
                     f"ndcg@{K}": float((hit / np.log2(r + 2.0)).mean()),
                     f"expected_recall@{K}": float(ranks["expected"][mask].mean())}
    return out


def trained(encoders_json: Path) -> dict[str, dict]:
    """encoder -> block name -> recall@10, from bench/encoders.py's JSON (empty where it is missing)."""
    if not encoders_json.is_file():
        return {}
    rows = json.loads(encoders_json.read_text(encoding="utf-8"))
    out = {}
    for row in rows:
        test = row["blocks"]["all"]
        out[row["encoder"]] = {name: (test if key is None else test.get(key, {})).get(f"recall@{K}")
                               for name, key in METRIC_BLOCK.items()}
    return out


def with_seed_means(models: dict[str, dict]) -> dict[str, dict]:
    """``models`` and, for each name trained on several seeds ("NAME, seed S"), the mean of its seeds."""
    out = dict(models)
    names = sorted({key.split(", seed ")[0] for key in models if ", seed " in key})
    for name in names:
        rows = [row for key, row in models.items() if key.split(", seed ")[0] == name and ", seed " in key]
        if len(rows) > 1:
            out[f"{name}, mean of {len(rows)} seeds"] = {
                block: float(np.mean([r[block] for r in rows])) if all(r.get(block) is not None for r in rows)
                else None for block in rows[0]}
    return out


def write(path: Path, ceiling: dict, without: dict[str, dict], models: dict[str, dict], command: str,
          seconds: float) -> None:
    from bench.report import write_section

    blocks = list(ceiling)
    lines = [f"`{command}` on {os.cpu_count()} cores ({platform.machine()}), {time.strftime('%Y-%m-%d')}: "
             f"{seconds / 60:.1f} minutes. The test split of configs/default.yaml's world (the demo's), each case "
             "ranked by the probability the generator itself drew the target from, the user's earlier items left "
             "out as `twotower evaluate` leaves them out.", "",
             "| block | cases | ceiling R@10 | ceiling N@10 | ceiling expected R@10 |", "|---|---|---|---|---|"]
    lines += [f"| {block} | {row['cases']} | {row['recall@10']:.4f} | {row['ndcg@10']:.4f} | "
              f"{row['expected_recall@10']:.4f} |" for block, row in ceiling.items()]
    lines += ["", "What each thing the generator knows is worth: the ceiling's expected recall@10 when its ranking "
              "leaves one out (a term of a view's logits, or `drift`: the user's interests as at sign-up instead of "
              "at the time), and the share of the full ceiling's it keeps.", "",
              "| left out | " + " | ".join(blocks) + " |", "|---|" + "---|" * len(blocks)]
    for term, row in without.items():
        kept = [(row[block]["expected_recall@10"], ceiling[block]["expected_recall@10"]) for block in blocks]
        lines.append(f"| {term} | " + " | ".join(f"{got:.4f} ({got / full:.2f})" for got, full in kept) + " |")
    lines += ["", "Trained models' test recall@10 on the same cases, and (in brackets) as a share of the ceiling's "
              "expected recall@10. The three encoders' rows are bench/encoders.py's (docs/encoders.json); the "
              "seeded rows are this run's.", "",
              "| model | " + " | ".join(blocks) + " |", "|---|" + "---|" * len(blocks)]
    for name, row in with_seed_means(models).items():
        cells = ["–" if row.get(block) is None else
                 f"{row[block]:.4f} ({row[block] / ceiling[block]['expected_recall@10']:.2f})" for block in blocks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    write_section(path, "Results (bench/world_ceiling.py)", "\n".join(lines),
                  heading="# The generated world's ceiling: what the best possible ranker scores")
    figures = {"ceiling": ceiling, "without": without, "models": models}
    path.with_suffix(".json").write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--encoders", default=str(ROOT / "docs" / "encoders.json"),
                        help="bench/encoders.py's JSON: the trained models to set beside the ceiling")
    parser.add_argument("--out", default=str(ROOT / "docs" / "ceiling.md"))
    parser.add_argument("--perfect-encoder", metavar="RUNS",
                        help="also train the demo with MiniLM and with a perfect encoder's vectors, in RUNS")
    parser.add_argument("--seeds", default="0,1,2",
                        help="the training seeds of --perfect-encoder's runs (three runs each, ~1.5 minutes a run)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from ingest.generate import VIEW_TERMS
    from training.config import load_config

    started = time.time()
    config = load_config(args.config, [])
    if config["data"]["format"] != "generated":
        parser.error(f"{args.config}: data.format is {config['data']['format']!r}; the ceiling needs a generated "
                     "world (only there is the taste behind the behaviour known)")
    if not Path(config["data"]["path"]).is_absolute():
        config["data"]["path"] = str(ROOT / config["data"]["path"])
    ignores = [frozenset(), *(frozenset({term}) for term in (*VIEW_TERMS, "drift"))]
    ranks, masks = ceiling_ranks(config, ignores)
    ceiling = summarize(ranks[0], masks)
    without = {next(iter(ignore)): summarize(r, masks) for ignore, r in zip(ignores[1:], ranks[1:])}
    models = trained(Path(args.encoders))
    if args.perfect_encoder:
        models.update(perfect_encoder_runs(config, Path(args.perfect_encoder),
                                           [int(seed) for seed in args.seeds.split(",")]))
    command = "python bench/world_ceiling.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    write(Path(args.out), ceiling, without, models, command, time.time() - started)
    print(Path(args.out).read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
