"""Edge fixtures: a real Mosquitto the suite starts and stops, and a subscriber that collects messages."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import paho.mqtt.client as mqtt
import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(folder: Path, client_name: str = "cam-01") -> TlsFiles:
    """A throw-away CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)

    def write(name: str, cert, key) -> tuple[Path, Path]:
        cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path

    def issue(common_name: str, issuer_name, issuer_key, extensions, key=None):
        key = key or ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign(issuer_key or key, hashes.SHA256()), key

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert, _ = issue(
        "lensops test CA", None, None, [(x509.BasicConstraints(ca=True, path_length=None), True)], key=ca_key
    )
    ca_path, _ = write("ca", ca_cert, ca_key)
    leaf = [(x509.BasicConstraints(ca=False, path_length=None), True)]
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    server_cert, server_key = issue("localhost", ca_cert.subject, ca_key, leaf + [(san, False)])
    client_cert, client_key = issue(client_name, ca_cert.subject, ca_key, leaf)
    return TlsFiles(ca_path, *write("server", server_cert, server_key), *write("client", client_cert, client_key))


class Mosquitto:
    """A real Mosquitto on a fixed free port that can be stopped and started again on that port."""

    def __init__(
        self,
        folder: Path,
        persistence: bool = False,
        tls: Optional[TlsFiles] = None,
        extra_lines: Sequence[str] = (),
    ):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        self.log = folder / "mosquitto.log"
        # `user`: started as root, Mosquitto would switch to user mosquitto, which cannot write into tmp_path
        lines = [
            f"user {getpass.getuser()}",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"log_dest file {self.log}",
            "max_queued_messages 1000000",
            f"persistence {'true' if persistence else 'false'}",
        ]
        if persistence:  # only so a test's subscriber keeps its session across a broker restart
            lines += [f"persistence_location {folder}/", "autosave_interval 1"]
        if tls:
            lines += [
                f"cafile {tls.ca}",
                f"certfile {tls.server_cert}",
                f"keyfile {tls.server_key}",
                "require_certificate true",
            ]
        lines += extra_lines  # last, so they win: e.g. `allow_anonymous false`, acl_file, password_file
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"{'mqtts://localhost' if self.tls else 'mqtt://127.0.0.1'}:{self.port}"

    def start(self) -> "Mosquitto":
        assert self.process is None, "mosquitto is already running"
        with open(self.folder / "stderr.log", "ab") as stderr:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop(kill=True)
            raise RuntimeError(f"mosquitto did not start: {(self.folder / 'stderr.log').read_text()}") from None
        return self

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        self.process.kill() if kill else self.process.terminate()
        self.process.wait(10)
        self.process = None


def _require_mosquitto() -> None:
    """Fail, never skip: CI installs Mosquitto, so a missing one is a broken setup, not an optional test."""
    if not Path(MOSQUITTO).exists():
        pytest.fail(
            f"mosquitto is not installed ({MOSQUITTO}): install it (apt-get install mosquitto); "
            "the MQTT tests run against a real broker",
            pytrace=False,
        )


@pytest.fixture
def mosquitto(tmp_path) -> Mosquitto:
    """A started Mosquitto (anonymous, no persistence), stopped after the test."""
    _require_mosquitto()
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture
def make_mosquitto(tmp_path):
    """Factory for Mosquittos with options (persistence, TLS); all are stopped after the test."""
    _require_mosquitto()
    brokers: list[Mosquitto] = []

    def make(**options) -> Mosquitto:
        brokers.append(Mosquitto(tmp_path / f"mosquitto-{len(brokers)}", **options).start())
        return brokers[-1]

    yield make
    for broker in brokers:
        broker.stop()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float

    def json(self) -> dict:
        return json.loads(self.payload)


class Collector:
    """A paho subscriber (QoS 1) that collects what it receives; reconnects by itself."""

    def __init__(
        self,
        port: int,
        topics: list[str],
        client_id: str = "",
        persistent: bool = False,
        tls: Optional[TlsFiles] = None,
    ):
        self.messages: list[Received] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self.topics = topics
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        self.client.reconnect_delay_set(0.1, 0.5)
        if tls:
            self.client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("localhost" if tls else "127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(10), f"subscriber could not subscribe to {topics} on port {port}"

    def _on_connect(self, client, _userdata, _flags, code, _props) -> None:
        if not code.is_failure:
            client.subscribe([(topic, 1) for topic in self.topics])

    def _on_message(self, _client, _userdata, message) -> None:
        with self._changed:
            self.messages.append(
                Received(message.topic, bytes(message.payload), bool(message.retain), time.monotonic())
            )
            self._changed.notify_all()

    def wait_for(self, done: Callable[[list[Received]], bool], timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not done(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def on(self, topic: str) -> list[Received]:
        with self._changed:
            return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collectors():
    """Make subscribers with `collectors(port, [topics], ...)`; all are closed after the test."""
    made: list[Collector] = []

    def make(*args, **kwargs) -> Collector:
        made.append(Collector(*args, **kwargs))
        return made[-1]

    yield make
    for collector in made:
        collector.close()
