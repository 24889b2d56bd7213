"""From a validated config to a running proxy: assemble the app, serve it, in one process or
``--workers N``, with the process limits a proxy of held requests needs.

:mod:`electric_proxy.config` only reads and checks; everything that builds endpoints, opens
sockets or forks is here, and :mod:`electric_proxy.cli` only parses arguments.

``--workers N``: one event loop uses one core; a host with more cores runs several. Each
worker listens on a socket of its own bound to the same address with ``SO_REUSEPORT``, and
the kernel hashes every new connection (by its addresses and ports) to one of them. With
one shared listening socket, which this used before, whichever worker is waiting in
``accept`` wins, and on a lightly loaded host that can be the same worker for most
connections (4 of 4 sequential connections once went to worker 0); hashing does not depend
on which worker happens to be idle. The supervisor binds the address first without
listening, to resolve port 0, fail early when the address is taken, and hold it while a
worker restarts; a socket that does not listen is given no connections. The cost of
``SO_REUSEPORT``: connections the kernel has queued on a worker's socket and the worker has
not accepted yet are reset when that worker closes it (at shutdown or a crash), unless
Linux's ``net.ipv4.tcp_migrate_req = 1`` moves them to another worker; and another process
of the same user that binds the port with ``SO_REUSEPORT`` (a second ``serve --workers``)
joins the group instead of failing with "address in use".

Each worker is a complete proxy with its own upstream pool, JWKS cache and coalescer (so
coalescing and any in-memory state is per worker). SIGTERM or SIGINT to the supervisor is
passed to every worker, each of which shuts down gracefully (``drain_delay``, then
``shutdown_timeout``); a worker that dies otherwise is restarted, unless workers keep
dying, which ends the supervisor with an error rather than looping.

``[server] log_format`` is applied here, first (:mod:`electric_proxy.log_setup`). With
``tls_cert`` and ``tls_key`` the listener speaks TLS, and SIGHUP reloads the certificate
(:mod:`electric_proxy.tls`); the supervisor passes SIGHUP on to every worker, each of which
reloads its own context.

Metrics are per worker too: worker ``i`` serves its own on ``[metrics] port + i``, and each
is a scrape target (Prometheus sums them). One shared path on the proxy's own port would
show whichever worker the kernel picked, so ``main_path`` is refused with workers.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import resource
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from aiohttp import web

from .audit import Audit
from .caching import CacheMode
from .config import ConfigError, ProxyConfig, StreamsConfig, listener_problems
from .endpoint import Endpoint, EndpointObserver
from .health import HEALTH, Health
from .http_server import own_application
from .log_setup import configure_logging
from .metrics import Metrics
from .revocation import REVOCATIONS, Revocations
from .runtime import run_server
from .shapes import ShapeProxy
from .streams import StreamProxy
from .tls import reload_certificate, server_context

__all__ = [
    "build_app",
    "build_shapes",
    "build_streams",
    "delay_stop",
    "raise_open_file_limit",
    "serve",
    "serve_workers",
    "worker_problems",
]

log = logging.getLogger("electric_proxy")
workers_log = logging.getLogger("electric_proxy.workers")

#: More crashes than this within CRASH_WINDOW seconds and the supervisor gives up.
MAX_CRASHES = 5
CRASH_WINDOW = 60.0


def build_shapes(config: ProxyConfig, observers: Sequence[EndpointObserver] = ()) -> ShapeProxy:
    """The shape endpoint (``[upstream]`` + ``[[chain]]``)."""
    if config.upstream is None:
        raise ConfigError(["upstream: no shape endpoint is configured"])
    return ShapeProxy(
        upstream=config.upstream,
        chain=[step for _, step in config.steps],
        path=config.server.path,
        coalesce_live=config.server.coalesce_live,
        cache=config.server.cache,
        observers=observers,
        shape_cache_bytes=config.server.shape_cache_bytes,
    )


def build_streams(
    streams: StreamsConfig,
    cache: CacheMode = "vary",
    observers: Sequence[EndpointObserver] = (),
) -> StreamProxy:
    """The Durable Streams endpoint (``[streams]``)."""
    return StreamProxy(
        upstream=streams.upstream,
        chain=[step for _, step in streams.steps],
        path=streams.path,
        cache=cache,
        observers=observers,
    )


def build_app(config: ProxyConfig, *, worker: int = 0) -> web.Application:
    """Every configured endpoint in one application, with health routes and metrics.

    ``worker`` is the index of a ``serve --workers`` process: worker ``i`` serves its metrics
    on ``port + i``, since each counts only its own requests and is a scrape target of its own.
    """
    app = web.Application()
    own_application(app)
    settings = config.metrics
    metrics = Metrics() if settings is not None else None
    audit = Audit.from_settings(config.audit)
    observers = [o for o in (metrics, audit) if o is not None]
    endpoints: list[Endpoint] = []
    if config.upstream is not None:
        endpoints.append(build_shapes(config, observers))
    if config.streams is not None:
        endpoints.append(build_streams(config.streams, config.server.cache, observers))
    for endpoint in endpoints:
        endpoint.setup(app)
    if audit is not None:
        audit.setup(app)
    if config.health.enabled:
        Health.from_settings(endpoints, config.health).setup(app)
    revocations = _wire_revocations(app, config, endpoints, worker)
    if metrics is not None and settings is not None:
        metrics.report(revocations.metrics)
        metrics.setup(app, path=settings.main_path)
        if settings.listener:
            port = settings.port + worker if settings.port else 0
            app.cleanup_ctx.append(metrics.listener(settings.host, port, settings.path))
    return app


def _wire_revocations(
    app: web.Application, config: ProxyConfig, endpoints: list[Endpoint], worker: int
) -> Revocations:
    """Live revocation: always callable from code (``app[REVOCATIONS]``); subscribed to
    Redis with ``[revocation]``; on HTTP with ``[admin]`` (worker ``i`` on ``port + i``)."""
    shared = config.revocation
    revocations = Revocations(endpoints)
    if shared is not None:
        revocations = Revocations(
            endpoints, redis_url=shared.redis_url.get_secret_value(), channel=shared.channel
        )
    app[REVOCATIONS] = revocations
    revocations.setup(app)
    admin = config.admin
    if admin is not None:
        port = admin.port + worker if admin.port else 0
        token = admin.token.get_secret_value() if admin.token is not None else None
        app.cleanup_ctx.append(revocations.admin_listener(admin.host, port, token))
    return revocations


def raise_open_file_limit() -> None:
    """Each held live request costs two sockets; the soft limit is often far below the hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            log.warning("could not raise the open-file limit above %d", soft)


