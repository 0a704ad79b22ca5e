"""What `lensops fleet acl` writes, as text: the Mosquitto ACL, Mosquitto 2 password hashes and the AWS IoT policy.

The rules (DESIGN.md, "MQTT topics"; the device's user name is its id, in mTLS mode its certificate's CN):

| who      | write                                                        | read                                   |
|----------|--------------------------------------------------------------|----------------------------------------|
| device D | `<p>/D/status`, `<p>/D/deployment`, `<p>/D/+/inference`,     | `<p>/D/#` (its own topics),            |
| of fleet F | `<p>/D/+/shadow` (AWS: also `$aws/things/D/infer`)         | `<p>/fleets/F/deployment`,             |
|          |                                                              | `<p>/fleets/F/rings/+/deployment`      |
| operator | `<p>/fleets/F/deployment`, `<p>/fleets/F/rings/+/deployment`, | `<p>/#`                               |
|          | `<p>/fleets/F/rollout` for each fleet F of the devices       |                                        |
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Dict, List, Sequence, Tuple

from edge.mqtt.topics import (
    deeplens_topic,
    device_filter,
    device_publish_filters,
    fleet_notice_filters,
    rollout_topic,
)

PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes
SALT_BYTES = 12
THING = "${iot:Connection.Thing.ThingName}"  # AWS IoT policy variable: the connected thing's name


def mosquitto_acl(devices: Sequence[Tuple[str, str]], prefix: str, operator: str) -> str:
    """The Mosquitto `acl_file` text for (device id, fleet) pairs and the operator user; one `user` block each."""
    lines = [
        "# Written by `lensops fleet acl`; regenerate it rather than editing it.",
        "# A user (device id = MQTT user name, or certificate CN with use_identity_as_username) may do only",
        "# what its block lists; everyone else (anonymous, unknown users) may do nothing.",
        "",
    ]
    for device, fleet in devices:
        lines += [f"# device {device}, fleet {fleet}", f"user {device}"]
        lines += [f"topic write {topic}" for topic in device_publish_filters(prefix, device)]
        lines += [f"topic read {device_filter(prefix, device)}"]
        lines += [f"topic read {topic}" for topic in fleet_notice_filters(prefix, fleet)]
        lines.append("")
    lines += [f"# operator / rollout controller: every fleet's notices, and reads everything under {prefix}/"]
    lines += [f"user {operator}", f"topic read {prefix}/#"]
    for fleet in sorted({fleet for _, fleet in devices}):
        lines += [f"topic write {topic}" for topic in fleet_notice_filters(prefix, fleet)]
        lines.append(f"topic write {rollout_topic(prefix, fleet)}")
    return "\n".join(lines) + "\n"


def mosquitto_hash(password: str, salt: bytes = b"", iterations: int = PBKDF2_ITERATIONS) -> str:
    """The Mosquitto 2 password-file hash `$7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>` of `password`
    (a fresh 12-byte salt unless `salt` is given); what `mosquitto_passwd` writes."""
    salt = salt or os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def hash_matches(password: str, hashed: str) -> bool:
    """True when `hashed` (a `$7$` hash) is the hash of `password`; False for any other or malformed hash."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(mosquitto_hash(password, salt, int(parts[2])), hashed)


def mosquitto_passwd(hashes: Dict[str, str]) -> str:
    """The Mosquitto `password_file` text: `user:hash` lines."""
    return "".join(f"{user}:{hashed}\n" for user, hashed in hashes.items())


def aws_policy(prefix: str, fleet: str, region: str = "*", account: str = "*") -> dict:
    """The AWS IoT Core policy for the devices of `fleet` (attach it to their certificates): connect only as the
    thing the certificate is attached to, publish only under its own topics, subscribe to and receive only its
    fleet's notices (and its own topics)."""
    arn = f"arn:aws:iot:{region}:{account}"

    def policy(filters: List[str]) -> List[str]:  # `*` is the policy wildcard; MQTT's + and # are plain characters
        return [topic.replace("+", "*").replace("#", "*") for topic in filters]

    own = policy([device_filter(prefix, THING)])
    notices = policy(fleet_notice_filters(prefix, fleet))
    publish = policy(device_publish_filters(prefix, THING)) + [deeplens_topic(THING)]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ConnectOnlyAsItsThingName",
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": f"{arn}:client/{THING}",
                "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
            },
            {
                "Sid": "PublishOnlyItsOwnTopics",
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": [f"{arn}:topic/{topic}" for topic in publish],
            },
            {
                "Sid": "SubscribeToItsFleetNoticesAndOwnTopics",
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": [f"{arn}:topicfilter/{topic}" for topic in notices + own],
            },
            {
                "Sid": "ReceiveItsFleetNoticesAndOwnTopics",
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": [f"{arn}:topic/{topic}" for topic in notices + own],
            },
        ],
    }
