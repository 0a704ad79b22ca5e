"""`lensops fleet acl` against a real Mosquitto started with the files it writes: a device writes only its own
topics and reads only its fleet's notices; the operator writes the notices and reads everything; the real edge
publisher works under the ACL. Plus re-runs, bad input, and the AWS IoT policy (moto in server mode)."""

from __future__ import annotations

import json
import stat
import threading
import time
import urllib.request
from pathlib import Path

import boto3
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.mqtt.config import MqttConfig
from edge.mqtt.publisher import Publisher
from pipelines.fleet.cli import main as fleet_main
from tests.edge.conftest import MOSQUITTO, Mosquitto, TlsFiles, make_tls_files

NOT_AUTHORIZED = 0x87
OK = 0  # PUBACK: accepted (0x10, "no matching subscribers", is reported as OK too)
P = "lensops"
DEVICES = "cam-a lobby\ncam-b lobby  # same fleet as cam-a\n\n# another fleet\ncam-c dock\n"


def acl(*argv: str) -> int:
    return fleet_main(["acl", *argv])


def password(out: Path, user: str) -> str:
    return (out / "passwords" / f"{user}.password").read_text().strip()


@pytest.fixture
def out(tmp_path) -> Path:
    devices = tmp_path / "devices.txt"
    devices.write_text(DEVICES)
    assert acl("--devices", str(devices), "--out", str(tmp_path / "acl"), "--aws-policy") == 0
    return tmp_path / "acl"


@pytest.fixture
def broker(out, tmp_path):
    assert Path(MOSQUITTO).exists(), f"mosquitto is not installed ({MOSQUITTO})"
    broker = Mosquitto(tmp_path / "mosquitto", extra_lines=(out / "mosquitto.conf").read_text().splitlines()).start()
    yield broker
    broker.stop()


