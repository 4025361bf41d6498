"""Every tower configuration and every shipped config goes the whole way: train → export → a fresh process answers
raw-string requests, and the served model ranks exactly as ``evaluate`` scored it.

The matrix covers the user features (history, text, id and their unions), item feature subsets, the three history
encoders (the causal one trained on sequence windows), frozen and both fine-tune modes, mixed negatives and
streaming logQ, the semantic channel with history, text or both on the query side, the item-to-item channel (beside
the semantic channel, and under the causal encoder), a TF Hub encoder and two multilingual ones from the registry,
each trained for one short epoch with the tiny encoder on one small generated world. The shipped configs run on a
slice of their own data (the shared datasets; skipped with a message where ../shared is absent). Training and export
run in-process, in one module fixture; then the exports of a group are asked in ONE fresh process (one TensorFlow
import per group), which is the boundary that matters: a SavedModel that loads without the project's code. Each test
asserts its own case.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import EXPORT_K, ROOT, SHARED, cli_in_process
from served_parity import assert_served_equals_evaluated, probe_versions

FAST = ["--set", "training.epochs=1", "--set", "training.batch_size=128", "--set", "model.max_seq_len=32",
        "--set", "training.early_stopping_patience=10"]

# id → --set overrides on configs/smoke.yaml
MATRIX = {
    "history-only": ["model.user_features=[history]", "model.item_features=[text,category,brand,price]"],
    "text-only-users": ["model.user_features=[text]", "model.item_features=[text]"],
    "ids-only": ["model.user_features=[id]", "model.item_features=[id]"],
    "history-text-attention": ["model.user_features=[history,text]", "model.item_features=[text,id]",
                               "model.history_encoder=attention"],
    "history-id-mixed-negatives": ["model.user_features=[history,id]", "model.item_features=[id,category]",
                                   "training.uniform_negatives=32", "training.item_frequency=streaming"],
    "text-id": ["model.user_features=[text,id]", "model.item_features=[text,brand,price]"],
    "all-finetune-top-attention": ["model.encoder_mode=finetune_top_n", "model.finetune_top_n=1",
                                   "model.history_encoder=attention"],
    "history-only-full-finetune": ["model.user_features=[history]", "model.item_features=[text]",
                                   "model.encoder_mode=full"],
    "semantic-all-features": ["model.semantic_channel=true"],
    "semantic-all-features-causal": ["model.semantic_channel=true", "model.history_encoder=causal"],
    "semantic-history-only-attention": ["model.semantic_channel=true", "model.user_features=[history]",
                                        "model.item_features=[text,category,brand,price]",
                                        "model.history_encoder=attention"],
    "semantic-text-only-users-finetune": ["model.semantic_channel=true", "model.user_features=[text]",
                                          "model.item_features=[text,id]", "model.encoder_mode=finetune_top_n",
                                          "model.finetune_top_n=1"],
    "item-item-semantic": ["model.semantic_channel=true", "model.item_item_rank=16", "model.lexical_dim=16"],
    "item-item-causal-history-only": ["model.user_features=[history]", "model.item_features=[text,category]",
                                      "model.history_encoder=causal", "model.item_item_rank=16"],
}
# shipped config → the shared dataset folder it reads (None: the generated world)
SHIPPED = {"default": None, "smoke": None, "amazon_scientific": "amazon-scientific",
           "amazon_beauty": "amazon-beauty", "movielens_100k": "movielens-100k"}
# case → the named encoder from the registry it trains with, that encoder's width, and its other overrides (m3e
# centres its vectors per script, model.text_centering; e5 is as configs/amazon_scientific.yaml ships it)
REGISTRY_ENCODERS = {"m3e": ("m3e-small", 512, ["model.text_centering=true"]),
                     "e5": ("multilingual-e5-small", 384, [])}
# case → its group: the models of a group are built on one pytest-xdist worker and asked in one fresh process
# (one TensorFlow import per group); four groups let both workers share the module's training
GROUPS = {**{case: "matrix-a" if n < 6 else "matrix-b" for n, case in enumerate(sorted(MATRIX))}, "scann": "matrix-b",
          "hub-frozen": "encoders", "hub-full": "encoders", "m3e": "encoders", "e5": "e5",
          **{f"shipped-{config}": "shipped" for config in SHIPPED}}


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("matrix") / "world"
    cli_in_process("generate", "--out", out, "--users", 200, "--items", 150, "--seed", 3)
    return out


def train_and_export(config: Path, overrides: list[str], data_path: Path, cache: Path, folder: Path,
                     index: str = "brute-force", extra: tuple = ()) -> tuple[Path, Path]:
    run = folder / "run"
    sets = [item for override in overrides for item in ("--set", override)]
    cli_in_process("train", "--config", config, *sets, *FAST, "--set", f"data.path={data_path}",
                   "--set", f"training.text_cache_dir={cache}", *extra, "--run-dir", run)
    version = cli_in_process("export", "--run-dir", run, "--base-path", folder / "models" / "shop",
                             "--index", index, "--k", EXPORT_K, "--target-recall", 1.0).strip().splitlines()[-1]
    return run, Path(version)


# what every model must answer besides the evaluated users: an unknown id with an unknown item and a search, text
# only, Chinese text with a search
ODD = {"signature": "serving_default", "inputs": {
    "user_id": ["nobody", "", ""], "history": [["NOT-AN-ITEM", ""], ["", ""], ["", ""]],
    "user_text": ["", "lightweight camping tent", "轻便双人帐篷，防水"], "search_query": ["tent", "", "帐篷"]}}


@dataclasses.dataclass
class Case:
    """One trained and exported model of this module, asked in the shared fresh process."""

    run: Path | None = None
    version: Path | None = None
    expected: object = None            # export.parity.Evaluated
    outputs: dict | None = None
    error: BaseException | None = None

    def served(self) -> tuple[Path, Path, dict]:
        """The run, the version and the fresh process's outputs; re-raises what failed while building it."""
        if self.error is not None:
            raise self.error
        return self.run, self.version, self.outputs


