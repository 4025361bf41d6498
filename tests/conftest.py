"""Shared fixtures: one generated world, one text cache and one trained run for the whole session.

End-to-end tests drive the real command line: in a subprocess where the process boundary is what is tested,
in-process (``cli_in_process``) where a subprocess would prove nothing extra.
"""

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPORT_K = 10   # the shared export's K (tests that read it import this)
SMOKE = ["--config", str(ROOT / "configs" / "smoke.yaml")]


def cli(*args, check=True, cwd=None, **popen):
    command = [sys.executable, "-m", "twotower.cli", "-q", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=900, **popen)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def cli_in_process(*args) -> str:
    """The command line in this process, for steps where a subprocess proves nothing extra (no interpreter start,
    no second TensorFlow import); its stdout. A failure raises with what it printed."""
    from twotower.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["-q", *map(str, args)])
    if code != 0:
        raise AssertionError(f"twotower {' '.join(map(str, args))} failed ({code}):\n{err.getvalue()[-4000:]}")
    return out.getvalue()


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "shop"
    cli("generate", "--out", out, "--users", 700, "--items", 500, "--seed", 7)
    return out


@pytest.fixture(scope="session")
def settings(world, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return ["--set", f"data.path={world}", "--set", f"training.text_cache_dir={cache}",
            "--set", "training.epochs=4", "--set", "training.early_stopping_patience=10"]


@pytest.fixture(scope="session")
def trained(settings, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "text"
    result = cli("train", *SMOKE, *settings, "--run-dir", run)
    return run, result


@pytest.fixture(scope="session")
def world_shards(world, tmp_path_factory):
    """The session's world converted by `twotower prepare` into 3 TFRecord shards (streaming training)."""
    shards = tmp_path_factory.mktemp("shards") / "world"
    cli("prepare", *SMOKE, "--set", f"data.path={world}", "--out", shards, "--shards", 3)
    return shards


@pytest.fixture(scope="session")
def brute_force_export(trained, tmp_path_factory):
    """One brute-force export (version 1, K = EXPORT_K) of the session's run, for the serving and client tests.
    Read-only: a test that adds versions copies it into a base path of its own."""
    base = tmp_path_factory.mktemp("export") / "shop"
    cli("export", "--run-dir", trained[0], "--base-path", base, "--k", EXPORT_K, "--index", "brute-force")
    return base
