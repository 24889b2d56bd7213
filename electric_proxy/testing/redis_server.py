"""A private ``redis-server`` for tests of what several processes share through Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from ..revocation import redis_available
from .prerequisites import unavailable
from .serving import free_port

__all__ = ["RedisServer"]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


class RedisServer:
    """A ``redis-server`` of the test's own on a free loopback port, without persistence.

    ``directory`` is its working directory (a ``tmp_path``), where it also writes its log
    (shown when it does not start); ``password`` sets ``requirepass`` and goes into
    :attr:`url`. Without the binary or the ``redis`` package the test is
    :func:`unavailable`. It can be stopped and started again on the same port, to simulate
    an outage; ``with RedisServer(tmp_path) as redis:`` starts it and stops it at the end of
    the block.
    """

    def __init__(self, directory: Path | str, *, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None or not redis_available():
            unavailable("redis-server and the redis package are needed (scripts/redis-setup)")
        assert binary is not None
        self.binary = binary
        self.directory = Path(directory)
        self.password = password
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        login = f":{self.password}@" if self.password else ""
        return f"redis://{login}127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    def start(self, within: float = 10.0) -> RedisServer:
        """Start it and return once it answers a PING; RuntimeError (with the end of its log)
        if it does not."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        if self.password:
            args += ["--requirepass", self.password]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + within
        while not _answers_ping(self.port):
            code = self.process.poll()
            if time.monotonic() > deadline or code is not None:
                self.stop()
                raise RuntimeError(
                    f"redis-server did not start on port {self.port} (exit code {code}):\n"
                    + self.log_path.read_text()[-2000:]
                )
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
