"""What a user sees when the input is bad: one error line naming file, line and field; no traceback; no run left
behind; and every dropped row counted, with its reason, in the run log."""

import logging
from pathlib import Path

import pytest
from helpers import ROOT, SMOKE, cli_in_process, run_in_process

from ingest.schema import DataError
from training.config import ConfigError, load_config
from training.prepare import load_split, report_unknown_tokens
from training.run import setup_logging

ITEMS = "item_id,title,category\nA1,Red mug,Kitchen\nA2,Blue mug,Kitchen\nA3,,Kitchen\n"
INTERACTIONS = ("user_id,item_id,timestamp\nu1,A1,2024-01-01\nu1,A2,2024-01-02\nu1,A9,2024-01-03\n"
                "u1,A3,2024-01-04\nu2,A1,yesterday-ish\nu2,A2,2024-01-05\nu2,A1,2024-01-06\nu1,A1,2024-01-07\n")


def _config(tmp_path: Path, items: str = ITEMS, interactions: str = INTERACTIONS, **data) -> Path:
    (tmp_path / "items.csv").write_text(items, encoding="utf-8")
    (tmp_path / "interactions.csv").write_bytes(interactions.encode("utf-8") if isinstance(interactions, str)
                                                else interactions)
    extra = "".join(f"  {k}: {v}\n" for k, v in data.items())
    path = tmp_path / "config.yaml"
    path.write_text(f"data:\n  format: files\n  items: {tmp_path / 'items.csv'}\n"
                    f"  interactions: {tmp_path / 'interactions.csv'}\n{extra}"
                    f"model: {{encoder: tiny}}\ntraining: {{text_cache_dir: {tmp_path / 'cache'}}}\n")
    return path


def _train(config: Path, run: Path, *sets: str) -> tuple[int, str]:
    """``twotower train`` in-process (its errors are raised and printed before TensorFlow runs anything, so a
    subprocess would prove nothing extra): the exit code and stderr."""
    code, _, err = run_in_process("train", "--config", config, *[a for s in sets for a in ("--set", s)],
                                  "--run-dir", run)
    return code, err


def test_every_dropped_row_is_counted_with_its_reason_in_the_run_log(tmp_path):
    config = load_config(_config(tmp_path))
    log_file = tmp_path / "run" / "train.log"
    setup_logging(log_file)
    dataset, labels = load_split(config)
    log = log_file.read_text(encoding="utf-8")
    assert "dropped 1 row(s) from" in log and "empty title" in log            # item A3
    assert "unknown item" in log and "A9" in log                               # A9 is not in the catalogue
    assert "unparseable timestamp" in log and "yesterday-ish" in log
    assert len(dataset.interactions) == 5 and len(labels) == 5
    assert dataset.report.as_dict() == {f"{tmp_path / 'interactions.csv'}: unknown item": 2,
                                        f"{tmp_path / 'interactions.csv'}: unparseable timestamp": 1,
                                        f"{tmp_path / 'items.csv'}: empty title": 1}


@pytest.mark.parametrize("items, interactions, sets, expected", [
    ("item_id,title\nA1,Mug\nA1,Cup\n", INTERACTIONS, [], "items.csv: duplicate item_id: 'A1' at lines 2, 3"),
    ("item_id,name\nA1,Mug\n", INTERACTIONS, [], "missing column 'title'"),
    (ITEMS, b"user_id,item_id,timestamp\nu1,A1,2024-01-01\nu\xff1,A2,2024-01-02\n", [], "not valid UTF-8 at line 3"),
    (ITEMS, INTERACTIONS, ["data.on_bad_rows=error"], "line 4"),
    (ITEMS, INTERACTIONS, ["training.epochz=2"], "unknown key 'training.epochz'"),
])
def test_bad_input_is_one_clear_line_and_leaves_nothing(tmp_path, items, interactions, sets, expected):
    run = tmp_path / "run"
    code, stderr = _train(_config(tmp_path, items, interactions), run, *sets)
    assert code == 2
    assert expected in stderr, stderr
    assert "Traceback" not in stderr and "error: " in stderr
    assert not run.exists()


def test_unknown_tokens_warning_names_the_fix(tmp_path, caplog, monkeypatch):
    """Chinese text through a vocabulary that lacks it: a warning per field, naming model.encoder."""
    import pandas as pd

    from ingest.schema import Dataset
    from towers.text_encoder import TextEncoder, make_tiny_bert
    from training.artifacts import Artifacts

    encoder = TextEncoder(make_tiny_bert(tmp_path / "enc", ["red mug kitchen", "blue cup"] * 3, seed=0), max_length=16)
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["red mug", "不锈钢保温杯"], "description": ["", ""],
                          "category": ["kitchen", "kitchen"], "brand": ["", ""], "price": [1.0, 2.0]})
    dataset = Dataset(items=items, interactions=pd.DataFrame())
    derived = Artifacts(catalog=items, users=pd.DataFrame({"user_id": ["u"], "text": ["blue mug"]}),
                        train_item_ids=[], train_user_ids=[], item_counts=None, price_stats=(0, 1), encoder={})
    config = {"data": {"item_text_columns": ["title", "category"]}, "model": {"encoder": "tiny"}}
    monkeypatch.setattr(logging.getLogger("twotower"), "propagate", True)
    with caplog.at_level(logging.INFO, logger="twotower"):
        shares = report_unknown_tokens(encoder, dataset, derived, config)
    assert shares["title"] > 0.05 and shares["category"] == 0.0 and shares["user_text"] == 0.0
    # Only our own warnings: libraries (transformers' TF deprecation notice, once per process) may warn too.
    warnings = sorted({r.getMessage() for r in caplog.records
                       if r.levelno == logging.WARNING and r.name.startswith("twotower")})
    assert len(warnings) == 1 and "'title'" in warnings[0] and "model.encoder" in warnings[0]


