"""End to end through the CLI, as a user runs it: generate a world, train, evaluate, kill and resume.

Training runs use configs/smoke.yaml (tiny random-init BERT, cached text vectors) on a small generated world;
they share one text cache, so the world's texts are encoded once.
"""

import json
import shutil
import subprocess
import sys

import pytest
from helpers import SMOKE, cli, cli_in_process, kill_after_epochs, run_in_process


def test_training_writes_a_complete_run(trained):
    run, result = trained
    for name in ("config.yaml", "state.json", "metrics.json", "train.log", "checkpoints/best.index",
                 "artifacts/catalog.parquet", "encoder/vocab.txt"):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    state = json.loads((run / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3, 4] and state["finished"]
    assert "[test]" in result.stdout and "popularity" in result.stdout and "two-tower, history kept" in result.stdout
    log = (run / "train.log").read_text()
    assert "[UNK] share in 'title'" in log  # the per-field [UNK] report runs at training start


def test_text_two_tower_beats_popularity(trained):
    metrics = json.loads((trained[0] / "metrics.json").read_text())
    test = metrics["test"]
    for key in ("recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr", "users"):
        assert key in test and key in test["cold_items"] and key in test["new_users"]
        assert key in test["history_kept"] and key in test["baselines"]["popularity"]["history_kept"]
    assert test["history_kept"]["users"] == test["users"]
    assert set(metrics["valid"]["history_kept"]) >= {"recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr", "users"}
    assert 0 < test["chinese"]["users"] < test["users"]   # the generated shop is partly Chinese
    popularity = test["baselines"]["popularity"]
    assert test["recall@10"] > 1.5 * popularity["recall@10"] + 0.02, (test, popularity)
    assert test["ndcg@10"] > 1.5 * popularity["ndcg@10"], (test, popularity)
    assert test["users"] > 200 and test["cold_items"]["users"] > 30


def test_text_tower_beats_id_only_two_tower_on_cold_items(trained, settings, tmp_path):
    run = tmp_path / "id-only"
    cli("train", *SMOKE, *settings, "--set", "model.item_features=[id]", "--set", "model.user_features=[id]",
        "--run-dir", run)
    id_only = json.loads((run / "metrics.json").read_text())["test"]["cold_items"]
    text = json.loads((trained[0] / "metrics.json").read_text())["test"]["cold_items"]
    assert text["recall@10"] > id_only["recall@10"] + 0.05, (text, id_only)


def test_evaluate_writes_the_requested_split(trained, tmp_path):
    """On a copy of the session's run (its metrics.json stays as training wrote it for the other tests)."""
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    before = json.loads((run / "metrics.json").read_text())
    out = cli_in_process("evaluate", "--run-dir", run, "--split", "valid")
    assert "[valid]" in out
    after = json.loads((run / "metrics.json").read_text())
    assert after["valid"]["recall@10"] == pytest.approx(before["valid"]["recall@10"], abs=1e-9)
    assert after["test"] == before["test"]
    assert json.loads((trained[0] / "metrics.json").read_text()) == before     # the shared run is untouched


def test_resume_after_kill_loses_no_finished_epoch(trained, settings, tmp_path):
    run = tmp_path / "killed"
    command = [sys.executable, "-m", "twotower.cli", "-q", "train", *SMOKE, *settings, "--run-dir", str(run)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        kill_after_epochs(process, run, 2)
    finally:
        process.wait()
    killed_at = json.loads((run / "state.json").read_text())["epochs_done"]
    assert 2 <= killed_at < 4 and not (run / "metrics.json").exists()
    result = cli("train", "--run-dir", run)  # no --config: resume
    assert f"resuming {run} after epoch {killed_at}" in result.stderr
    state = json.loads((run / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3, 4]
    # deterministic: the same numbers as the run that was never interrupted
    resumed = json.loads((run / "metrics.json").read_text())["test"]
    uninterrupted = json.loads((trained[0] / "metrics.json").read_text())["test"]
    assert resumed["recall@10"] == pytest.approx(uninterrupted["recall@10"], abs=1e-6)
    assert resumed["mrr"] == pytest.approx(uninterrupted["mrr"], abs=1e-4)


def test_resume_before_the_first_epoch_ends_matches_an_uninterrupted_run(settings, tmp_path):
    """Killed after the run was prepared (config.yaml, artifacts, the tiny encoder written) but before its first
    epoch ended: the resume builds the model from the same seeded initial weights as a run that was never
    interrupted, although only the fresh run built the tiny encoder (issue 15, defect 2)."""
    from training.config import load_config
    from training.run import RunDir
    from training.trainer import prepare_run

    quick = [*settings, "--set", "training.epochs=1", "--set", "data.max_users=150"]
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    cli("train", *SMOKE, *quick, "--run-dir", uninterrupted)
    config = load_config(SMOKE[1], [s for s in quick if s != "--set"])
    prepare_run(config, RunDir(killed), progress=False)   # what a kill during epoch 1 leaves behind
    assert (killed / "config.yaml").exists() and not (killed / "state.json").exists()
    cli("train", "--run-dir", killed)
    resumed = json.loads((killed / "metrics.json").read_text())["test"]
    expected = json.loads((uninterrupted / "metrics.json").read_text())["test"]
    assert resumed["recall@10"] == pytest.approx(expected["recall@10"], abs=1e-6)
    assert resumed["mrr"] == pytest.approx(expected["mrr"], abs=1e-6)


def test_a_run_keeps_its_config(trained, settings):
    run, _ = trained
    code, _, err = run_in_process("train", *SMOKE, *settings, "--set", "training.epochs=9", "--run-dir", run)
    assert code == 2 and "different config (differs in: training.epochs)" in err
    assert "Traceback" not in err


def test_bad_data_leaves_no_run_behind(world, tmp_path):
    run = tmp_path / "bad"
    code, _, err = run_in_process("train", *SMOKE, "--set", f"data.path={tmp_path / 'nowhere'}", "--run-dir", run)
    assert code == 2 and "nowhere" in err and "Traceback" not in err
    assert not run.exists()


def test_fine_tune_mode_trains_the_top_encoder_layers(settings, tmp_path):
    """finetune_top_n: the texts go through BERT on every step and its top layer's weights move."""
    import numpy as np
    import tensorflow as tf

    run = tmp_path / "finetune"
    cli("train", *SMOKE, *settings, "--set", "model.encoder_mode=finetune_top_n", "--set", "model.finetune_top_n=1",
        "--set", "training.epochs=1", "--set", "data.max_users=150", "--run-dir", run)
    assert json.loads((run / "metrics.json").read_text())["test"]["users"] > 0
    assert not (run / "artifacts" / "item_text_vectors.npy").exists()  # no cache: the encoder runs in the loop
    from towers.text_encoder import BertSource, load_bert

    original = load_bert(BertSource(run / "encoder")).bert.encoder.layer
    reader = tf.train.load_checkpoint(str(run / "checkpoints" / "best"))
    prefix = "model/user_tower/encoder/bert/bert/encoder/layer/{}/attention/self_attention/query/kernel/" \
             ".ATTRIBUTES/VARIABLE_VALUE"
    trained = [reader.get_tensor(prefix.format(i)) for i in (0, 1)]
    np.testing.assert_array_equal(trained[0], original[0].attention.self_attention.query.kernel.numpy())
    assert np.abs(trained[1] - original[1].attention.self_attention.query.kernel.numpy()).max() > 1e-4
