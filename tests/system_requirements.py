"""The Debian packages the test suite runs for real, checked (and installed, as root) before `make test`.

`python -m tests.system_requirements` exits 0 when every one is there. When some are missing it
installs them with apt-get if it runs as root on a Debian-like system (`--install`), or else stops at
once with one line naming the command to run. `.ci/run` and the Makefile use this one list.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
from typing import Callable

GI_CHECK = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "assert all(Gst.ElementFactory.find(e) for e in ('multifilesrc', 'jpegdec', 'x264enc', 'rtph264pay'))"
)


def _gst_rtsp() -> bool:
    python = "/usr/bin/python3"
    return os.path.exists(python) and subprocess.run([python, "-c", GI_CHECK], capture_output=True).returncode == 0


# (what the tests need, the Debian packages that provide it, how to tell it is there)
REQUIREMENTS: list[tuple[str, tuple[str, ...], Callable[[], bool]]] = [
    (
        "Mosquitto (the edge tests' broker)",
        ("mosquitto",),
        lambda: shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin") is not None,
    ),
    ("Chromium (the device page in a headless browser)", ("chromium",), lambda: os.path.exists("/usr/bin/chromium")),
    ("systemd-analyze (the unit file in deploy/)", ("systemd",), lambda: shutil.which("systemd-analyze") is not None),
    (
        "PostgreSQL (the multi-user registry's backend store)",
        ("postgresql",),
        lambda: bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")),
    ),
    (
        "GStreamer's RTSP server with H.264 (the RTSP camera tests)",
        (
            "gstreamer1.0-rtsp",
            "gir1.2-gst-rtsp-server-1.0",
            "gir1.2-gstreamer-1.0",
            "gstreamer1.0-plugins-base",
            "gstreamer1.0-plugins-good",
            "gstreamer1.0-plugins-ugly",
            "python3-gi",
        ),
        _gst_rtsp,
    ),
]


def missing() -> list[tuple[str, tuple[str, ...]]]:
    return [(what, packages) for what, packages, present in REQUIREMENTS if not present()]


def packages() -> list[str]:
    return [p for _, names, _ in REQUIREMENTS for p in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.system_requirements", description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="install what is missing with apt-get (as root)")
    parser.add_argument("--list", action="store_true", help="print the Debian packages and exit")
    args = parser.parse_args(argv)
    if args.list:
        print(" ".join(packages()))
        return 0
    lacking = missing()
    if not lacking:
        return 0
    names = sorted({p for _, pkgs in lacking for p in pkgs})
    command = "apt-get install -y " + " ".join(names)
    if args.install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        print(f"installing the system packages the tests need: {' '.join(names)}", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdin=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *names],
            check=True,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        lacking = missing()
        if not lacking:
            return 0
    what = "; ".join(w for w, _ in lacking)
    print(f"error: the tests need {what}: run `sudo {command}` (Debian), then `make test` again", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