class Client:
    """A paho MQTT 5 client of one user that records CONNACK, PUBACK and SUBACK reason codes and the messages."""

    def __init__(self, port: int, user: str = "", secret: str = "", client_id: str = "", tls: TlsFiles = None):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if user:
            self.client.username_pw_set(user, secret)
        if tls:
            self.client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
        self.changed = threading.Condition()
        self.connack: list[ReasonCode] = []
        self.acks: dict[int, object] = {}  # mid -> PUBACK reason code, or SUBACK reason codes
        self.messages: list[mqtt.MQTTMessage] = []
        self.client.on_connect = lambda _c, _u, _f, code, _p: self._note(self.connack.append, code)
        self.client.on_publish = lambda _c, _u, mid, code, _p: self._note(self.acks.__setitem__, mid, code)
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self._note(self.acks.__setitem__, mid, codes)
        self.client.on_message = lambda _c, _u, message: self._note(self.messages.append, message)
        self.client.connect("localhost" if tls else "127.0.0.1", port)
        self.client.loop_start()
        self.wait(lambda: self.connack)

    @property
    def refused(self) -> bool:
        return self.connack[0].is_failure

    def _note(self, record, *args) -> None:
        with self.changed:
            record(*args)
            self.changed.notify_all()

    def wait(self, done, timeout_s: float = 10.0):
        with self.changed:
            assert self.changed.wait_for(done, timeout_s), "no answer from the broker"
            return done()

    def publish(self, topic: str, payload: str = "x", retain: bool = False) -> int:
        """Publish at QoS 1; the PUBACK's reason code (OK, or 0x87 = not authorized)."""
        mid = self.client.publish(topic, payload, qos=1, retain=retain).mid
        code = self.wait(lambda: self.acks.get(mid)).value
        return OK if code == 0x10 else code

    def subscribe(self, *filters: str) -> list[int]:
        """Subscribe at QoS 1; the SUBACK's reason code of each filter (1 = granted QoS 1, 0x87 = not authorized)."""
        _, mid = self.client.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
        return [code.value for code in self.wait(lambda: self.acks.get(mid))]

    def topics(self) -> list[str]:
        with self.changed:
            return [message.topic for message in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def connect(broker, out):
    made: list[Client] = []

    def make(user: str, secret: str = "", client_id: str = "") -> Client:
        made.append(Client(broker.port, user, secret or (password(out, user) if user else ""), client_id or user))
        return made[-1]

    yield make
    for client in made:
        client.close()


def test_a_device_cannot_write_as_another_device_or_as_the_operator(connect):
    operator = connect("lensops-fleet")
    assert operator.subscribe(f"{P}/#") == [1]
    device = connect("cam-a")
    denied = [
        f"{P}/cam-b/status",
        f"{P}/cam-b/deployment",
        f"{P}/cam-b/door/inference",
        f"{P}/cam-b/door/shadow",
        f"{P}/cam-c/status",
        f"{P}/fleets/lobby/deployment",
        f"{P}/fleets/lobby/rings/0/deployment",
        f"{P}/fleets/lobby/rollout",
        f"{P}/fleets/dock/deployment",
        f"{P}/cam-a/anything",  # under its own level, but not one of its topics
    ]
    assert {topic: device.publish(topic, retain=True) for topic in denied} == dict.fromkeys(denied, NOT_AUTHORIZED)
    own = [f"{P}/cam-a/deployment", f"{P}/cam-a/door/inference", f"{P}/cam-a/door/shadow", f"{P}/cam-a/status"]
    assert [device.publish(topic) for topic in own] == [OK] * 4
    # one publisher, one subscriber: in order, so once its last own message arrived, nothing denied ever will
    operator.wait(lambda: f"{P}/cam-a/status" in operator.topics())
    assert operator.topics() == own


def test_a_device_reads_only_its_fleets_notices(connect):
    operator = connect("lensops-fleet")
    notices = {
        f"{P}/fleets/lobby/deployment": True,
        f"{P}/fleets/lobby/rings/1/deployment": True,
        f"{P}/fleets/dock/deployment": False,
        f"{P}/fleets/dock/rings/0/deployment": False,
        f"{P}/fleets/lobby/rollout": False,  # the controller's report: not a notice
    }
    assert [operator.publish(topic, retain=True) for topic in notices] == [OK] * len(notices)
    assert connect("cam-b").publish(f"{P}/cam-b/status", "online", retain=True) == OK
    device = connect("cam-a")
    # Mosquitto 2.0 grants any SUBSCRIBE and applies the read rules to each message it would deliver
    device.subscribe(
        f"{P}/fleets/dock/deployment",
        f"{P}/fleets/dock/rings/+/deployment",
        f"{P}/cam-b/status",
        f"{P}/fleets/lobby/rollout",
        "#",
        f"{P}/#",
        f"{P}/+/status",
    )
    device.subscribe(f"{P}/fleets/lobby/deployment", f"{P}/fleets/lobby/rings/+/deployment")
    device.subscribe(f"{P}/cam-a/status")  # a barrier: its SUBACK comes after the retained messages of those above
    assert set(device.topics()) == {topic for topic, allowed in notices.items() if allowed}


def test_the_edge_publisher_works_under_the_acl(connect, out, broker, tmp_path):
    notice = json.dumps({"version": "7"})
    operator = connect("lensops-fleet")
    assert operator.publish(f"{P}/fleets/lobby/deployment", notice, retain=True) == OK
    assert operator.subscribe(f"{P}/cam-a/#", f"{P}/cam-b/#") == [1, 1]
    config = MqttConfig(url=broker.url, username="cam-a", password_file=out / "passwords" / "cam-a.password")
    publisher = Publisher.from_config(config, "cam-a", tmp_path / "state")
    received = []
    publisher.subscribe(publisher.topics.fleet_deployment("lobby"), lambda topic, payload: received.append(payload))
    publisher.publish_status({"state": "running"})
    publisher.enqueue(f"{P}/cam-b/status", {"state": "as cam-b"}, retain=True)  # 3.1.1: acked, dropped
    publisher.enqueue(publisher.topics.inference("door"), {"seq": 1})
    publisher.start()
    try:
        operator.wait(lambda: f"{P}/cam-a/door/inference" in operator.topics())
        assert publisher.wait_until_drained(10)
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        assert received == [notice.encode()]
        stats = publisher.stats()
        assert stats.connected and stats.dead_letters == 0 and publisher.last_error is None
    finally:
        publisher.stop()
    operator.wait(lambda: any(json.loads(m.payload).get("state") == "offline" for m in operator.messages if m.payload))
    assert set(operator.topics()) == {f"{P}/cam-a/status", f"{P}/cam-a/door/inference"}


def test_wrong_password_unknown_users_and_anonymous_clients_are_refused(connect, broker):
    assert connect("cam-a", secret="wrong").refused
    assert connect("cam-z", secret="anything").refused
    assert Client(broker.port).refused
    assert not connect("cam-a").refused


def test_certificate_identity_as_user_name(out, tmp_path):
    """mTLS with use_identity_as_username: the certificate's CN (cam-a) is the user the same ACL names."""
    tls = make_tls_files(tmp_path / "tls", client_name="cam-a")
    lines = ["use_identity_as_username true", "allow_anonymous false", f"acl_file {out / 'acl'}"]
    broker = Mosquitto(tmp_path / "mosquitto-tls", tls=tls, extra_lines=lines).start()
    made = []
    try:
        tls_config = {"ca_file": tls.ca, "cert_file": tls.client_cert, "key_file": tls.client_key}
        publisher = Publisher.from_config(MqttConfig(url=broker.url, tls=tls_config), "cam-a", tmp_path / "state")
        publisher.publish_status({"state": "running"})
        publisher.start()
        try:
            made.append(Client(broker.port, client_id="watch", tls=tls))  # also cam-a: reads its own topics
            made[0].subscribe(f"{P}/cam-b/status", f"{P}/cam-a/status")
            made[0].wait(lambda: f"{P}/cam-a/status" in made[0].topics())
            made[0].subscribe(f"{P}/cam-a/deployment")  # a barrier (see test_a_device_reads_only_its_fleets_notices)
            assert set(made[0].topics()) == {f"{P}/cam-a/status"}
        finally:
            publisher.stop()
        assert made[0].publish(f"{P}/cam-b/status", retain=True) == NOT_AUTHORIZED
        assert made[0].publish(f"{P}/fleets/lobby/deployment", retain=True) == NOT_AUTHORIZED
        assert made[0].publish(f"{P}/cam-a/door/inference") == OK
    finally:
        for client in made:
            client.close()
        broker.stop()


def test_a_rerun_keeps_passwords_rotate_changes_them_removed_devices_disappear(out, tmp_path):
    before = {p.name: p.read_text() for p in (out / "passwords").iterdir()}
    passwd = (out / "passwd").read_text()
    assert acl("--device", "cam-a", "--device", "cam-d", "--fleet", "lobby", "--out", str(out)) == 0
    after = {p.name: p.read_text() for p in (out / "passwords").iterdir()}
    assert set(after) == {"cam-a.password", "cam-d.password", "lensops-fleet.password"}
    assert after["cam-a.password"] == before["cam-a.password"]
    assert after["lensops-fleet.password"] == before["lensops-fleet.password"]
    assert [line for line in passwd.splitlines() if line.startswith("cam-a:")][0] in (out / "passwd").read_text()
    assert "cam-b" not in (out / "passwd").read_text() + (out / "acl").read_text()
    assert not list(out.glob("aws-iot-policy-*.json"))  # not asked for this time
    assert acl("--device", "cam-a", "--device", "cam-d", "--fleet", "lobby", "--out", str(out), "--rotate") == 0
    rotated = {p.name: p.read_text() for p in (out / "passwords").iterdir()}
    assert all(rotated[name] != after[name] for name in after)
    for path in (out / "passwords").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "passwords").stat().st_mode) == 0o700


