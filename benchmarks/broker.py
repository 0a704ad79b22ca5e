"""A local MQTT broker for the sections that publish: Mosquitto (as tests/edge/conftest.py starts one),
or `lensops broker` (the embedded amqtt broker) where Mosquitto is not installed."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def available() -> bool:
    return Path(MOSQUITTO).exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


class _BrokerProcess:
    """A broker child process on a free port of 127.0.0.1, logging into `folder`; a context manager."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def __exit__(self, *_exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


class Mosquitto(_BrokerProcess):
    """Anonymous, in memory; a context manager."""

    def __init__(self, folder: Path):
        super().__init__(folder)
        # `user`: started as root, Mosquitto would switch to user mosquitto
        lines = [
            f"user {getpass.getuser()}",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "max_queued_messages 1000000",
            f"log_dest file {self.folder / 'mosquitto.log'}",
        ]
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def __enter__(self) -> "Mosquitto":
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if _wait_listening(self.port):
            return self
        self.__exit__()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within 10 s")


class EmbeddedBroker(_BrokerProcess):
    """`lensops broker` (amqtt) as a child process; a context manager."""

    def __enter__(self) -> "EmbeddedBroker":
        with open(self.folder / "broker.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lensops.cli", "broker", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if _wait_listening(self.port, 30):
            return self
        self.__exit__()
        raise RuntimeError(
            f"lensops broker did not listen on port {self.port} within 30 s: "
            f"{(self.folder / 'broker.log').read_text()[-500:]}"
        )


def local_broker(folder: Path):
    """Mosquitto when installed, else the embedded `lensops broker`."""
    return Mosquitto(folder) if available() else EmbeddedBroker(folder)
