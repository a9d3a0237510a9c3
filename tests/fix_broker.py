"""Broker fixtures: real Mosquitto processes started from the project's own configuration.

`Broker` renders deploy/mosquitto/tungku.conf.in on a free port with a data folder of its own
(owned by the user mosquitto, which Mosquitto drops to when started as root), so tests get
persistence and the project's queue limits, and can stop and restart the broker.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF_TEMPLATE = ROOT / "deploy" / "mosquitto" / "tungku.conf.in"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    """Return once something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class Broker:
    """A Mosquitto process with the project's configuration."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self._cmd = [mosquitto, "-c", str(data_dir / "tungku.conf")]

    @property
    def log_file(self) -> Path:
        """Where the broker logs."""
        return self.data_dir / "mosquitto.log"

    def start(self) -> None:
        """Start (or restart) the broker on the same port and data folder."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = (
            CONF_TEMPLATE.read_text()
            .replace("@PORT@", str(self.port))
            .replace("@DATA_DIR@", str(self.data_dir))
            .replace("@LOG_FILE@", str(self.log_file))
        )
        (self.data_dir / "tungku.conf").write_text(conf)
        if os.geteuid() == 0:
            # Started as root, Mosquitto drops to the user mosquitto, which must own its data.
            for p in [self.data_dir, *self.data_dir.iterdir()]:
                shutil.chown(p, "mosquitto", "mosquitto")
        with (self.data_dir / "stderr.log").open("ab") as err:
            self.proc = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.proc.kill()
            self.proc.wait()
            err_text = (self.data_dir / "stderr.log").read_text()
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(f"mosquitto did not start: {err_text} {log}") from None

    def stop(self) -> None:
        """Stop gracefully: Mosquitto writes its persistence file on the way out."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        self.proc = None

    def restart(self) -> None:
        """Stop, then start again with the same port and persisted state."""
        self.stop()
        self.start()


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A project-configured Mosquitto of the test's own, on a free port."""
    # Not under pytest's tmp_path: that is private to root, and the broker runs as mosquitto.
    data_dir = Path(tempfile.mkdtemp(prefix="tungku-broker-"))
    b = Broker(data_dir)
    b.start()
    yield b
    b.stop()
    shutil.rmtree(data_dir, ignore_errors=True)
