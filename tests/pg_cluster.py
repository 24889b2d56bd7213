"""A private PostgreSQL cluster for tests that need the real database.

The cluster is private: a temporary directory, 127.0.0.1 on a free port, and a unix socket
in the same directory. As root, initdb and pg_ctl run as the ``postgres`` user, because the
server refuses to run as root. One cluster serves the whole session (``pg_cluster`` in
``conftest.py``); each test module makes its own database in it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from electric_proxy.testing import unavailable


def _bindir() -> Path | None:
    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.parent.name))

    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if debian:
        return debian[-1].parent
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run(command: Sequence[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {result.stderr[-2000:]}")


@dataclass(frozen=True)
class Cluster:
    """Where the running cluster listens."""

    sockets: Path
    port: int

    def connect(self, dbname: str = "postgres") -> Any:
        """An autocommit psycopg connection with a statement timeout, so no test hangs."""
        import psycopg

        connection = psycopg.connect(
            host=str(self.sockets), port=self.port, user="postgres", dbname=dbname, autocommit=True
        )
        connection.execute("SET statement_timeout = '5s'")
        return connection

    def database(self, name: str) -> Any:
        """A fresh database ``name`` (dropped first if a previous module left one)."""
        with self.connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.connect(name)


@contextlib.contextmanager
def private_cluster() -> Iterator[Cluster]:
    """Start a cluster in a temporary directory; stop and delete it afterwards."""
    bindir = _bindir()
    if bindir is None:
        unavailable("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable('psycopg is not installed (pip install "psycopg[binary]")')

    as_user: list[str] = []
    owner: tuple[int, int] | None = None
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no 'postgres' user to run the server")
        runuser = shutil.which("runuser")
        if runuser is None:
            unavailable("running as root and runuser(1) is missing")
        as_user = [runuser, "-u", "postgres", "--"]
        owner = (account.pw_uid, account.pw_gid)

    base = Path(tempfile.mkdtemp(prefix="where-pg-"))
    data, sockets, log = base / "data", base / "sock", base / "server.log"
    sockets.mkdir()
    if owner is not None:
        for path in (base, sockets):
            os.chown(path, *owner)
    port = _free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sockets} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    pg_ctl = str(bindir / "pg_ctl")
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
    try:
        _run([*as_user, *initdb, "-E", "UTF8", "--locale=C", "--no-sync"], "initdb")
        start = [pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "30", "-o", options]
        _run([*as_user, *start, "start"], "pg_ctl start")
        yield Cluster(sockets, port)
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(base, ignore_errors=True)