def serve(
    config: ProxyConfig, *, host: str | None = None, port: int | None = None, workers: int = 1
) -> int:
    """``electric-proxy serve``: run until SIGTERM or SIGINT; the exit status.

    ``host`` and ``port`` override ``[server]``; ``workers`` above 1 forks that many.
    """
    configure_logging(config.server.log_format)
    # SIGHUP's default is to end the process. Until the event loop handles it, a reload is
    # moot: the certificate is read after this, from the files as they are then.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    raise_open_file_limit()
    server = config.server
    host = host or server.host
    port = port if port is not None else server.port
    if workers > 1:
        return serve_workers(config, host, port, workers)
    ssl_context, on_sighup = _tls(config)
    run_server(
        _serving_app(config),
        event_loop=server.event_loop,
        tune_gc=server.tune_gc,
        tune_allocator=server.tune_malloc,
        host=host,
        port=port,
        backlog=server.backlog,
        print=lambda msg: log.info("%s", msg),
        ssl_context=ssl_context,
        on_sighup=on_sighup,
        **server.run_app_options(),
    )
    return 0


def _tls(config: ProxyConfig) -> tuple[ssl.SSLContext | None, Callable[[], object]]:
    """``run_server``'s ``ssl_context`` and the SIGHUP action that reloads its certificate."""
    cert, key = config.server.tls_cert, config.server.tls_key
    if cert is None or key is None:
        return None, lambda: log.info("SIGHUP: no TLS certificate to reload")
    context = server_context(cert, key)
    return context, lambda: reload_certificate(context, cert, key)


