"""``serve --workers N``: one process per core on one shared listening socket.

One event loop uses one core; a host with more cores runs several. The supervisor binds the
socket once and forks the workers, which all ``accept`` on it, so the kernel spreads new
connections among them and no port juggling or ``SO_REUSEPORT`` is needed. Each worker is a
complete proxy with its own upstream pool, JWKS cache and coalescer (so coalescing and any
in-memory state is per worker).

SIGTERM or SIGINT to the supervisor is passed to every worker, each of which shuts down
gracefully (``shutdown_timeout``); a worker that dies otherwise is restarted, unless workers
keep dying, which ends the supervisor with an error rather than looping.

Metrics are per worker too: worker ``i`` serves its own on ``[metrics] port + i``, and each
is a scrape target (Prometheus sums them). One shared path on the proxy's own port would
show whichever worker the kernel picked, so ``main_path`` is refused here.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from .config import ProxyConfig
from .runtime import run_server

__all__ = ["serve_workers"]

log = logging.getLogger("electric_proxy.workers")

#: More crashes than this within CRASH_WINDOW seconds and the supervisor gives up.
MAX_CRASHES = 5
CRASH_WINDOW = 60.0


def _worker(config: ProxyConfig, sock: socket.socket, index: int) -> None:
    log.info("worker %d (pid %d) serving", index, os.getpid())
    server = config.server
    run_server(
        config.app(worker=index),
        event_loop=server.event_loop,
        tune_gc=server.tune_gc,
        sock=sock,
        print=None,
        **server.run_app_options(),
    )


def serve_workers(config: ProxyConfig, host: str, port: int, workers: int) -> int:
    if config.metrics is not None and config.metrics.main_path is not None:
        log.error(
            "metrics.main_path cannot be used with --workers: each scrape would reach one "
            "worker at random; use the metrics listener (worker i listens on port + i)"
        )
        return 1
    sock = socket.create_server((host, port), backlog=config.server.backlog)
    sock.set_inheritable(True)
    log.info("listening on http://%s:%d with %d workers", host, sock.getsockname()[1], workers)
    context = multiprocessing.get_context("fork")
    stopping = False

    def start(index: int) -> BaseProcess:
        process = context.Process(target=_worker, args=(config, sock, index), daemon=False)
        process.start()
        return process

    processes = {index: start(index) for index in range(workers)}

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes.values():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    crashes: list[float] = []
    try:
        while processes:
            wait([p.sentinel for p in processes.values()], timeout=1.0)
            for index, process in list(processes.items()):
                if process.is_alive():
                    continue
                process.join()
                del processes[index]
                if stopping:
                    continue
                now = time.monotonic()
                crashes = [t for t in crashes if now - t < CRASH_WINDOW] + [now]
                log.error("worker %d exited with %s", index, process.exitcode)
                if len(crashes) > MAX_CRASHES:
                    log.error("workers keep exiting; giving up")
                    stop(signal.SIGTERM, None)
                    continue
                processes[index] = start(index)
    finally:
        sock.close()
    return 1 if len(crashes) > MAX_CRASHES else 0
