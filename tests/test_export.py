"""Export: TF Serving layout, signatures, parity in a fresh process, custom-op accounting, OOV, atomicity."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import EXPORT_K, cli, cli_in_process, serve_a_copy
from served_parity import probe_versions

pytestmark = pytest.mark.xdist_group("export")   # the module's exports: one pytest-xdist worker

K = EXPORT_K   # the shared brute-force export's


@pytest.fixture(scope="module")
def exported(trained, brute_force_export, tmp_path_factory):
    """Beside a copy of the session's brute-force export (version 1), a ScaNN export of the same run: version 2.
    (base, scann, brute, the ScaNN export's stderr)"""
    base = serve_a_copy(brute_force_export, tmp_path_factory.mktemp("models") / "shop")
    scann = cli("export", "--run-dir", trained[0], "--base-path", base, "--k", K)
    return base, Path(scann.stdout.strip().splitlines()[-1]), base / "1", scann.stderr


@pytest.fixture(scope="module")
def in_memory(trained):
    from export.trained import load_trained

    return load_trained(str(trained[0]))


@pytest.fixture(scope="module")
def requests(in_memory):
    catalog = in_memory.artifacts.catalog
    users = in_memory.artifacts.train_user_ids[:100]
    ids = catalog["item_id"].tolist()
    history = [[ids[(7 * i + j) % len(ids)] for j in range(5)] for i in range(len(users))]
    query = {"user_id": users, "history": history, "user_text": [""] * len(users)}
    row = catalog.iloc[3]
    return {"query": {"signature": "embed_query", "inputs": query},
            "top": {"signature": "serving_default", "inputs": query},
            "items": {"signature": "embed_items", "inputs": {
                "item_id": ids[:20], **{f: catalog[f].tolist()[:20] for f in ("title", "category", "brand")},
                "description": [""] * 20, "price": catalog["price"].tolist()[:20]}},
            "odd": {"signature": "serving_default", "inputs": {
                "user_id": ["nobody", "", "U00001"], "history": [["NOT-AN-ITEM", ""], ["", ""], ["", ""]],
                "user_text": ["", "lightweight camping tent", ""]}},
            "new": {"signature": "embed_items", "inputs": {   # a near-duplicate listing under a new id
                "item_id": ["NEW-1"], "title": [row["title"] + " (2025 edition)"],
                "description": [row["description"]],
                "category": [row["category"]], "brand": [row["brand"]], "price": [float(row["price"])]}}}


@pytest.fixture(scope="module")
def outputs(exported, requests, tmp_path_factory):
    _, scann, brute, _ = exported
    scann_out, brute_out = probe_versions([(scann, requests), (brute, requests)], tmp_path_factory.mktemp("probe"))
    return {"scann": scann_out, "brute": brute_out}


def test_versions_layout_model_card_and_server_files(exported):
    base, scann, brute, _ = exported
    assert (brute.name, scann.name) == ("1", "2") and scann.parent == base
    for version in (scann, brute):
        assert (version / "saved_model.pb").exists() and (version / "variables").is_dir()
    assert not [p for p in base.iterdir() if p.name.startswith(".tmp")]
    card = json.loads((scann / "assets" / "model_card.json").read_text())
    for key in ("training_config", "data_fingerprint", "metrics", "encoder", "index", "items", "embedding_dim",
                "libraries", "created"):
        assert key in card, key
    assert card["index"]["type"] == "scann" and card["index"]["recall_at_k_vs_brute_force"] >= 0.95
    assert card["items"] == 500 and card["libraries"]["scann"] == "1.4.2"
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse((base.parent / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    assert [(m.name, m.base_path) for m in config.model_config_list.config] == [("shop", str(base.resolve()))]
    assert "max_batch_size" in (base.parent / "batching_parameters.txt").read_text()


def test_fresh_process_parity_exact_brute_force_and_scann_recall(outputs, requests, in_memory):
    import tensorflow as tf

    catalog = in_memory.artifacts.catalog
    ids = catalog["item_id"].tolist()
    users, history = requests["query"]["inputs"]["user_id"], requests["query"]["inputs"]["history"]
    for out in outputs.values():
        assert out["__imported__"].tolist() == []  # the project's code was never imported there
    # embeddings: the SavedModel equals the in-memory towers
    expected_query = in_memory.model.embed_users(tf.constant(users), tf.constant(history)).numpy()
    np.testing.assert_allclose(outputs["brute"]["query/embedding"], expected_query, atol=1e-5)
    text = in_memory.encoder.encode([f"{t}. {c}. {b}".replace(". .", ".").strip(". ") for t, c, b in
                                     zip(catalog["title"][:20], catalog["category"][:20], catalog["brand"][:20])],
                                    progress=False)
    features = {"item_id": tf.constant(ids[:20]), "text_vec": tf.constant(text),
                "category": tf.constant(catalog["category"].tolist()[:20]),
                "brand": tf.constant(catalog["brand"].tolist()[:20]),
                "price": tf.constant(catalog["price"].to_numpy("float32")[:20])}
    np.testing.assert_allclose(outputs["brute"]["items/embedding"], in_memory.model.item_tower(features).numpy(),
                               atol=1e-5)
    # brute force: exactly the in-memory full ranking, history excluded
    vectors = in_memory.item_vectors()
    scores = expected_query @ vectors.T
    for row, seen in enumerate(history):
        scores[row, [ids.index(i) for i in seen]] = -np.inf
    expected_top = [[ids[j] for j in np.argsort(-s, kind="stable")[:K]] for s in scores]
    got = [[i.decode() for i in r] for r in outputs["brute"]["top/item_ids"]]
    assert got == expected_top
    assert not any(set(r) & set(h) for r, h in zip(got, history))
    np.testing.assert_allclose(outputs["brute"]["top/scores"], np.sort(scores, axis=1)[:, ::-1][:, :K], atol=1e-5)
    # ScaNN: recall@K against brute force
    approx = [[i.decode() for i in r] for r in outputs["scann"]["top/item_ids"]]
    recall = np.mean([len(set(a) & set(e)) / K for a, e in zip(approx, expected_top)])
    assert recall >= 0.95, recall


def test_brute_force_needs_no_scann_ops_and_inspect_says_so(exported):
    from export.ops import custom_ops, stock_server_can_load

    _, scann, brute, _ = exported
    brute_ops, scann_ops = custom_ops(brute), custom_ops(scann)
    assert "scann" not in brute_ops and stock_server_can_load(brute_ops)
    assert set(brute_ops) <= {"tensorflow_text"}  # TF Text ops: linked into stock TF Serving since 2.2
    assert any("Scann" in op for op in scann_ops["scann"]) and not stock_server_can_load(scann_ops)
    report = cli_in_process("inspect", brute)
    assert f"SavedModel {brute}" in report and "can load this model" in report
    report = cli_in_process("inspect", scann.parent)  # the base path: its newest version (ScaNN)
    assert f"SavedModel {scann}" in report
    assert "scann: Scann>" in report and "import scann" in report and "CANNOT load" in report
    assert "out item_ids         string   [B, 10]" in report and "in  history          string   [B, ?]" in report
    assert "in  diversity        float    [B]  optional, default [0.0]" in report
    assert "Smoke query:" in report and "recall@k vs brute force" in report


def test_unknown_ids_empty_history_and_text_only_users_get_results(outputs):
    out = outputs["scann"]
    assert out["odd/item_ids"].shape == (3, K) and np.isfinite(out["odd/scores"]).all()
    assert all(i.decode() for i in out["odd/item_ids"].ravel())
    assert not np.array_equal(out["odd/item_ids"][0], out["odd/item_ids"][1])  # the text moved the query


def test_new_item_lands_next_to_its_near_duplicate(outputs, in_memory):
    vector = outputs["brute"]["new/embedding"][0]
    similarity = in_memory.item_vectors() @ vector
    assert np.argsort(-similarity).tolist().index(3) < 5, similarity[3]  # among its 5 nearest catalogue items


def test_failed_export_leaves_no_version_behind(trained, tmp_path, monkeypatch):
    import tensorflow as tf

    from export.trained import ExportError
    from export.writer import export_run

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", disk_full)
    base = tmp_path / "models" / "shop"
    with pytest.raises(ExportError, match="no version written: OSError"):
        export_run(str(trained[0]), str(base), index="brute-force", k=K)
    assert list(base.iterdir()) == []
    result = cli("export", "--run-dir", tmp_path / "not-a-run", "--base-path", base, check=False)
    assert result.returncode == 2 and "not a run directory" in result.stderr and "Traceback" not in result.stderr
    assert list(base.iterdir()) == []


def test_index_add_retunes_scann_over_the_grown_catalogue(exported, in_memory, tmp_path):
    import shutil

    import tensorflow as tf

    from export.add_items import add_items
    from serving.servable import register_custom_ops

    _, scann, _, _ = exported
    base = tmp_path / "shop"
    shutil.copytree(scann, base / "1")
    row = in_memory.artifacts.catalog.iloc[7]
    items = tmp_path / "new.jsonl"
    new = {"item_id": "NEW-1", "title": row["title"] + " (2025 edition)", "description": row["description"],
           "category": row["category"], "brand": row["brand"], "price": float(row["price"])}
    items.write_text(json.dumps(new) + "\n", encoding="utf-8")
    version = add_items(str(base), str(items), progress=False)
    card = json.loads((version / "assets" / "model_card.json").read_text())
    assert version == base / "2" and card["items"] == 501 and card["index"]["type"] == "scann"
    assert card["index"]["recall_at_k_vs_brute_force"] >= 0.9
    register_custom_ops()
    signatures = tf.saved_model.load(str(version)).signatures
    # Every item's history as a query; the grown catalogue's exact ranking (the `score` signature over all 501 ids)
    # is what the re-tuned ScaNN index must find. Where the new item lands depends on the trained weights, so
    # the test asks the index to agree with the exact ranking, not for a rank of its own.
    ids = in_memory.artifacts.catalog["item_id"].tolist() + ["NEW-1"]
    query = {"user_id": tf.constant([""] * len(ids)), "history": tf.constant([[i] for i in ids]),
             "user_text": tf.constant([""] * len(ids)), "search_query": tf.constant([""])}
    exact = signatures["score"](**query, candidates=tf.constant([ids] * len(ids)))["scores"].numpy()
    np.fill_diagonal(exact, -np.inf)                                      # serving_default excludes the history
    found = signatures["serving_default"](**query, diversity=tf.constant([0.0]), exclude=tf.constant([[""]]),
                                          max_per_category=tf.constant([0]))["item_ids"].numpy()
    k = found.shape[1]
    best = np.array(ids, dtype=object)[np.argsort(-exact, axis=1)[:, :k]]
    overlap = np.mean([len(set(f.decode() for f in got) & set(want)) / k for got, want in zip(found, best)])
    assert overlap >= 0.9, overlap
    should = [q for q, want in enumerate(best) if "NEW-1" in want]     # queries whose exact top-k holds it
    served = [q for q in should if b"NEW-1" in found[q].tolist()]
    assert should and len(served) >= 0.8 * len(should), (len(should), len(served))
    new_vector = signatures["embed_items"](**{f: tf.constant([v]) for f, v in new.items()})["embedding"].numpy()[0]
    queries = signatures["embed_query"](**query)["embedding"].numpy()
    np.testing.assert_allclose(exact[:-1, -1], queries[:-1] @ new_vector, rtol=1e-4, atol=1e-4)


def test_an_export_error_is_one_line(trained, tmp_path, monkeypatch, capsys):
    """A TensorFlow tracing error spans dozens of lines; the user gets the inner error on one `error:` line."""
    import tensorflow as tf

    from twotower.cli import main

    def tracing_error(*args, **kwargs):
        raise ValueError("in user code:\n\n    File \"towers/mlp.py\", line 30, in call\n"
                         "        x = self.norm(inputs)\n\n"
                         "    ValueError: Exception encountered when calling layer 'norm' (type LayerNormalization)."
                         "\n    \n    Cannot take the length of shape with unknown rank.\n    \n"
                         "    Call arguments received by layer 'norm' (type LayerNormalization):\n      • inputs=x\n")

    monkeypatch.setattr(tf.saved_model, "save", tracing_error)
    monkeypatch.delenv("TWOTOWER_DEBUG", raising=False)
    base = tmp_path / "models" / "shop"
    code = main(["-q", "export", "--run-dir", str(trained[0]), "--base-path", str(base), "--index", "brute-force"])
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith("error: writing version 1") and "unknown rank" in errors[0]
    assert not any(noise in stderr for noise in ("Traceback", "in user code", "Call arguments", "towers/mlp.py"))
    assert list(base.iterdir()) == []


def test_export_prints_no_native_log_lines(exported, trained):
    """ScaNN's C++ partitioner lines and TensorFlow's start-up lines stay off the terminal (`-v` shows them)."""
    from twotower.native_logs import NATIVE_LINE

    for stderr in (exported[3], trained[1].stderr):
        noise = [line for line in stderr.splitlines() if NATIVE_LINE.match(line) or "cuInit" in line
                 or "oneDNN" in line or "deprecated" in line]
        assert not noise, noise[:5]


def test_a_request_without_text_forwards_none_of_the_encoders_weights(brute_force_export, in_memory):
    """An id+history request, run as the server runs it (a Session over the MetaGraph, step stats on), takes the
    encoder's branch as one If op fed by a few tensors: BERT's weights are one packed variable
    (export/packed_encoder.py), not ~200 handles and a Switch node in front of each (a lowered cond), which every
    request paid for whichever branch it took (docs/benchmarks.md); no encoder op runs and no string variable is read
    whole. The request's answer is the same as the in-process one."""
    import tensorflow as tf

    from export.loaded import LoadedVersion, signature_defaults
    from serving.session import GraphSession

    version = brute_force_export / "1"
    ids = in_memory.artifacts.catalog["item_id"].tolist()
    request = {"user_id": np.array([b"U00001"]), "history": np.array([[i.encode() for i in ids[3:8]]]),
               "user_text": np.array([b""])}
    graph = GraphSession(version, ["serve"])
    try:
        signature = loader_signature(version)
        inputs = {**signature_defaults(signature), **request}
        feeds = {graph.graph.get_tensor_by_name(signature.inputs[name].name): value
                 for name, value in inputs.items() if name in signature.inputs}
        fetch = graph.graph.get_tensor_by_name(signature.outputs["item_ids"].name)
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE,
                                          output_partition_graphs=True)
        metadata = tf.compat.v1.RunMetadata()
        served = graph.session.run(fetch, feeds, options=options, run_metadata=metadata)
    finally:
        graph.close()
    nodes = {node.name: node for partition in metadata.partition_graphs for node in partition.node}
    ran = [nodes[stats.node_name] for device in metadata.step_stats.dev_stats for stats in device.node_stats
           if stats.node_name in nodes]
    branches = [node for node in ran if node.op == "If"]
    assert branches and max(len(node.input) for node in branches) < 20, [len(node.input) for node in branches]
    assert not [node.name for node in ran if "bert" in node.name], "an encoder weight or op ran"
    assert sum(node.op == "Switch" for node in ran) < 20
    # nor does it read a string variable whole (the catalogue's ids: a copy of every id per request, 60-100 us)
    assert not [node.name for node in ran if node.op == "ReadVariableOp"
                and node.attr["dtype"].type == tf.string.as_datatype_enum]
    # nor is a variable both gathered from and read whole: the gather puts it in copy-on-read mode and every whole
    # read then copies it (the brute-force index's matmul over the catalogue's vectors: ~0.9 ms of Scientific's 2)
    gathered = {variable_of(node.input[0], nodes) for node in ran if node.op == "ResourceGather"}
    read = {variable_of(node.input[0], nodes) for node in ran if node.op == "ReadVariableOp"}
    assert read and not gathered & read, sorted(gathered & read)
    expected = LoadedVersion(version)("serving_default", **request)["item_ids"]
    assert served.tolist() == expected.tolist()


def variable_of(tensor: str, nodes: dict) -> str:
    """The node that made the resource handle ``tensor`` of a partition graph, through the Identity nodes the
    inlined functions leave between it and its reader."""
    name = tensor.lstrip("^").split(":")[0]
    while name in nodes and nodes[name].op == "Identity":
        name = nodes[name].input[0].lstrip("^").split(":")[0]
    return name


def loader_signature(version: Path):
    """The serving_default SignatureDef of a version's MetaGraph."""
    from export.ops import saved_model_proto

    return saved_model_proto(version).meta_graphs[0].signature_def["serving_default"]
