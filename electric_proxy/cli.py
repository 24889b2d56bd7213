"""``electric-proxy``: serve, check-config, plugins, demo."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:
    from .config import ProxyConfig

__all__ = ["main"]

# Each subcommand imports what it needs when it runs: ``--help``, ``--version`` and argument
# errors answer at once instead of after loading aiohttp, pydantic, pglast and every step.


def _load(path: str) -> ProxyConfig | None:
    from .config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid config", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    from .server import serve

    return serve(config, host=args.host, port=args.port, workers=args.workers)


def _check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    if args.workers > 1:
        from .server import worker_problems

        problems = worker_problems(config, args.workers)
        if problems:
            print(f"{args.config}: invalid config", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return 1
    # Assemble the app as serve would, without running it: whatever the endpoints refuse
    # when built is a problem now, not at the next deploy.
    try:
        config.app()
    except Exception as exc:
        print(f"{args.config}: invalid config\n  serve would refuse it: {exc}", file=sys.stderr)
        return 1
    endpoints = []
    if config.upstream is not None:
        endpoints.append((config.server.path, config.steps))
    if config.streams is not None:
        endpoints.append((config.streams.path + "/*", config.streams.steps))
    # With --show the whole output is TOML, so these lines are comments there.
    mark = "# " if args.show else ""
    for path, steps in endpoints:
        names = ", ".join(name for name, _ in steps) or "(empty chain)"
        print(f"{mark}{args.config}: ok; {path} chain: {names}")
    if args.show:
        from .config_show import show_toml

        print(show_toml(config), end="")
    return 0


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _plugins(args: argparse.Namespace) -> int:
    from .registry import available_steps

    if args.options is not None:
        return _options(args.options)
    rows = [(i.name, i.distribution, i.version, i.target) for i in available_steps()]
    _table(("NAME", "DISTRIBUTION", "VERSION", "OBJECT"), rows)
    return 0


def _options(name: str) -> int:
    from .registry import RegistryError, load_step_class
    from .step_options import step_options

    try:
        cls = load_step_class(name)
    except RegistryError as exc:
        print(f"electric-proxy plugins: {exc}", file=sys.stderr)
        return 1
    summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    print(f"{name}: {summary}" if summary else name)
    options = step_options(cls)
    if not options:
        print("(no options)")
        return 0
    rows = [
        (o.name, o.type, o.default, "yes" if o.secret else "no", o.description) for o in options
    ]
    print()
    _table(("OPTION", "TYPE", "DEFAULT", "SECRET", "DESCRIPTION"), rows)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(host=args.host, port=args.port)


def _explain(args: argparse.Namespace) -> int:
    from .chain import Principal
    from .config import ConfigError
    from .explainer import explain

    config = _load(args.config)
    if config is None:
        return 1
    try:
        claims = json.loads(args.claims) if args.claims is not None else None
    except ValueError as exc:
        print(f"electric-proxy explain: --claims is not JSON: {exc}", file=sys.stderr)
        return 1
    if claims is not None and not isinstance(claims, dict):
        print("electric-proxy explain: --claims must be a JSON object", file=sys.stderr)
        return 1
    principal = None
    if args.token is not None and (claims is not None or args.sub is not None):
        print("electric-proxy explain: --token or --claims/--sub, not both", file=sys.stderr)
        return 1
    if claims is not None or args.sub is not None:
        claims = {"sub": args.sub, **(claims or {})} if args.sub is not None else claims or {}
        principal = Principal(str(claims.get("sub", "anonymous")), claims)
    body = args.data.encode() if args.data is not None else None
    headers = {}
    for header in args.header:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            print(
                f"electric-proxy explain: --header {header!r} is not 'Name: value'", file=sys.stderr
            )
            return 1
        headers[name.strip()] = value.strip()
    if args.token is not None:
        headers["Authorization"] = f"Bearer {args.token}"
    try:
        decision = explain(
            config,
            principal,
            args.request,
            method=args.method,
            headers=headers,
            body=body,
            sync=args.sync,
            authenticate=args.token is not None,
        )
    except ConfigError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(dataclasses.asdict(decision), indent=2))
    elif decision.allowed:
        print("allowed")
        print(f"upstream: {decision.upstream_url}")
        print(f"where:    {decision.where if decision.where is not None else '(none)'}")
        for i, value in enumerate(decision.params, start=1):
            print(f"{'params:' if i == 1 else '':<9} ${i} = {json.dumps(value)}")
        if decision.rows is not None:
            print(f"rows:     {len(decision.rows)} in Electric's first answer")
            for row in decision.rows:
                print(f"          {json.dumps(row)}")
    else:
        print(f"refused: {decision.status} {decision.code} by {decision.step}")
        print(f"reason:  {decision.reason}")
    return 0 if decision.allowed else 2


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="electric-proxy", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy from a config file")
    serve.add_argument("--config", "-c", required=True, help="path to proxy.toml")
    serve.add_argument("--host", help="override [server].host")
    serve.add_argument("--port", type=int, help="override [server].port")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="processes sharing the listening socket (one per core; default 1)",
    )
    serve.set_defaults(run=_serve)

    check = sub.add_parser("check-config", help="validate a config file; exit 0 or 1")
    check.add_argument("config", help="path to proxy.toml")
    check.add_argument(
        "--show",
        action="store_true",
        help="print the effective config as TOML, secrets masked, each setting with its source",
    )
    check.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="check it for serve --workers N too (default 1)",
    )
    check.set_defaults(run=_check_config)

    plugins = sub.add_parser("plugins", help="list the steps available through entry points")
    plugins.add_argument(
        "--options", metavar="NAME", help="show one step's options: type, default, secret"
    )
    plugins.set_defaults(run=_plugins)

    explain = sub.add_parser(
        "explain", help="show what the chain decides for one request, sending nothing upstream"
    )
    explain.add_argument("--config", "-c", required=True, help="path to proxy.toml")
    explain.add_argument("--claims", help='the principal\'s claims as JSON: \'{"org_id":"acme"}\'')
    explain.add_argument("--sub", help="the principal's id (added as the `sub` claim)")
    explain.add_argument(
        "--token", help="run the authenticators on this bearer token instead (a gatekeeper's)"
    )
    explain.add_argument("--method", default="GET", help="GET (default) or POST for subsets")
    explain.add_argument("--data", help="the request body (a POST subset)")
    explain.add_argument(
        "--header", "-H", action="append", default=[], help="a request header, 'Origin: https://…'"
    )
    explain.add_argument("--json", action="store_true", help="print the decision as JSON")
    explain.add_argument(
        "--sync", action="store_true", help="also send it to the configured Electric; print rows"
    )
    explain.add_argument("request", help="the client's target: '/v1/shape?table=todos&...'")
    explain.set_defaults(run=_explain)

    demo = sub.add_parser("demo", help="run in front of a built-in demo upstream")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .logs import RequestIdLogFilter

    handler = logging.StreamHandler()
    handler.addFilter(RequestIdLogFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
