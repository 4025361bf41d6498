"""What several test modules share: the command line (in a subprocess or in-process), things built once per test
session even when pytest-xdist runs the suite in several workers, job files, test certificates, copies of an
export to serve, and the loops that wait on a running server or a training process.

Why it exists: a test module never imports another test module (nor conftest.py); what two of them need lives
here, once.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXPORT_K = 10   # the shared export's K (tests that read it import this)
# The pause of a client thread between requests while a test streams traffic across a version swap: ~80 requests
# a second per thread keep requests in flight through the swap without saturating the 2 cores the rest of the
# suite shares (a saturating loop doubled the index-add test's time and slowed the other worker as much).
PACE = 0.01
SMOKE = ["--config", str(ROOT / "configs" / "smoke.yaml")]
SHARED = ROOT.parent / "shared" / "datasets"   # the real datasets, where this machine has them
SERVER_TOKEN = "test-bearer-token"   # the session's token server wants it (tests/conftest.py)


def cli(*args, check=True, cwd=None, **popen) -> subprocess.CompletedProcess:
    """``twotower -q ARGS`` in a fresh interpreter; a failure (with ``check``) raises with its stderr."""
    command = [sys.executable, "-m", "twotower.cli", "-q", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=900, **popen)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def cli_in_process(*args) -> str:
    """The command line in this process, for steps where a subprocess proves nothing extra (no interpreter start,
    no second TensorFlow import); its stdout. A failure raises with what it printed."""
    code, out, err = run_in_process(*args)
    if code != 0:
        raise AssertionError(f"twotower {' '.join(map(str, args))} failed ({code}):\n{err[-4000:]}")
    return out


def run_in_process(*args) -> tuple[int, str, str]:
    """``twotower -q ARGS`` in this process: its exit code, stdout and stderr (whatever the code)."""
    from twotower.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["-q", *map(str, args)])
    return code, out.getvalue(), err.getvalue()


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder ``name`` filled by ``build(folder)`` once per test session: under pytest-xdist the first worker
    to ask builds it while the others wait on a file lock, then all read the same folder (read-only)."""
    from filelock import FileLock

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    root = tmp_path_factory.getbasetemp()
    if worker is None:
        folder = root / "shared" / name
    else:   # every worker's basetemp is a subfolder of the run's
        folder = root.parent / "shared" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    done = folder.parent / f"{name}.done"
    with FileLock(str(folder.parent / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)   # a build that failed in another worker
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def job_file(tmp_path: Path, world: Path, settings: list[str], extra: tuple[str, ...] = (), **fields) -> Path:
    """A job file for the smoke config on ``world`` with the session's text cache; ``extra``: more --set."""
    cache = next(s.split("=", 1)[1] for s in settings if s.startswith("training.text_cache_dir="))
    job = {"name": "smoke-job", "config": str(ROOT / "configs" / "smoke.yaml"), "data": str(world),
           "set": [f"training.text_cache_dir={cache}", "training.early_stopping_patience=10", *extra],
           "run_dir": "run", "workers": 2, **fields}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def write_certificate(cert: Path, key: Path) -> None:
    """A self-signed certificate for localhost / 127.0.0.1 (the cryptography package, else the openssl CLI);
    skips the test where neither is available."""
    try:
        _write_certificate_with_cryptography(cert, key)
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor the openssl CLI is available for a test certificate")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)


def _write_certificate_with_cryptography(cert: Path, key: Path) -> None:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=2))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                               x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(private, hashes.SHA256()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))


def serve_a_copy(export: Path, base: Path, versions: tuple[int, ...] = (1,)) -> Path:
    """A base path of its own holding a copy of ``export``'s version 1 as each of ``versions``, for a server whose
    test adds or removes versions (the shared export stays read-only)."""
    for version in versions:
        shutil.copytree(export / "1", base / str(version))
    return base


def until_version_serves(served: list[int], version: int, seconds: float = 120, settle: float = 0.5) -> None:
    """Waits while clients stream requests (appending each answer's version to ``served``) until the newest answer
    came from ``version``, then ``settle`` seconds more so the last in-flight requests finish on it too."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (served and served[-1] == version):
        time.sleep(0.2)
    time.sleep(settle)


def kill_after_epochs(process: subprocess.Popen, run: Path, epochs: int, victim: Callable[[], int] | None = None,
                      seconds: float = 600) -> None:
    """Waits until ``run/state.json`` records ``epochs`` finished epochs, then SIGKILLs ``victim()`` (a pid; by
    default the process itself). Fails if the process ends first."""
    deadline = time.time() + seconds
    state = run / "state.json"
    while time.time() < deadline:
        if state.exists() and json.loads(state.read_text())["epochs_done"] >= epochs:
            break
        assert process.poll() is None, f"the process ended before it could be killed: {process.communicate()}"
        time.sleep(0.05)
    os.kill(victim() if victim else process.pid, signal.SIGKILL)


class FakeServable:
    """Stands in for a loaded version in the model manager's tests: "garbage" in saved_model.pb fails to load;
    counts the requests it holds."""

    def __init__(self, model, version, path):
        if (path / "saved_model.pb").read_text() == "garbage":
            from serving.servable import LoadError
            raise LoadError(f"{path}: not a SavedModel protobuf")
        self.model, self.version, self.signatures = model, version, {}
        self.holders, self.closed = 0, False
        self.idle = threading.Condition()

    def acquire(self):
        with self.idle:
            self.holders += 1

    def release(self):
        with self.idle:
            self.holders -= 1
            self.idle.notify_all()

    @property
    def in_flight(self):
        return self.holders

    def wait_idle(self, timeout=None):
        with self.idle:
            return self.idle.wait_for(lambda: self.holders == 0, timeout)

    def close(self):
        self.closed = True