def probe_cases(cases: dict[str, Case], folder: Path, extra: dict[str, dict] | None = None) -> None:
    """Asks every built case's export in ONE fresh process (one TensorFlow import for all): the evaluated sample,
    the odd requests and ``extra[name]``; a failure of that process is every case's failure."""
    from export.parity import evaluated

    built = []
    folder.mkdir(parents=True, exist_ok=True)
    for name, case in cases.items():
        if case.error is None:
            try:
                case.expected = evaluated(case.run)
                built.append(name)
            except Exception as err:  # noqa: BLE001 - kept for the case's own test to raise
                case.error = err
    if not built:
        return
    try:
        answers = probe_versions([(cases[name].version, {**cases[name].expected.requests(), "odd": ODD,
                                                         **(extra or {}).get(name, {})}) for name in built], folder)
    except AssertionError as err:
        for name in built:
            cases[name].error = err
        return
    for name, outputs in zip(built, answers):
        cases[name].outputs = outputs


def case_from(find: Callable[[], tuple[Path, Path]]) -> Case:
    """A case of the run and export ``find()`` gives; what fails is kept for the case's own test to raise."""
    try:
        return Case(*find())
    except (Exception, pytest.skip.Exception) as err:  # noqa: BLE001 - a skip too: only the case's test skips
        return Case(error=err)


def quality_bench_model(bench: Path, dataset: str) -> tuple[Path, Path]:
    """The run and the served export of our model in the quick quality bench's folder (tests/conftest.py)."""
    results = json.loads((bench / "quality.json").read_text())[dataset]
    served = next(r["served"] for r in results if r["model"] == "twotower (ours)")
    return bench / "runs" / dataset, Path(served["version"])


def check_whole_way(case: Case) -> tuple[Path, Path, dict]:
    """Raw strings in a fresh process: known users, an unknown id with an unknown item, a text-only newcomer;
    then the served rankings and vectors against the evaluated model's."""
    run, version, outputs = case.served()
    assert outputs["__imported__"].tolist() == []    # the project's code was never imported there
    assert outputs["odd/item_ids"].shape == (3, EXPORT_K) and all(i for i in outputs["odd/item_ids"].ravel())
    assert_served_equals_evaluated(case.expected, outputs, EXPORT_K)
    return run, version, outputs


