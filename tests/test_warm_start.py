"""``train --warm-start-from``: ids keep their rows across grown vocabularies, and warm beats cold for the same steps.

The "old" run trains on the world's interactions before an earlier cut-off; the new runs train on the world's
own (later) split, which brings users and items the old run never saw. Both new runs train one epoch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import SMOKE, cli_in_process, run_in_process

pytestmark = pytest.mark.xdist_group("warm_start")   # the module's first run: one pytest-xdist worker

EARLY_SPLIT = "data.split={type: temporal, valid_start: '2024-04-20', test_start: '2024-05-24'}"


def test_rows_follow_their_ids_and_new_ids_start_as_unknown():
    import tensorflow as tf

    from towers.id_embedding import IdEmbedding
    from training.warm_start import _copy_rows

    old, new = IdEmbedding(["a", "b", "c"], 4, name="old"), IdEmbedding(["c", "d", "a", "e"], 4, name="new")
    old(tf.constant(["a"])), new(tf.constant(["a"]))
    kept, total = _copy_rows(new, old)
    table, before = new.embedding.embeddings.numpy(), old.embedding.embeddings.numpy()
    assert (kept, total) == (2, 4)
    np.testing.assert_array_equal(table[[0, 1, 2, 3, 4]], before[[0, 3, 0, 1, 0]])   # OOV, c, d→OOV, a, e→OOV


@pytest.fixture(scope="module")
def old_run(settings, tmp_path_factory):
    run = tmp_path_factory.mktemp("warm") / "old"
    cli_in_process("train", *SMOKE, *settings, "--set", EARLY_SPLIT, "--run-dir", run)
    return run


def test_warm_start_grows_vocabularies_and_beats_training_from_scratch(old_run, settings, tmp_path):
    warm, scratch = tmp_path / "warm", tmp_path / "scratch"
    one_epoch = ["--set", "training.epochs=1"]
    cli_in_process("train", *SMOKE, *settings, *one_epoch, "--warm-start-from", old_run, "--run-dir", warm)
    cli_in_process("train", *SMOKE, *settings, *one_epoch, "--run-dir", scratch)
    old_vocab = json.loads((old_run / "artifacts" / "vocab.json").read_text())
    new_vocab = json.loads((warm / "artifacts" / "vocab.json").read_text())
    for key in ("train_item_ids", "train_user_ids"):
        assert set(old_vocab[key]) < set(new_vocab[key]), key                 # the vocabularies grew
    log = (warm / "train.log").read_text()
    kept_users = f"user_id {len(old_vocab['train_user_ids'])}/{len(new_vocab['train_user_ids'])} ids kept"
    assert f"warm start from {old_run}" in log and kept_users in log
    metrics = {name: json.loads((run / "metrics.json").read_text()) for name, run in
               (("warm", warm), ("scratch", scratch))}
    for split in ("valid", "test"):
        warm_recall, cold_recall = metrics["warm"][split]["recall@10"], metrics["scratch"][split]["recall@10"]
        print(f"{split} recall@10 after one epoch: warm {warm_recall:.4f}, from scratch {cold_recall:.4f}")
        assert warm_recall > cold_recall + 0.03, metrics
    code, _, err = run_in_process("train", *SMOKE, *settings, "--set", "model.embedding_dim=16", "--warm-start-from",
                                  old_run, "--run-dir", tmp_path / "refused")
    assert code == 2 and "differs in: model.embedding_dim" in err
    assert not (tmp_path / "refused").exists()
