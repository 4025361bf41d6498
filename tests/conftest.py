"""Shared fixtures: one generated world, one text cache, one trained run and one export for the whole session.

Each is built once per session even under pytest-xdist (``helpers.built_once``: the first worker builds, the
others wait and reuse it), and is read-only for the tests: a test that changes something works on a copy.
End-to-end tests drive the real command line: in a subprocess where the process boundary is what is tested,
in-process (``helpers.cli_in_process``) where a subprocess would prove nothing extra.
"""

import subprocess
import sys

import pytest

from helpers import EXPORT_K, ROOT, SHARED, SMOKE, built_once, cli


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    def generate(folder):
        cli("generate", "--out", folder / "shop", "--users", 700, "--items", 500, "--seed", 7)

    return built_once(tmp_path_factory, "world", generate) / "shop"


@pytest.fixture(scope="session")
def text_cache(tmp_path_factory):
    """One text-vector cache for every training run of the session (its shards are written atomically, so
    concurrent runs can share it)."""
    return built_once(tmp_path_factory, "cache", lambda folder: None)


@pytest.fixture(scope="session")
def settings(world, text_cache):
    return ["--set", f"data.path={world}", "--set", f"training.text_cache_dir={text_cache}",
            "--set", "training.epochs=4", "--set", "training.early_stopping_patience=10"]


@pytest.fixture(scope="session")
def trained(settings, tmp_path_factory):
    """The session's run (4 epochs of the smoke config on the world) and the `twotower train` that made it, whose
    stdout and stderr the tests read."""
    def train(folder):
        result = cli("train", *SMOKE, *settings, "--run-dir", folder / "text")
        (folder / "stdout.txt").write_text(result.stdout, encoding="utf-8")
        (folder / "stderr.txt").write_text(result.stderr, encoding="utf-8")

    folder = built_once(tmp_path_factory, "runs", train)
    result = subprocess.CompletedProcess(["twotower", "train"], 0, (folder / "stdout.txt").read_text("utf-8"),
                                         (folder / "stderr.txt").read_text("utf-8"))
    return folder / "text", result


@pytest.fixture(scope="session")
def world_shards(world, tmp_path_factory):
    """The session's world converted by `twotower prepare` into 3 TFRecord shards (streaming training)."""
    def prepare(folder):
        cli("prepare", *SMOKE, "--set", f"data.path={world}", "--out", folder / "world", "--shards", 3)

    return built_once(tmp_path_factory, "shards", prepare) / "world"


@pytest.fixture(scope="session")
def brute_force_export(trained, tmp_path_factory):
    """One brute-force export (version 1, K = EXPORT_K) of the session's run, for the serving and client tests.
    Read-only: a test that adds versions copies it into a base path of its own (``helpers.serve_a_copy``)."""
    def export(folder):
        cli("export", "--run-dir", trained[0], "--base-path", folder / "shop", "--k", EXPORT_K,
            "--index", "brute-force")

    return built_once(tmp_path_factory, "export", export) / "shop"


@pytest.fixture(scope="session")
def quick_quality_bench(tmp_path_factory):
    """``bench/quality.py --quick`` on a slice of Amazon Scientific (skipped where the shared datasets are absent):
    the folder with its page (quality.md, .json, .png), its stderr (stderr.txt) and its runs (runs/: our model's
    run and its export, which the whole-way test of the shipped amazon_scientific config asks too)."""
    if not (SHARED / "amazon-scientific").is_dir():
        pytest.skip(f"{SHARED / 'amazon-scientific'} not found: the shared datasets are not on this machine")

    def bench(folder):
        result = subprocess.run([sys.executable, str(ROOT / "bench" / "quality.py"), "--quick", "--datasets",
                                 "amazon-scientific", "--out", str(folder / "quality.md"), "--runs",
                                 str(folder / "runs")], capture_output=True, text=True, timeout=900, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-3000:]
        (folder / "stderr.txt").write_text(result.stderr, encoding="utf-8")

    return built_once(tmp_path_factory, "quality", bench)