class WholeWay:
    """The module's models by case name. The first test of a group trains and exports every case of that group
    (in-process) and asks all their exports in one fresh process; the group's other tests reuse the answers."""

    def __init__(self, request: pytest.FixtureRequest, root: Path):
        self.request, self.root, self.cases = request, root, {}

    def __getitem__(self, name: str) -> Case:
        if name not in self.cases:
            group = sorted((case for case, of in GROUPS.items() if of == GROUPS[name]), key=self.reused)
            built = {case: case_from(lambda case=case: self.make(case)) for case in group}
            probe_cases(built, self.root / GROUPS[name], extra=self.extra(group))
            self.cases.update(built)
        return self.cases[name]

    @staticmethod
    def reused(name: str) -> bool:
        """Whether the case reuses another fixture's model (built last: another worker may be making it)."""
        return name in ("shipped-smoke", "shipped-amazon_scientific")

    def fixture(self, name: str):
        return self.request.getfixturevalue(name)

    def make(self, name: str) -> tuple[Path, Path]:
        """Trains and exports case ``name`` (or finds the session's run and export that it reuses)."""
        smoke, folder = ROOT / "configs" / "smoke.yaml", self.root / re.sub(r"[^\w-]", "_", name)
        world, cache = self.fixture("small_world"), self.fixture("text_cache")
        if name in MATRIX:
            with pytest.MonkeyPatch.context() as patch:   # the small world's kinds have a few dozen valid cases
                patch.setattr("training.calibrate.MIN_CASES", 10)
                return train_and_export(smoke, MATRIX[name], world, cache, folder)
        if name == "scann":
            return train_and_export(smoke, MATRIX["history-only"], world, cache, folder, index="scann")
        if name.startswith("hub-"):
            overrides = [f"model.encoder=hub:{self.fixture('tiny_hub')}", f"model.encoder_mode={name[4:]}"]
            return train_and_export(smoke, overrides, world, cache, folder)
        if name in REGISTRY_ENCODERS:
            from towers.named_encoders import CACHE_ENV

            with pytest.MonkeyPatch.context() as patch:
                patch.setenv(CACHE_ENV, str(self.root / "encoders"))
                encoder, _, overrides = REGISTRY_ENCODERS[name]
                return train_and_export(smoke, [f"model.encoder={encoder}", *overrides], world, cache, folder)
        config = name.removeprefix("shipped-")
        data = SHIPPED[config]
        if data is not None and not (SHARED / data).is_dir():
            pytest.skip(f"{SHARED / data} not found: the shared datasets are not on this machine")
        if config == "smoke":   # the session's own run and export
            return self.fixture("trained")[0], self.fixture("brute_force_export") / "1"
        if config == "amazon_scientific":   # the quick quality bench's model on its slice
            return quality_bench_model(self.fixture("quick_quality_bench"), data)
        return train_and_export(ROOT / "configs" / f"{config}.yaml", ["model.encoder=tiny"],
                                world if data is None else SHARED / data, cache, folder,
                                extra=() if data is None else ("--set", "data.max_users=300"))

    def extra(self, group: list[str]) -> dict[str, dict]:
        """More requests for some cases: raw item text through a TF Hub encoder's export, catalogue items through
        an export with the item-to-item channel."""
        embedded = [case for case in group if case.startswith(("hub-", "item-item"))]
        if not embedded:
            return {}
        import pandas as pd

        items = pd.read_csv(self.fixture("small_world") / "items.csv", keep_default_na=False).head(20)
        fields = {f: items[f].astype(str).tolist() for f in ("item_id", "title", "description", "category", "brand")}
        embed = {"items": {"signature": "embed_items",
                           "inputs": {**fields, "price": items["price"].astype(float).tolist()}}}
        return {case: embed for case in embedded}