def delay_stop(delay: float) -> Callable[[web.Application], Awaitable[None]]:
    """An ``on_startup`` hook for ``serve``: SIGTERM first makes ``/readyz`` answer ``503``,
    then the proxy keeps serving ``delay`` seconds, then it stops as on any SIGTERM.

    Load balancers and Kubernetes learn that a replica is going away some time after it
    is told to: a probe interval later, or when endpoint removal reaches every node. A
    process that closes its listener at once refuses the requests still routed to it in
    that window. A second SIGTERM, or SIGINT (Ctrl-C), stops at once. It replaces the
    handler ``ProxyRunner(handle_signals=True)`` installs before the app starts, and raises
    the same ``GracefulExit`` from the loop, so the shutdown itself is unchanged.
    """

    async def install(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        health = app.get(HEALTH)

        def stop_now() -> None:
            raise web.GracefulExit()

        def stop_later() -> None:
            if health is not None and health.stopping:
                stop_now()  # the second SIGTERM: the operator means it
            if health is not None:
                health.stop()
            else:  # nothing to remember the first SIGTERM by: let the next one stop at once
                loop.add_signal_handler(signal.SIGTERM, stop_now)
            log.info("SIGTERM: not ready; serving %g s more, then stopping", delay)
            loop.call_later(delay, stop_now)

        loop.add_signal_handler(signal.SIGTERM, stop_later)

    return install


def _serving_app(config: ProxyConfig, worker: int = 0) -> web.Application:
    """The app ``serve`` runs: :func:`build_app` and the process's own signal handling."""
    app = build_app(config, worker=worker)
    if config.server.drain_delay > 0:
        app.on_startup.append(delay_stop(config.server.drain_delay))
    return app


def _bind(host: str, port: int, backlog: int | None) -> socket.socket:
    """A TCP socket on ``host:port`` with ``SO_REUSEPORT``; listening when ``backlog`` is set.

    Every worker binds the same address this way and the kernel balances connections over
    the listening ones.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        if backlog is not None:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _worker(config: ProxyConfig, reserved: socket.socket, host: str, port: int, index: int) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # not the supervisor's forwarding (see serve)
    reserved.close()  # the supervisor's: inherited through fork, of no use here
    sock = _bind(host, port, config.server.backlog)
    workers_log.info("worker %d (pid %d) serving", index, os.getpid())
    server = config.server
    ssl_context, on_sighup = _tls(config)
    try:
        run_server(
            _serving_app(config, worker=index),
            event_loop=server.event_loop,
            tune_gc=server.tune_gc,
            tune_allocator=server.tune_malloc,
            sock=sock,
            backlog=server.backlog,
            print=None,
            ssl_context=ssl_context,
            on_sighup=on_sighup,
            **server.run_app_options(),
        )
    except Exception:
        # multiprocessing would print the traceback itself, as text and with the message.
        workers_log.critical("worker %d failed", index, exc_info=True)
        raise SystemExit(1) from None


def worker_problems(config: ProxyConfig, workers: int) -> list[str]:
    """What ``serve --workers N`` (N > 1) refuses in ``config``; ``check-config --workers``
    reports the same list."""
    problems = listener_problems(config.server, config.metrics, config.admin, workers)
    if config.metrics is not None and config.metrics.main_path is not None:
        problems.append(
            "metrics.main_path: cannot be used with --workers above 1: each scrape would reach "
            "one worker at random; use the metrics listener (worker i listens on port + i)"
        )
    if config.admin is not None and config.revocation is None:
        problems.append(
            "admin: with --workers above 1 it needs [revocation]: an interrupt sent to one "
            "worker would end that worker's requests only; set [revocation] redis_url"
        )
    return problems


def serve_workers(config: ProxyConfig, host: str, port: int, workers: int) -> int:
    """Supervise ``workers`` forked processes on one socket; the exit status."""
    problems = worker_problems(config, workers)
    for problem in problems:
        workers_log.error("%s", problem)
    if problems:
        return 1
    reserved = _bind(host, port, backlog=None)
    port = reserved.getsockname()[1]
    scheme = "https" if config.server.tls_cert is not None else "http"
    workers_log.info("listening on %s://%s:%d with %d workers", scheme, host, port, workers)
    context = multiprocessing.get_context("fork")
    stopping = False

    def start(index: int) -> BaseProcess:
        process = context.Process(
            target=_worker, args=(config, reserved, host, port, index), daemon=False
        )
        process.start()
        return process

    processes = {index: start(index) for index in range(workers)}

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes.values():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    def forward(signum: int, frame: FrameType | None) -> None:
        for process in processes.values():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, forward)  # each worker reloads its TLS certificate
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
                workers_log.error("worker %d exited with %s", index, process.exitcode)
                if len(crashes) > MAX_CRASHES:
                    workers_log.error("workers keep exiting; giving up")
                    stop(signal.SIGTERM, None)
                    continue
                processes[index] = start(index)
    finally:
        reserved.close()
    return 1 if len(crashes) > MAX_CRASHES else 0
