"""A throwaway PostgreSQL server (Debian's `postgresql` package) for the multi-user registry tests.

initdb + postgres on 127.0.0.1 and a free port, trust authentication, data in a temporary folder.
PostgreSQL refuses to run as root: as root (CI) both run as the `postgres` system user the Debian
package creates, through `runuser`, with the data folder owned by it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.pipelines.mlflow_server import free_port


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")
    return found


class Postgres:
    def __init__(self):
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lensops-pg-"))
        self.data = self.root / "data"
        self.proc = None
        self.user = "lensops"
        self.uri = f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"  # libpq (psycopg2.connect)
        # SQLAlchemy (mlflow server --backend-store-uri) names the driver: its default may be psycopg 3
        self.sqlalchemy_uri = f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args

    def start(self, timeout_s: float = 60) -> "Postgres":
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        subprocess.run(
            self._as_owner(
                [
                    _binary("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.log = open(self.root / "server.log", "wb")
        self.proc = subprocess.Popen(
            self._as_owner(
                [
                    _binary("postgres"),
                    "-D",
                    str(self.data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-F",
                ]
            ),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.root / 'server.log').read_text()[-2000:]}")
            ready = subprocess.run(
                [_binary("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
            )
            if ready.returncode == 0:
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"postgres did not start within {timeout_s} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: smart shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.proc:
            self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
