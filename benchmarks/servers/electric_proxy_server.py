"""electric-proxy with the full chain on, in its own process (the target being measured).

The chain is what a real deployment runs, so the benchmark pays for everything a user pays
for: header hygiene (``Vary``), bearer auth (SHA-256 token lookup), a policy whose ``where``
is bound to a claim (``org_id = $1`` + ``params[1]``), and secret injection. It is served the
way the ``electric-proxy`` command serves it (``run_server``: handler cancellation, the
tuned collector and allocator, a 4,096 backlog); the access log is off, as it would be
behind any load balancer that logs.

Options for the rows that measure one feature: ``--users N`` adds N more users of the same
tenant (tokens ``<token>-0000`` ...), ``--shape-cache-bytes`` sizes the shape cache (0: off,
so every request reaches the upstream), ``--request-id`` puts the ``request_id`` step first
(as the README's browser chain does), and ``--metrics`` serves ``/metrics`` on the proxy's
port so the run can read what the shape cache and the coalescer counted.
"""

from __future__ import annotations

import argparse
import resource
from typing import Any

from electric_proxy import (
    BearerAuth,
    Credentials,
    Metrics,
    RequestId,
    ResponseHeaders,
    ShapePolicy,
    ShapeProxy,
    StaticToken,
)
from electric_proxy.chain import Middleware
from electric_proxy.runtime import run_server


def raise_open_file_limit() -> None:
    """Each held long-poll costs the proxy two sockets: 9,000 of them need ~18,000 fds."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def build_proxy(args: argparse.Namespace, metrics: Metrics | None) -> ShapeProxy:
    users = [StaticToken(token=args.token, sub="bench-user", claims={"org_id": "acme"})]
    users += [
        StaticToken(token=f"{args.token}-{i:04d}", sub=f"user-{i}", claims={"org_id": "acme"})
        for i in range(args.users)
    ]
    chain: list[Middleware] = [RequestId()] if args.request_id else []
    chain += [
        ResponseHeaders(),
        BearerAuth(tokens=users),
        ShapePolicy(
            shapes={
                "todos": {
                    "where": "org_id = :org_id",
                    "columns": ["id", "title", "done", "org_id"],
                }
            }
        ),
        Credentials(secret=args.secret),
    ]
    options: dict[str, Any] = {"observers": [metrics]} if metrics is not None else {}
    if args.shape_cache_bytes is not None:  # absent: the default (and older versions run)
        options["shape_cache_bytes"] = args.shape_cache_bytes
    return ShapeProxy(
        upstream=args.upstream, chain=chain, coalesce_live=not args.no_coalesce, **options
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's /v1/shape URL")
    parser.add_argument("--token", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--no-coalesce", action="store_true", help="coalesce_live=False")
    parser.add_argument("--backlog", type=int, default=4096, help="listen backlog")
    parser.add_argument("--event-loop", default="asyncio", choices=("asyncio", "uvloop"))
    parser.add_argument("--no-tune-gc", action="store_true", help="keep CPython's GC defaults")
    parser.add_argument("--no-tune-malloc", action="store_true", help="keep glibc's defaults")
    parser.add_argument("--users", type=int, default=0, help="more users of the same tenant")
    parser.add_argument("--shape-cache-bytes", type=int, help="0: no shape cache")
    parser.add_argument("--request-id", action="store_true", help="the request_id step first")
    parser.add_argument("--metrics", action="store_true", help="serve /metrics on this port")
    args = parser.parse_args()
    raise_open_file_limit()
    metrics = Metrics() if args.metrics else None
    proxy = build_proxy(args, metrics)
    app = proxy.app()
    if metrics is not None:
        metrics.setup(app, path="/metrics")
    run_server(
        app,
        event_loop=args.event_loop,
        tune_gc=not args.no_tune_gc,
        tune_allocator=not args.no_tune_malloc,
        host="127.0.0.1",
        port=args.port,
        backlog=args.backlog,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
