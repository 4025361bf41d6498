"""Shared fixtures: one generated world, one text cache, one trained run and one export for the whole session.

Each is built once per session even under pytest-xdist (``helpers.built_once``: the first worker builds, the
others wait and reuse it), and is read-only for the tests: a test that changes something works on a copy.
End-to-end tests drive the real command line: in a subprocess where the process boundary is what is tested,
in-process (``helpers.cli_in_process``) where a subprocess would prove nothing extra.
"""

import collections
import subprocess
import sys

import pytest
from helpers import EXPORT_K, ROOT, SERVER_TOKEN, SHARED, SMOKE, built_once, cli, serve_a_copy
from serving_process import ServerProcess

# A test that uses one of these trains or exports a model, starts a server or runs a job: the `slow` tier
# (`pytest -m "not slow"` leaves it out; `make test` runs everything). Tests that do so on their own are marked
# where they are written.
SLOW_FIXTURES = {"settings", "world_shards", "quick_quality_bench", "small_world", "server", "servers", "testdata",
                 "ray_head", "token_server"}


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    """Marks the slow tests (first: `-m` selects on them), then, after every other plugin, the xdist groups.

    ``--dist loadgroup`` under pytest 9: pytest-xdist 3.8 marks a test's group by renaming ``item._nodeid``, which
    pytest 9 no longer reads (its node ids are ``item._id``), so every test would be scheduled alone and a
    module's shared servers and models built on both workers. This appends the group as xdist means to, and does
    nothing once xdist's own suffix is there."""
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
    yield
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId

    for item in items:
        groups = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                         for mark in item.iter_markers("xdist_group")})
        if groups and "@" not in item.nodeid:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")
    items[:] = scheduled(items)


# The work units pytest-xdist hands out first (the Makefile passes --no-loadscope-reorder, so the queue is this
# collection's order): the group whose fixture builds the session's run, then the longest units (over a minute
# each on 2 cores: docs/contributing.md). Without it the two largest groups both needed the session's run and one
# worker waited for the other to build it (~1 minute), and a long unit could come last and run alone.
FIRST = ("@token_server", "@whole_way-matrix-a", "@whole_way-matrix-b", "@whole_way-encoders", "@whole_way-shipped",
         "@whole_way-e5", "test_ray_target.py::test_ray_job_trains", "test_jobs.py::test_killed_worker",
         "test_shards.py::test_prepare_converts_ten_million", "test_index_add.py::test_index_add_while_serving",
         "test_cross_replica.py::")


def scheduled(items: list) -> list:
    """FIRST's units in its order, then the other groups largest first (xdist's own reordering), then the rest
    in collection order; a unit's tests stay together."""
    groups = [item.nodeid.rpartition("@")[2] if "@" in item.nodeid else None for item in items]
    sizes = collections.Counter(group for group in groups if group is not None)

    def rank(position: int) -> tuple:
        nodeid, group = items[position].nodeid, groups[position]
        first = next((n for n, marker in enumerate(FIRST) if marker in nodeid), len(FIRST))
        return (first, -sizes[group], group, position) if group else (first, 0, "", position)

    return [items[position] for position in sorted(range(len(items)), key=rank)]


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


@pytest.fixture(scope="session")
def token_server(brute_force_export, tmp_path_factory):
    """One ``twotower serve`` that wants a bearer token (``helpers.SERVER_TOKEN``), for the REST and client tests
    (their modules share a pytest-xdist group, so one worker starts it): model "shop" as versions 1 and 2 (copies
    of the session's export) with labels stable=1 and canary=2, and model "store", the session's export itself
    (version 1 only). Its ``token_file`` attribute: the token's file."""
    tmp = tmp_path_factory.mktemp("token-server")
    shop = serve_a_copy(brute_force_export, tmp / "models" / "shop", versions=(1, 2))
    config = tmp / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "shop" base_path: "{shop}" model_platform: '
                      '"tensorflow" model_version_policy { all {} } version_labels { key: "stable" value: 1 } '
                      'version_labels { key: "canary" value: 2 } } '
                      f'config {{ name: "store" base_path: "{brute_force_export}" model_platform: "tensorflow" }} }}\n')
    token = tmp / "token"
    token.write_text(SERVER_TOKEN + "\n")
    process = ServerProcess(tmp, "token", "--model_config_file", str(config), "--auth_token_file", str(token),
                            "--max_request_bytes", "200000", "--file_system_poll_wait_seconds", "0").wait()
    process.token_file = token
    yield process
    assert process.stop() == 0