REFUSED = [  # issue 15, defect 1: each left a run directory that blocked the corrected command
    (["model.history_encoder=attention", "model.history_heads=3"],
     "model.history_heads (3) must divide model.embedding_dim (32)"),
    (["model.history_heads=0"], "model.history_heads"),
    (["training.learning_rate=fast"], "training.learning_rate"),
    (["model.hidden_units=[-1]"], "model.hidden_units.0"),
    (["model.hidden_units=abc"], "model.hidden_units"),
    (["model.id_dim=0"], "model.id_dim"),
    (["model.history_dropout=2.0"], "model.history_dropout"),
    (["model.history_encoder=lstm"], "model.history_encoder"),
    (["model.item_features=[]"], "model.item_features"),
    (["model.item_features=[text,colour]"], "model.item_features"),
    (["model.history_decay=x"], "model.history_decay"),
    (["evaluation.batch_size=0"], "evaluation.batch_size"),
    (["data.interactions=/does/not/exist.csv"], "data.interactions has no effect for data.format 'generated'"),
]


def test_a_refused_train_leaves_no_run_and_the_corrected_one_trains(settings, tmp_path, capsys):
    from twotower.cli import main

    run = tmp_path / "run"
    quick = [*settings, "--set", "training.epochs=1", "--set", "data.max_users=120"]
    for sets, message in REFUSED:
        code = main(["-q", "train", *SMOKE, *quick, *[a for s in sets for a in ("--set", s)], "--run-dir", str(run)])
        err = capsys.readouterr().err
        assert code == 2 and f"error: {SMOKE[1]} with --set" in err and message in err, (sets, err)
        assert not run.exists(), sets
    cli_in_process("train", *SMOKE, *quick, "--run-dir", run)
    assert (run / "metrics.json").exists()


def test_a_failure_while_building_the_model_leaves_no_run(settings, tmp_path, monkeypatch):
    """Past the config checks, anything that fails before training starts (here: the model build) removes the
    run directory it made: config.yaml is written only once the model stands."""
    import training.trainer as trainer
    from training.run import RunDir

    def refuse(*args, **kwargs):
        raise ConfigError("model: refused while building")

    monkeypatch.setattr(trainer, "build_model", refuse)
    config = load_config(ROOT / "configs" / "smoke.yaml", [s for s in settings if s != "--set"]
                         + ["data.max_users=60"])
    run = RunDir(tmp_path / "run")
    with pytest.raises(ConfigError, match="refused while building"):
        trainer.train(config, run, progress=False)
    assert not run.path.exists()


def test_finetune_top_n_beyond_a_local_encoders_layers_leaves_no_run(settings, tmp_path, capsys):
    """Only the encoder's own files say how many layers it has: the check runs while the model is built, after
    the data was prepared, and still leaves nothing behind (issue 15, defect 5: finetune_top_n=99)."""
    from towers.text_encoder import make_tiny_bert
    from twotower.cli import main

    bert = make_tiny_bert(tmp_path / "bert", ["red mug", "blue tent"] * 3, seed=0, hidden=16, layers=2)
    run = tmp_path / "run"
    code = main(["-q", "train", *SMOKE, *settings, "--set", f"model.encoder={bert.directory}",
                 "--set", "model.encoder_mode=finetune_top_n", "--set", "model.finetune_top_n=99",
                 "--set", "model.max_seq_len=16", "--set", "data.max_users=60", "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and "error: model.finetune_top_n (99) exceeds the 2 layer(s) of the text encoder" in err, err
    assert not run.exists()


@pytest.mark.parametrize("error, line, code", [
    (ConfigError("model.x: bad"), "error: model.x: bad\n", 2),
    (DataError("items.csv: line 3: bad"), "error: items.csv: line 3: bad\n", 2),
    (KeyError("user_id"), "internal error: KeyError: 'user_id' (a bug in twotower", 1),
    (TypeError("unsupported operand"), "internal error: TypeError: unsupported operand", 1),
    (ValueError("could not convert"), "internal error: ValueError: could not convert", 1),
    (PermissionError(13, "Permission denied", "/srv/models"), "error: /srv/models: Permission denied\n", 2),
    (FileNotFoundError("no such thing"), "internal error: FileNotFoundError: no such thing", 1),
])
def test_only_the_projects_own_errors_read_as_user_errors(monkeypatch, capsys, error, line, code):
    """A KeyError or TypeError is a bug: it must not be dressed up as bad input."""
    import twotower.cli as cli_module

    def fail(args):
        raise error

    monkeypatch.delenv("TWOTOWER_DEBUG", raising=False)
    monkeypatch.setattr(cli_module, "_inspect", fail)
    assert cli_module.main(["inspect", "x"]) == code
    err = capsys.readouterr().err
    assert err.startswith(line), err
    if code == 1:
        assert "TWOTOWER_DEBUG=1" in err and "Traceback" not in err