@pytest.fixture(scope="module")
def whole_way(small_world, request, tmp_path_factory) -> WholeWay:
    """The tower matrix, history-only through ScaNN, the TF Hub encoder frozen and fine-tuned, m3e-small,
    multilingual-e5-small and every shipped config (the smoke config is the session's own run, amazon_scientific
    the quick quality bench's model on its slice: both already trained and exported), in the groups of GROUPS."""
    return WholeWay(request, tmp_path_factory.mktemp("whole-way"))


def grouped(case: str, *values) -> object:
    """``case``'s parameter for a test (or its marks when no values are given): tests of one group of GROUPS run
    on one pytest-xdist worker, which builds and asks that group's models once."""
    mark = pytest.mark.xdist_group(f"whole_way-{GROUPS[case]}")
    return pytest.param(*values, marks=mark, id=values[0] if values else None) if values else mark


@pytest.mark.parametrize("case", [grouped(case, case) for case in sorted(MATRIX)])
def test_every_tower_configuration_trains_exports_and_serves_as_evaluated(case, whole_way):
    check_whole_way(whole_way[case])


@pytest.mark.parametrize("case", [grouped(case, case) for case in sorted(MATRIX)])
def test_the_query_path_holds_the_encoder_only_where_the_query_reads_text(case, whole_way):
    """A user tower that reads no text (no `text` user feature, no semantic channel) gets no BERT in the served
    query path: a `user_text` request to it costs no encoding, and every request is spared the encoder's branch
    (docs/benchmarks.md); `embed_items` (new items' text) keeps it. A tower that reads text has it."""
    import yaml

    run, version, _ = check_whole_way(whole_way[case])
    model = yaml.safe_load((run / "config.yaml").read_text())["model"]
    reads_text = "text" in model["user_features"] or model["semantic_channel"]
    assert encoder_reached(version, "serving_default") == reads_text
    assert encoder_reached(version, "embed_items") == ("text" in model["item_features"])


def encoder_reached(version: Path, signature: str) -> bool:
    """Whether a signature's graph reaches the text encoder (a node of a BERT model or tokenizer), through every
    function it calls, the branches of its conds included."""
    from export.ops import saved_model_proto

    meta = saved_model_proto(version).meta_graphs[0]
    functions = {function.signature.name: function for function in meta.graph_def.library.function}
    graph = {node.name: node for node in meta.graph_def.node}
    # (node, whether it is the main graph's: only those have their inputs looked up there)
    nodes = [(graph[info.name.split(":")[0]], True) for info in meta.signature_def[signature].outputs.values()]
    seen: set[str] = {node.name for node, _ in nodes}
    while nodes:
        node, main = nodes.pop()
        if "bert" in node.name.lower():
            return True
        for source in (source.split(":")[0].lstrip("^") for source in node.input) if main else ():
            if source in graph and source not in seen:
                seen.add(source)
                nodes.append((graph[source], True))
        for value in node.attr.values():
            called = [value.func.name] if value.HasField("func") else [f.name for f in value.list.func]
            for name in called:
                if name and f"function {name}" not in seen and name in functions:
                    seen.add(f"function {name}")
                    nodes.extend((inner, False) for inner in functions[name].node_def)
    return False


@pytest.mark.parametrize("case", [grouped(case, case) for case in sorted(MATRIX) if case.startswith("semantic")])
def test_semantic_weights_fitted_on_the_validation_split_are_the_served_ones(case, whole_way):
    """`train` fits the channel's weights per request kind after training (training/calibrate.py) and writes them
    into the best checkpoint: what evaluate scores, the card records and (served = evaluated) the export answers
    with."""
    run, version, _ = check_whole_way(whole_way[case])
    fitted = json.loads((run / "state.json").read_text())["semantic_weights"]["kinds"]
    assert any("recall@10" in kind for kind in fitted.values())    # at least one kind was fitted on its cases
    card = json.loads((version / "assets" / "model_card.json").read_text())
    weights = json.loads((run / "metrics.json").read_text())["semantic_channel"]["weights"]
    assert card["semantic_channel"] == weights
    for name, kind in fitted.items():
        assert weights[f"weight_{name}"] == pytest.approx(max(kind["fitted"], 1e-4), rel=1e-4)


