"""The repeat offset (towers/repeat.py) from fit to served answer: `train` fits it on the validation split with the
history kept and records it (state.json, metrics.json, the model card); an export ranks with it as evaluate does,
in both directions: lowered history items make room, lifted ones are found even where the index's answer does not
hold them."""

import json
import shutil

import numpy as np
import pytest
from helpers import EXPORT_K, cli_in_process

pytestmark = pytest.mark.xdist_group("export")   # an export of its own: beside the other exports' worker


def test_the_fitted_offset_is_recorded_beside_its_grid(trained, brute_force_export):
    run = trained[0]
    fitted = json.loads((run / "state.json").read_text())["repeat_offset"]
    metrics = json.loads((run / "metrics.json").read_text())["repeat"]
    card = json.loads((brute_force_export / "1" / "assets" / "model_card.json").read_text())["repeat"]
    assert metrics["offset"] == card["offset"] == pytest.approx(fitted["fitted"], abs=1e-5)
    assert metrics["fitted_on_valid"] == fitted and fitted["protocol"] == "history_kept"
    grid = fitted[fitted["metric"]]
    assert grid[str(fitted["fitted_multiple"])] == max(grid.values())


def test_a_positive_offset_lifts_every_history_item_to_the_top_of_the_served_list(trained, tmp_path):
    """Set far above any score difference, the offset puts the history's items first (in their own order), the rest
    after: `recommend_including_history` must find the history items the index did not answer, each once, and
    rank with the evaluated scores; `score` gives them the offset; serving_default still excludes them."""
    from export.parity import differences, evaluated, in_process
    from training.run import RunDir
    from training.trainer import _checkpoint, evaluated_model

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    _, _, model = evaluated_model(RunDir(str(run)))
    model.create_weights()   # every variable restored before the checkpoint is written again
    model.user_tower.repeat.set_offset(50.0)
    _checkpoint(model).write(str(RunDir(str(run)).best))
    version = cli_in_process("export", "--run-dir", run, "--base-path", tmp_path / "shop", "--k", EXPORT_K,
                             "--index", "brute-force").strip().splitlines()[-1]
    expected = evaluated(run, cases=30)
    outputs = in_process(version)(expected.requests())
    assert not differences(expected, outputs, EXPORT_K)
    lifted = 0
    for history, row in zip(expected.history, outputs["kept/item_ids"].astype(str)):
        own = list(dict.fromkeys(h for h in history if h in expected.item_ids))
        assert set(row[:len(own)]) == set(own) if len(own) <= EXPORT_K else set(row) <= set(own)
        lifted += len(own) > 0
    assert lifted >= 20
    for history, row in zip(expected.history, outputs["served/item_ids"].astype(str)):
        assert not set(row) & set(history)
    first = expected.history[0]
    candidates = [h for h in first if h] + expected.item_ids[:3]
    scored = in_process(version)({"s": {"signature": "score", "inputs": {
        "user_id": expected.user_id[:1], "history": [first], "user_text": [""], "candidates": [candidates]}}})
    index = {item: row for row, item in enumerate(expected.item_ids)}
    np.testing.assert_allclose(scored["s/scores"][0], expected.scores[0, [index[c] for c in candidates]], atol=1e-4)
    assert min(expected.scores[0, [index[h] for h in first if h]]) > 40
