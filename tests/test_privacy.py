"""``data.hash_user_ids``: no raw user id in the run's vocabularies, its log or the export; clients still send raw ids.

Explanations never naming another user's data is checked with the other explanation tests
(test_explain_diversity.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import SMOKE, cli_in_process, run_in_process

pytestmark = pytest.mark.xdist_group("privacy")   # the module's hashed run and export: one pytest-xdist worker

SALT = "pepper-for-the-tests"
HASHED = ["--set", "data.hash_user_ids=true", "--set", "training.epochs=1"]


def test_hashing_is_keyed_deterministic_and_keeps_empty_ids():
    from ingest.privacy import HashKey, hash_column, key_from_config
    from ingest.schema import DataError

    key, other = HashKey.from_salt(SALT), HashKey.from_salt(SALT + "!")
    first = hash_column(["U00001", "", "U00002"], key)
    assert first.tolist() == hash_column(["U00001", "", "U00002"], key).tolist()
    assert first[1] == "" and first[0].startswith("u_") and first[0] != first[2]
    assert hash_column(["U00001"], other)[0] != first[0] and key.fingerprint != other.fingerprint
    assert SALT not in repr(tuple(key)) + key.fingerprint
    assert key_from_config({"hash_user_ids": False}) is None
    assert key_from_config({"hash_user_ids": True, "hash_salt": SALT}) == key
    with pytest.raises(DataError, match="TWOTOWER_HASH_SALT.*data.hash_salt"):
        key_from_config({"hash_user_ids": True, "hash_salt": None})


@pytest.fixture(scope="module")
def hashed_export(settings, world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hashed")
    with pytest.MonkeyPatch.context() as patch:   # in-process: a subprocess would prove nothing extra
        patch.setenv("TWOTOWER_HASH_SALT", "")
        code, _, err = run_in_process("train", *SMOKE, *settings, *HASHED, "--run-dir", folder / "no-salt")
        assert code == 2 and "TWOTOWER_HASH_SALT" in err.strip().splitlines()[-1]
        assert not (folder / "no-salt").exists()
        patch.setenv("TWOTOWER_HASH_SALT", SALT)
        run = folder / "run"
        cli_in_process("train", *SMOKE, *settings, *HASHED, "--run-dir", run)
        cli_in_process("export", "--run-dir", run, "--base-path", folder / "models" / "shop", "--k", 10,
                       "--index", "brute-force")
    with open(world / "users.csv", encoding="utf-8") as handle:
        raw = [line.split(",", 1)[0] for line in handle.read().splitlines()[1:]]
    return run, folder / "models" / "shop" / "1", raw


def test_no_raw_user_id_in_the_run_its_log_or_the_export(hashed_export):
    run, version, raw = hashed_export
    vocab = json.loads((run / "artifacts" / "vocab.json").read_text())
    assert vocab["train_user_ids"] and all(u.startswith("u_") for u in vocab["train_user_ids"])
    assert not set(raw) & set(vocab["train_user_ids"])
    probes = [u.encode() for u in raw[:50]] + [SALT.encode()]
    places = [run / "artifacts" / "vocab.json", run / "artifacts" / "users.parquet", run / "train.log",
              *[p for p in version.rglob("*") if p.is_file()]]
    for path in places:
        content = path.read_bytes()
        leaked = [p.decode() for p in probes if p in content]
        assert not leaked, (path, leaked[:3])
    card = json.loads((version / "assets" / "model_card.json").read_text())
    assert card["user_ids_hashed"] == vocab["user_id_hash"] and card["training_config"]["data"]["hash_salt"] is None


def test_the_exported_model_hashes_the_raw_ids_clients_send(hashed_export):
    import tensorflow as tf

    from export.trained import load_trained
    from ingest.privacy import HashKey, hash_column
    from serving.servable import register_custom_ops

    run, version, raw = hashed_export
    register_custom_ops()
    embed = tf.saved_model.load(str(version)).signatures["embed_query"]
    users = raw[:20]
    served = embed(user_id=tf.constant(users), history=tf.constant([[""]] * 20),
                   user_text=tf.constant([""] * 20), search_query=tf.constant([""]))["embedding"].numpy()
    model = load_trained(str(run)).model
    hashed = hash_column(users, HashKey.from_salt(SALT)).tolist()
    expected = model.embed_users(tf.constant(hashed), tf.constant([[""]] * 20)).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    unknown = model.embed_users(tf.constant(users), tf.constant([[""]] * 20)).numpy()   # raw ids: all unknown
    assert np.abs(served - unknown).max() > 1e-3
