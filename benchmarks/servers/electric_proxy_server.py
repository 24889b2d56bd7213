"""electric-proxy with the full chain on, in its own process (the target being measured).

The chain is what a real deployment runs, so the benchmark pays for everything a user pays
for: header hygiene (``Vary``), bearer auth (SHA-256 token lookup), a policy whose ``where``
is bound to a claim (``org_id = $1`` + ``params[1]``), and secret injection. It is served the
way the ``electric-proxy`` command serves it (``run_server``: handler cancellation, the
tuned collector, a 4,096 backlog); the access log is off, as it would be
behind any load balancer that logs.
"""

from __future__ import annotations

import argparse
import resource

from electric_proxy import (
    BearerAuth,
    Credentials,
    ResponseHeaders,
    ShapePolicy,
    ShapeProxy,
    StaticToken,
)
from electric_proxy.runtime import run_server


def raise_open_file_limit() -> None:
    """Each held long-poll costs the proxy two sockets: 9,000 of them need ~18,000 fds."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def build_proxy(upstream: str, token: str, secret: str, coalesce_live: bool) -> ShapeProxy:
    return ShapeProxy(
        upstream=upstream,
        chain=[
            ResponseHeaders(),
            BearerAuth(
                tokens=[StaticToken(token=token, sub="bench-user", claims={"org_id": "acme"})]
            ),
            ShapePolicy(
                shapes={
                    "todos": {
                        "where": "org_id = :org_id",
                        "columns": ["id", "title", "done", "org_id"],
                    }
                }
            ),
            Credentials(secret=secret),
        ],
        coalesce_live=coalesce_live,
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
    args = parser.parse_args()
    raise_open_file_limit()
    proxy = build_proxy(args.upstream, args.token, args.secret, not args.no_coalesce)
    run_server(
        proxy.app(),
        event_loop=args.event_loop,
        tune_gc=not args.no_tune_gc,
        host="127.0.0.1",
        port=args.port,
        backlog=args.backlog,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
