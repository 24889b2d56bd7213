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


class RedisServer:
    """A ``redis-server`` of the test's own on a free loopback port, without persistence.

    ``directory`` is its working directory (a ``tmp_path``). Without the binary or the
    ``redis`` package the test is :func:`unavailable`. It can be stopped and started again on
    the same port, to simulate an outage; ``with RedisServer(tmp_path) as redis:`` starts it
    and stops it at the end of the block.
    """

    def __init__(self, directory: Path | str) -> None:
        binary = shutil.which("redis-server")
        if binary is None or not redis_available():
            unavailable("redis-server and the redis package are needed (scripts/redis-setup)")
        self.binary = binary
        self.directory = Path(directory)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, within: float = 10.0) -> None:
        """Start it and return once it accepts connections; RuntimeError if it does not."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + within
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                code = self.process.poll()
                if time.monotonic() > deadline or code is not None:
                    self.stop()
                    raise RuntimeError(
                        f"redis-server did not start on port {self.port} (exit code {code})"
                    ) from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