def _bad(tmp_path: Path, devices_text, *argv: str):
    devices = tmp_path / "bad.txt"
    if devices_text is not None:
        devices.write_text(devices_text)
    return [*argv, "--devices", str(devices)]


@pytest.mark.parametrize(
    "devices_text, extra, named",
    [
        ("cam-a lobby\ncam/x lobby\n", (), "bad.txt:2: device id 'cam/x'"),
        ("cam-a\ncam+x\n", ("--fleet", "lobby"), "bad.txt:2: device id 'cam+x'"),
        ("cam-a lobby\n\ncam-a dock\n", (), "bad.txt:3: device 'cam-a' is listed twice (first on line 1)"),
        ("# nobody\n\n", ("--fleet", "lobby"), "bad.txt lists no devices"),
        (None, ("--fleet", "lobby"), "bad.txt does not exist"),
        ("cam-a\n", (), "bad.txt:1: device 'cam-a' names no fleet and --fleet is not given"),
        ("cam-a lob#by\n", (), None),  # a comment: cam-a in fleet "lob" -- fine
        ("cam-a lo+by\n", (), "bad.txt:1: fleet 'lo+by'"),
        ("cam-a lobby extra\n", (), "bad.txt:1: 'cam-a lobby extra' is not '<device id> [<fleet>]'"),
        ("fleets lobby\n", (), "bad.txt:1: device id 'fleets' is reserved"),
        ("lensops-fleet lobby\n", (), "--operator: 'lensops-fleet' is also a device id"),
        ("cam-a lobby\n", ("--prefix", "a/#"), "--prefix: 'a/#'"),
        ("cam-a lobby\n", ("--operator", "op:x"), "--operator: operator user name 'op:x'"),
    ],
)
def test_bad_input_is_one_named_error_and_nothing_is_written(out, tmp_path, capsys, devices_text, extra, named):
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code = acl(*_bad(tmp_path, devices_text, *extra), "--out", str(out))
    err = capsys.readouterr().err
    if named is None:
        assert code == 0 and "cam-a lobby" not in (out / "acl").read_text()
        return
    assert code == 2 and err.startswith("error: ") and named in err, err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the old folder as it was


