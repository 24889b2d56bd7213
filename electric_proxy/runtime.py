"""Process-level tuning for the standalone server: the event loop, the garbage collector and
the C allocator.

Both matter most in the proxy's hardest moment, a burst of thousands of long-polls (every
client reconnecting after a deploy). Measured on 2 cores with 9,000 held long-polls
(benchmarks/): CPython's default collector thresholds made the burst reach Electric a
median 7 s late, because each full collection walks every object of every held request;
with young collections every 50,000 allocations instead of 700, 2 s, and small responses
went 20% faster. uvloop is opt-in: it took the burst to 1.6 s and small responses 5% further,
but streamed 1 MB bodies 25% slower and let memory grow with body size (170 MB instead of
105 MB for 64 streams of 10 MB). glibc's allocator gave every streamed 1 MB body some 50 to
80 fresh pages (its heap trimmed and grown again, large buffers mapped and unmapped): a
third more kernel time per body than the pass-through measured beside it; with its
thresholds raised (:func:`tune_malloc`), under one page. Embedders keep their own process
settings: this module is only used by ``electric-proxy serve``.

:func:`run_server` does what ``web.run_app`` does (serve until SIGTERM or SIGINT, then shut
down gracefully) on a :class:`~electric_proxy.http_server.ProxyRunner`, which ``run_app``
cannot be given: that runner is what keeps request bytes out of the log and the answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import importlib.util
import logging
import signal
import socket
import ssl
from collections.abc import Callable
from typing import Any, Literal

from aiohttp import web

from .http_server import ProxyRunner
from .log_setup import log_loop_exception

__all__ = [
    "EventLoopChoice",
    "new_event_loop",
    "run_server",
    "tune_garbage_collector",
    "tune_malloc",
    "uvloop_available",
]

log = logging.getLogger("electric_proxy.runtime")

EventLoopChoice = Literal["asyncio", "uvloop"]

#: Allocations between young-generation collections (CPython's default is 700).
YOUNG_COLLECTION_THRESHOLD = 50_000
#: Young collections between middle-generation ones (CPython's default is 10). While a
#: burst of long-polls is being held, each middle collection walks every request that
#: arrived since the last one: 9,000 held requests cost three of ~250 ms each at 10, none at
#: 100, with the same peak memory. Steady traffic frees its objects by reference counting
#: and triggers no young collection at all, so this changes nothing for it.
MIDDLE_COLLECTION_THRESHOLD = 100


def tune_garbage_collector() -> None:
    """Collect young objects less often, and never rescan what start-up built.

    Call once the application is built: ``gc.freeze`` moves everything alive (modules,
    compiled filters, the chain) out of the collector's sight for good.
    """
    old = gc.get_threshold()[2]
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, MIDDLE_COLLECTION_THRESHOLD, old)
    gc.freeze()


#: Blocks up to this size come from glibc's heap rather than a mapping of their own, which
#: the kernel must zero-fill page by page each time (glibc's default: 128 KiB, raised on the
#: fly only after a large block is freed).
MMAP_THRESHOLD = 4 * 1024 * 1024
#: Free memory kept at the top of the heap before glibc gives it back (default 128 KiB):
#: bodies in flight come and go, and each return costs the faults of the next growth.
TRIM_THRESHOLD = 32 * 1024 * 1024
# glibc's malloc.h parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc() -> bool:
    """Keep streamed bodies' buffers in the C heap; whether the allocator took the settings.

    Only glibc has these knobs (``mallopt``); elsewhere (musl, macOS) this is a no-op that
    returns ``False``.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    took: bool = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and took


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def new_event_loop(choice: EventLoopChoice) -> asyncio.AbstractEventLoop:
    """A fresh loop of the configured kind."""
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise RuntimeError(
                "event_loop = 'uvloop' needs the speed extra: pip install 'electric-proxy[speed]'"
            ) from None
        log.info("event loop: uvloop")
        return uvloop.new_event_loop()
    log.info("event loop: asyncio")
    return asyncio.new_event_loop()


async def _serve(
    app: web.Application,
    *,
    host: str | None,
    port: int | None,
    sock: socket.socket | None,
    backlog: int,
    print: Callable[[str], None] | None,
    ssl_context: ssl.SSLContext | None,
    on_sighup: Callable[[], object] | None,
    runner_options: dict[str, Any],
) -> None:
    runner = ProxyRunner(app, handle_signals=True, **runner_options)
    await runner.setup()
    if on_sighup is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)
    try:
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(runner, sock, backlog=backlog, ssl_context=ssl_context)
        else:
            site = web.TCPSite(runner, host, port, backlog=backlog, ssl_context=ssl_context)
        await site.start()
        if print is not None:
            print(f"======== Running on {site.name} ========\n(Press CTRL+C to quit)")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def run_server(
    app: web.Application,
    *,
    event_loop: EventLoopChoice,
    tune_gc: bool,
    tune_allocator: bool = True,
    host: str | None = None,
    port: int | None = None,
    sock: socket.socket | None = None,
    backlog: int = 128,
    print: Callable[[str], None] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    on_sighup: Callable[[], object] | None = None,
    keepalive_timeout: float = 75.0,
    **runner_options: Any,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT on the configured loop, the collector (and,
    with ``tune_allocator``, the C allocator) tuned.

    With ``ssl_context`` the listener speaks TLS; ``on_sighup`` runs on the loop at each
    SIGHUP (``serve`` reloads the certificate). ``runner_options`` go to
    :class:`~electric_proxy.http_server.ProxyRunner` (and from there to aiohttp's
    ``AppRunner``), as ``web.run_app`` passes its own. The loop's unhandled exceptions are
    logged by :func:`~electric_proxy.log_setup.log_loop_exception`.
    """
    loop = new_event_loop(event_loop)
    loop.set_exception_handler(log_loop_exception)
    if tune_gc:
        tune_garbage_collector()
    if tune_allocator and not tune_malloc():
        log.debug("the C allocator has no thresholds to tune here (not glibc)")
    options = {"keepalive_timeout": keepalive_timeout, **runner_options}
    main = loop.create_task(
        _serve(
            app,
            host=host,
            port=port,
            sock=sock,
            backlog=backlog,
            print=print,
            ssl_context=ssl_context,
            on_sighup=on_sighup,
            runner_options=options,
        )
    )
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_remaining(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)
