"""`lensops fleet acl`: the broker's access control for a fleet -- a device may write only its own topics and
read only its fleet's notices; the operator writes the notices and reads everything under the prefix.

```
lensops fleet acl --devices devices.txt --fleet lobby --out /etc/mosquitto/lensops [--aws-policy] [--rotate]
lensops fleet acl --device cam-01 --device cam-02 --fleet lobby --out DIR
```

The devices file: one device per line, `<id>` or `<id> <fleet>` (whitespace between); a line without a fleet
takes --fleet; `#` starts a comment; blank lines are skipped. --out DIR receives (all or nothing):

    acl                           Mosquitto acl_file (acl_rules.mosquitto_acl)
    passwd                        Mosquitto password_file ($7$ PBKDF2-SHA512, as mosquitto_passwd writes)
    mosquitto.conf                snippet: allow_anonymous false, password_file, acl_file (absolute paths)
    passwords/<user>.password     each device's and the operator's password (0600; a device config's
                                  mqtt.password_file)
    aws-iot-policy-<fleet>.json   with --aws-policy: the AWS IoT Core policy of each fleet

A re-run keeps the passwords found in DIR/passwords (so devices need no new secret) unless --rotate; a device
no longer listed disappears. Errors (UserError) name the file and line, or the option, and the value.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from common.errors import UserError
from common.files import atomic_dir
from edge.config import NAME
from pipelines.fleet.acl_rules import aws_policy, hash_matches, mosquitto_acl, mosquitto_hash, mosquitto_passwd

DEFAULT_OPERATOR = "lensops-fleet"
RESERVED = ("fleets",)  # `<prefix>/fleets/...` holds the notices: no device may own that level
PASSWORDS = "passwords"
WRITTEN = {"acl", "passwd", "mosquitto.conf", PASSWORDS}  # plus aws-iot-policy-*.json: what a re-run may replace
NAME_RULE = "letters, digits, _ . - only (an MQTT topic level and an AWS IoT thing name)"


@dataclass(frozen=True)
class Device:
    id: str
    fleet: str


@dataclass(frozen=True)
class Written:
    """What `write_acl` wrote: the folder, the devices, and which users got a new password."""

    out: Path
    devices: List[Device]
    new_passwords: List[str]
    kept_passwords: List[str]


def check_name(value: str, where: str, what: str) -> str:
    """`value` if it matches edge.config.NAME, else UserError naming `where` (a file:line or an option)."""
    if not re.match(NAME, value or ""):
        raise UserError(f"{where}: {what} {value!r} is not a valid name ({NAME_RULE})")
    return value


def read_devices(path: Path, fleet: Optional[str]) -> List[Device]:
    """The devices of a devices file (see the module doc); UserError naming the file and line of a bad one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"--devices: file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--devices: cannot read {path}: {exc}") from None
    devices: List[Device] = []
    seen: Dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) > 2:
            raise UserError(f"{where}: {line.strip()!r} is not '<device id> [<fleet>]'")
        device = check_device(fields[0], where)
        if device in seen:
            raise UserError(f"{where}: device {device!r} is listed twice (first on line {seen[device]})")
        seen[device] = number
        if len(fields) == 1 and not fleet:
            raise UserError(f"{where}: device {device!r} names no fleet and --fleet is not given")
        devices.append(Device(device, check_name(fields[1] if len(fields) == 2 else fleet, where, "fleet")))
    if not devices:
        raise UserError(f"--devices: {path} lists no devices (one '<device id> [<fleet>]' per line)")
    return devices


def check_device(device: str, where: str) -> str:
    check_name(device, where, "device id")
    if device in RESERVED:
        raise UserError(f"{where}: device id {device!r} is reserved (<prefix>/{device}/... holds the fleet notices)")
    return device


def devices_from_options(ids: Sequence[str], fleet: Optional[str]) -> List[Device]:
    """The devices of repeated --device options, all in --fleet."""
    if not fleet:
        raise UserError("--fleet: required with --device")
    check_name(fleet, "--fleet", "fleet")
    seen = set()
    for device in ids:
        check_device(device, "--device")
        if device in seen:
            raise UserError(f"--device: device {device!r} is given twice")
        seen.add(device)
    return [Device(device, fleet) for device in ids]


def check_prefix(prefix: str) -> str:
    """The topic prefix, under the device config's rule (edge.mqtt.config: topic_prefix)."""
    if not prefix or any(c in prefix for c in "+#\0") or prefix.startswith(("/", "$")) or prefix.endswith("/"):
        raise UserError(f"--prefix: {prefix!r} must be non-empty, without + # $ or a leading/trailing /")
    return prefix


def existing_passwords(out: Path, users: Sequence[str]) -> Dict[str, str]:
    """The passwords of `users` found in an earlier run's `out/passwords/` (a missing or empty one is skipped)."""
    found = {}
    for user in users:
        try:
            password = (out / PASSWORDS / f"{user}.password").read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError):
            continue
        if password:
            found[user] = password
    return found


def existing_hashes(out: Path) -> Dict[str, str]:
    """user -> hash of an earlier run's passwd file (empty when there is none)."""
    try:
        lines = (out / "passwd").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    return dict(line.split(":", 1) for line in lines if ":" in line)