@pytest.mark.parametrize("case", [grouped(case, case) for case in sorted(MATRIX) if case.startswith("item-item")])
def test_item_item_weight_fitted_on_the_validation_split_is_served(case, whole_way, small_world):
    """model.item_item_rank: `train` fits the channel's weight after the towers (0 while they trained) and keeps it
    in the best checkpoint; metrics.json and the model card record it, the export ranks with it (served =
    evaluated) and `embed_items` of a catalogue item ends with that item's own block (what evaluate scored), of an
    item without training interactions with the mean block of its nearest items, in the catalogue and served;
    `score` takes a history item's score with itself off, as evaluate does."""
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from export.parity import in_process, padded
    from training.evaluate import add_repeat_offset, model_scorer
    from training.run import RunDir
    from training.trainer import evaluated_model, evaluation_split

    run, version, outputs = check_whole_way(whole_way[case])
    fitted = json.loads((run / "state.json").read_text())["item_item_weight"]
    channel = json.loads((run / "metrics.json").read_text())["item_item"]
    card = json.loads((version / "assets" / "model_card.json").read_text())["item_item"]
    assert channel["weight"] == card["weight"] == fitted["fitted"] > 0 and card["rank"] == 16
    assert card["neighbours"] == channel["neighbours"] == 20
    assert fitted["recall@10"]["0.0"] < fitted["recall@10"][str(fitted["fitted"])]
    items = pd.read_csv(small_world / "items.csv", keep_default_na=False).head(20)
    config, prepared, model = evaluated_model(RunDir(str(run)))
    expected = model.embed_items(tf.constant(items["item_id"].astype(str).tolist())).numpy()
    assert np.abs(expected[:, -16:]).sum() > 0
    np.testing.assert_allclose(outputs["items/embedding"], expected, atol=1e-5)
    # catalogue items without training interactions borrowed their nearest items' blocks: every item has one
    catalog = prepared.artifacts.catalog["item_id"].tolist()
    cold = int((prepared.artifacts.item_counts == 0).sum())
    assert cold > 0 and json.loads((run / "state.json").read_text())["item_item_borrowed"] == cold
    assert channel["borrowed_blocks"] == cold
    everything = model.embed_items(tf.constant(catalog)).numpy()
    assert np.abs(everything[:, -16:]).sum(axis=1).min() > 0
    # and so does an item the model has never seen, served: the mean block of its 20 nearest catalogue items
    fresh = {**{f: [f"{v} (new)" for v in items[f].astype(str).head(3)] for f in ("item_id", "title", "description")},
             **{f: items[f].astype(str).head(3).tolist() for f in ("category", "brand")},
             "price": items["price"].astype(float).head(3).tolist()}
    served = in_process(version)({"n": {"signature": "embed_items", "inputs": fresh}})["n/embedding"]
    dim = config["model"]["embedding_dim"]
    unit = everything[:, :dim] / np.linalg.norm(everything[:, :dim], axis=1, keepdims=True)
    for vector in served:
        nearest = np.argsort(-(unit @ (vector[:dim] / np.linalg.norm(vector[:dim]))))[:20]
        np.testing.assert_allclose(vector[-16:], everything[nearest, -16:].mean(axis=0), atol=1e-5)
    # `score` of a user's own history items (and a few others): without their score with themselves, as evaluated
    cases = evaluation_split(config, prepared, "test")
    cases = cases.subset(np.flatnonzero((cases.history != "").sum(axis=1) >= 2)[:5])
    candidates = [[h for h in history if h] + catalog[:3] for history in cases.history.astype(str)]
    served = in_process(version)({"s": {"signature": "score", "inputs": {
        "user_id": cases.user_id.astype(str).tolist(), "history": cases.history.astype(str).tolist(),
        "user_text": [""] * len(cases), "candidates": padded(candidates)}}})["s/scores"]
    evaluated = model_scorer(model, catalog)(cases)
    index = {item: row for row, item in enumerate(catalog)}
    add_repeat_offset(evaluated, cases, index, model.user_tower.repeat.value())   # `score` adds it (towers/repeat.py)
    for row, ids in enumerate(candidates):
        np.testing.assert_allclose(served[row, :len(ids)], evaluated[row, [index[i] for i in ids]], atol=1e-5)


