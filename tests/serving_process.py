"""A real ``twotower serve`` in a subprocess on free loopback ports, for the REST and client tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers import ROOT

STARTUP_SECONDS = 240


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """Starts at construction; ``wait()`` returns once the server prints its ready line (models loaded)."""

    def __init__(self, tmp: Path, name: str, *flags: str):
        self.port, self.rest_port = free_port(), free_port()
        self.out, self.log = tmp / f"{name}.out", tmp / f"{name}.log"
        command = [sys.executable, "-m", "twotower.cli", "serve", "--port", str(self.port),
                   "--rest_api_port", str(self.rest_port), *flags]
        with open(self.out, "w") as out, open(self.log, "w") as err:
            self.process = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT,
                                            env={**os.environ, "TWOTOWER_AUTH_TOKEN": ""})

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def wait(self) -> ServerProcess:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline and self.process.poll() is None:
            if "serving gRPC on" in self.out.read_text():
                return self
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server did not start:\n{self.out.read_text()}\n{self.log.read_text()[-4000:]}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 60 s; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