def check_out(out: Path) -> None:
    """Refuse an --out that holds anything this command did not write (it replaces the whole folder)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a folder")
    foreign = sorted(
        p.name for p in out.iterdir() if p.name not in WRITTEN and not re.match(r"aws-iot-policy-.+\.json$", p.name)
    )
    if foreign:
        raise UserError(
            f"--out: {out} holds files `lensops fleet acl` did not write ({', '.join(foreign[:5])}); "
            "give an empty or new folder (the folder is replaced as a whole)"
        )


def write_acl(
    out: Path,
    devices: Sequence[Device],
    prefix: str = "lensops",
    operator: str = DEFAULT_OPERATOR,
    with_aws_policy: bool = False,
    rotate: bool = False,
    aws_region: str = "*",
    aws_account: str = "*",
) -> Written:
    """Write the folder `out` (see the module doc) atomically: all files, or nothing and the old folder kept.

    Passwords of users found in the old folder are kept unless `rotate`; a kept password keeps its hash line.
    Raises UserError for a bad prefix/operator, an operator named like a device, or an unwritable `out`."""
    out = Path(out).absolute()
    check_prefix(prefix)
    check_name(operator, "--operator", "operator user name")
    if operator in {device.id for device in devices}:
        raise UserError(f"--operator: {operator!r} is also a device id; the operator needs its own user name")
    if not devices:
        raise UserError("no devices given")
    check_out(out)
    users = [device.id for device in devices] + [operator]
    kept = {} if rotate else existing_passwords(out, users)
    old_hashes = existing_hashes(out)
    passwords = {user: kept.get(user) or secrets.token_urlsafe(24) for user in users}
    hashes = {}
    for user, password in passwords.items():  # a kept password keeps its line: a re-run changes no byte of it
        old = old_hashes.get(user, "")
        hashes[user] = old if user in kept and hash_matches(password, old) else mosquitto_hash(password)
    try:
        with atomic_dir(out) as tmp:
            _write_files(tmp, out, devices, prefix, operator, passwords, hashes)
            if with_aws_policy:
                for fleet in sorted({device.fleet for device in devices}):
                    policy = aws_policy(prefix, fleet, aws_region, aws_account)
                    (tmp / f"aws-iot-policy-{fleet}.json").write_text(json.dumps(policy, indent=2) + "\n")
    except OSError as exc:
        raise UserError(f"--out: cannot write {out}: {exc.strerror or exc}") from None
    return Written(out, list(devices), [u for u in users if u not in kept], [u for u in users if u in kept])


def _write_files(tmp: Path, out: Path, devices, prefix: str, operator: str, passwords, hashes) -> None:
    pairs = [(device.id, device.fleet) for device in devices]
    _write(tmp / "acl", mosquitto_acl(pairs, prefix, operator), 0o640)
    _write(tmp / "passwd", mosquitto_passwd(hashes), 0o640)
    conf = [
        "# Written by `lensops fleet acl`: include it in the broker's configuration (e.g. a file in",
        "# /etc/mosquitto/conf.d/). With per_listener_settings true, put these lines under each listener.",
        "allow_anonymous false",
        f"password_file {out / 'passwd'}",
        f"acl_file {out / 'acl'}",
    ]
    _write(tmp / "mosquitto.conf", "\n".join(conf) + "\n", 0o644)
    (tmp / PASSWORDS).mkdir(mode=0o700)
    for user, password in passwords.items():
        _write(tmp / PASSWORDS / f"{user}.password", password + "\n", 0o600)


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, mode)  # whatever the umask


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "acl",
        help="write the broker's ACL, password files and AWS IoT policy for a fleet's devices",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--devices", type=Path, metavar="FILE", help="one '<device id> [<fleet>]' per line")
    which.add_argument("--device", action="append", metavar="ID", help="a device id (repeat it)")
    parser.add_argument("--fleet", help="the devices' fleet (a devices-file line may name its own)")
    parser.add_argument("--prefix", default="lensops", help="topic prefix (the devices' mqtt.topic_prefix)")
    parser.add_argument("--operator", default=DEFAULT_OPERATOR, help="user name of the operator / controller")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write (replaced whole)")
    parser.add_argument("--aws-policy", action="store_true", help="also write aws-iot-policy-<fleet>.json")
    parser.add_argument("--aws-region", default="*", help="region in the policy's ARNs (default *)")
    parser.add_argument("--aws-account", default="*", help="account id in the policy's ARNs (default *)")
    parser.add_argument("--rotate", action="store_true", help="new passwords for every user")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.devices is not None:
        if args.fleet:
            check_name(args.fleet, "--fleet", "fleet")
        devices = read_devices(args.devices, args.fleet)
    else:
        devices = devices_from_options(args.device, args.fleet)
    written = write_acl(
        args.out,
        devices,
        args.prefix,
        args.operator,
        args.aws_policy,
        args.rotate,
        args.aws_region,
        args.aws_account,
    )
    fleets = sorted({device.fleet for device in written.devices})
    count = len(written.devices)
    print(f"wrote {written.out}: {count} device(s) in fleet(s) {', '.join(fleets)}, operator {args.operator}")
    new = written.new_passwords
    print(f"passwords: {len(written.kept_passwords)} kept, {len(new)} new" + (f": {', '.join(new)}" if new else ""))
    print(f"broker: include {written.out / 'mosquitto.conf'} and reload Mosquitto (SIGHUP)")
    return 0