@grouped("scann")
def test_history_only_scann_at_recall_one_ranks_as_evaluated(whole_way):
    """The configuration behind the Amazon figures, through a ScaNN index tuned to recall 1.0."""
    _, version, _ = check_whole_way(whole_way["scann"])
    card = json.loads((version / "assets" / "model_card.json").read_text())
    assert card["index"]["type"] == "scann" and card["index"]["recall_at_k_vs_brute_force"] == 1.0


@pytest.fixture(scope="module")
def tiny_hub(small_world, tmp_path_factory) -> Path:
    """A TF Hub pair, written by `twotower encoder export-hub` from a tiny BERT of the small world's corpus."""
    import pandas as pd

    from towers.text_encoder import make_tiny_bert

    folder = tmp_path_factory.mktemp("hub")
    items = pd.read_csv(small_world / "items.csv")
    make_tiny_bert(folder / "bert", (items["title"] + ". " + items["description"]).tolist(), seed=0)
    cli_in_process("encoder", "export-hub", "--encoder", folder / "bert", "--out", folder / "pair")
    return folder / "pair"


@pytest.mark.parametrize("mode", [grouped(f"hub-{mode}", mode) for mode in ("frozen", "full")])
def test_tf_hub_encoder_trains_exports_and_serves_as_evaluated(mode, whole_way, small_world):
    """model.encoder: hub:DIR, frozen and fine-tuned; in the fresh process, raw item text goes through the hub
    preprocessing and encoder inside the export and lands on the evaluated item vectors."""
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from training.run import RunDir
    from training.trainer import evaluated_model

    run, _, outputs = check_whole_way(whole_way[f"hub-{mode}"])
    items = pd.read_csv(small_world / "items.csv", keep_default_na=False).head(20)
    _, _, model = evaluated_model(RunDir(str(run)))
    expected = model.embed_items(tf.constant(items["item_id"].astype(str).tolist())).numpy()
    np.testing.assert_allclose(outputs["items/embedding"], expected, atol=1e-5)


@pytest.mark.parametrize("case", [grouped(case, case) for case in REGISTRY_ENCODERS])
def test_registry_encoders_train_export_and_serve_chinese(case, whole_way):
    """model.encoder: m3e-small (WordPiece, converted from PyTorch weights without PyTorch) and
    multilingual-e5-small (SentencePiece, decoded from its 4-bit package): no [UNK] warning on the world's Chinese
    fields, the licence said as it is, and the export answers Chinese user text in a fresh process. m3e trains with
    model.text_centering: check_whole_way's search requests hold the served graph's centring to the training's."""
    encoder, dim, overrides = REGISTRY_ENCODERS[case]
    run, version, _ = check_whole_way(whole_way[case])
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "are [UNK]" not in log and "[UNK] share in 'title': 0.00%" in log
    assert ("non-commercial research use only" in log) == (encoder == "m3e-small")
    # vectors centred per script in training and in the served graph alike (the search parity above)
    assert ("text vectors centred per script" in log) == ("model.text_centering=true" in overrides)
    card = json.loads((version / "assets" / "model_card.json").read_text(encoding="utf-8"))
    assert card["encoder"]["name"] == encoder and card["encoder"]["dim"] == dim


@pytest.mark.parametrize("config", [grouped(f"shipped-{config}", config) for config in sorted(SHIPPED)])
def test_every_shipped_config_goes_the_whole_way_on_a_slice(config, whole_way):
    """Each file in configs/ as shipped, but the tiny encoder, one epoch and (for the datasets) 300 users. The
    smoke config is the session's own run (tests/conftest.py), already trained and exported."""
    check_whole_way(whole_way[f"shipped-{config}"])


def test_shipped_configs_are_all_covered():
    assert {p.stem for p in (ROOT / "configs").glob("*.yaml")} == set(SHIPPED)