def test_an_unwritable_or_foreign_out_folder_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert acl("--device", "cam-a", "--fleet", "lobby", "--out", str(blocker / "acl")) == 2
    assert f"--out: cannot write {blocker / 'acl'}" in capsys.readouterr().err
    foreign = tmp_path / "etc"
    foreign.mkdir()
    (foreign / "mosquitto.conf.orig").write_text("keep me")
    assert acl("--device", "cam-a", "--fleet", "lobby", "--out", str(foreign)) == 2
    assert "did not write (mosquitto.conf.orig)" in capsys.readouterr().err
    assert (foreign / "mosquitto.conf.orig").read_text() == "keep me"
    assert acl("--device", "cam-a", "--device", "cam-a", "--fleet", "lobby", "--out", str(tmp_path / "x")) == 2
    assert "--device: device 'cam-a' is given twice" in capsys.readouterr().err
    assert acl("--device", "cam-a", "--out", str(tmp_path / "x")) == 2
    assert "--fleet: required with --device" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_aws_iot_policy_encodes_the_same_rules_and_moto_takes_it(out, moto_url, monkeypatch):
    assert sorted(p.name for p in out.glob("aws-iot-policy-*.json")) == [
        "aws-iot-policy-dock.json",
        "aws-iot-policy-lobby.json",
    ]
    document = json.loads((out / "aws-iot-policy-lobby.json").read_text())
    statements = {s["Action"]: s for s in document["Statement"]}
    assert document["Version"] == "2012-10-17" and all(s["Effect"] == "Allow" for s in statements.values())
    thing, arn = "${iot:Connection.Thing.ThingName}", "arn:aws:iot:*:*"
    assert statements["iot:Connect"]["Resource"] == f"{arn}:client/{thing}"
    assert statements["iot:Connect"]["Condition"] == {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}
    assert statements["iot:Publish"]["Resource"] == [
        f"{arn}:topic/{P}/{thing}/status",
        f"{arn}:topic/{P}/{thing}/deployment",
        f"{arn}:topic/{P}/{thing}/*/inference",
        f"{arn}:topic/{P}/{thing}/*/shadow",
        f"{arn}:topic/$aws/things/{thing}/infer",
    ]
    assert statements["iot:Subscribe"]["Resource"] == [
        f"{arn}:topicfilter/{P}/fleets/lobby/deployment",
        f"{arn}:topicfilter/{P}/fleets/lobby/rings/*/deployment",
        f"{arn}:topicfilter/{P}/{thing}/*",
    ]
    assert statements["iot:Receive"]["Resource"] == [
        f"{arn}:topic/{P}/fleets/lobby/deployment",
        f"{arn}:topic/{P}/fleets/lobby/rings/*/deployment",
        f"{arn}:topic/{P}/{thing}/*",
    ]
    assert "dock" not in json.dumps(document)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
    iot = boto3.client("iot", endpoint_url=moto_url, region_name="us-east-1")
    text = (out / "aws-iot-policy-lobby.json").read_text()
    created = iot.create_policy(policyName="lensops-fleet-lobby", policyDocument=text)
    assert created["policyArn"].endswith(":policy/lensops-fleet-lobby")
    assert json.loads(iot.get_policy(policyName="lensops-fleet-lobby")["policyDocument"]) == document
