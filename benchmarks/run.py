"""electric-proxy benchmark: one command, loopback only, bounded in time, a printed table.

    python benchmarks/run.py            # ~10 minutes: 3 rounds of every target, long-polls
    python benchmarks/run.py --quick    # ~1-2 minutes smoke run

Throughput: the same Electric-like static answers (~1 KB and ~1 MB JSON with Electric's
headers, served by nginx) are fetched with wrk, in the same run and in alternating order,
from the upstream directly and through nginx, a Node fetch proxy written as Electric's docs
show, a minimal aiohttp pass-through and electric-proxy with its full chain. Each
(target, body) measurement gets a fresh proxy process, so its peak RSS (VmHWM) belongs to
that body size alone.

Live requests: a long-poll upstream holds every request; a burst of long-polls goes through
electric-proxy and through a naive aiohttp proxy (aiohttp's default 100-connection pool),
and identical waiting clients show what live-request coalescing saves the upstream (also
with the ``request_id`` step on and a ``traceparent`` per client). The shape-cache row runs
the full chain with the cache on for 100 users of one organisation and reads from the
proxy's metrics how many requests reached the upstream.

Pinning keeps the load generator from stealing the proxy's core: the measured proxy runs on
one CPU (``--proxy-cpus``, default 1), wrk, the upstreams, the long-poll client and this
script on the other (``--load-cpus``, default 0). Every server listens on 127.0.0.1 on a free
port, and every process is stopped when the run ends, however it ends.

The targets in the README are reported (met, or missed by how much), never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    HERE,
    HOST,
    Proc,
    Processes,
    WrkResult,
    affinity,
    free_port,
    nginx_binary,
    open_fds,
    peak_rss_mb,
    require_tools,
    reset_peak_rss,
    run_wrk,
    versions,
)

TOKEN = "bench-token-0123456789abcdef"  # StaticToken needs >= 16 characters
SECRET = "bench-electric-secret"
SERVERS = HERE / "servers"
SIZES = {"1kb": 1024, "1mb": 1024 * 1024}
# Electric ends a response at 10 MiB (ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD): the largest
# body a proxy must stream. Measured once per target, for memory against body size.
BIG = "10mb"
BODY_BYTES = {**SIZES, BIG: 10 * 1024 * 1024}
SIZE_LABEL = {"1kb": "1 KB", "1mb": "1 MB", BIG: "10 MB"}
TARGETS = (
    "direct",
    "nginx",
    "node",
    "aiohttp",
    "aiohttp-uvloop",
    "aiohttp-memory",
    "electric-proxy",
    "electric-proxy-cache",
)
#: ``--only cache``: the shape cache against the same chain without it.
CACHE_TARGETS = ("direct", "aiohttp", "aiohttp-memory", "electric-proxy", "electric-proxy-cache")
#: Users of one tenant in the shape-cache row: each request is the next user's.
CACHE_USERS = 100
LABEL = {
    "direct": "upstream direct (nginx static)",
    "nginx": "nginx reverse proxy",
    "node": "Node fetch proxy (Electric docs)",
    "aiohttp": "minimal aiohttp pass-through",
    "aiohttp-uvloop": "minimal aiohttp pass-through, uvloop",
    "aiohttp-memory": "aiohttp answering from memory (no upstream: the ceiling)",
    "electric-proxy": "electric-proxy, full chain",
    "electric-proxy-cache": f"electric-proxy, full chain, shape cache ({CACHE_USERS} users, 1 org)",
}


# --------------------------------------------------------------------------- settings


@dataclass
class Settings:
    rounds: int
    duration: float
    warmup: float
    connections: int
    load_cpus: str
    proxy_cpus: str
    backlog: int
    lp_clients: int
    lp_naive_clients: int
    lp_hold: float
    lp_timeout: float
    co_clients: int
    co_changes: int
    rid_clients: int
    throughput: bool
    longpoll: bool
    bursts: bool
    targets: tuple[str, ...]
    json_path: Path | None


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="~1-2 minute smoke run")
    parser.add_argument("--rounds", type=int, help="rounds of every target (default 3; quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 8; quick 3)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds (default 2; quick 1)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--load-cpus", default="0", help="CPUs of wrk/upstreams/clients (0)")
    parser.add_argument("--proxy-cpus", default="1", help="CPUs of the proxy under test (1)")
    parser.add_argument(
        "--backlog",
        type=int,
        default=4096,
        help="listen backlog of every proxy (4096; aiohttp's default, and so `electric-proxy "
        "serve`'s, is 128, which drops SYNs under a 9,000-request burst)",
    )
    parser.add_argument("--lp-clients", type=int, help="burst through electric-proxy (9000)")
    parser.add_argument("--lp-naive-clients", type=int, help="burst through naive (2000)")
    parser.add_argument("--lp-hold", type=float, default=5.0, help="upstream hold seconds (5)")
    parser.add_argument("--lp-timeout", type=float, default=20.0, help="client timeout (20)")
    parser.add_argument("--co-clients", type=int, help="identical waiting clients (1000)")
    parser.add_argument("--co-changes", type=int, help="changes announced (5)")
    parser.add_argument(
        "--rid-clients", type=int, default=200, help="identical waits, request_id step on (200)"
    )
    parser.add_argument(
        "--only",
        choices=["throughput", "longpoll", "cache"],
        help="run one part ('cache': the shape-cache and request-id rows, with their baselines)",
    )
    parser.add_argument("--json", type=Path, help="also write every raw number here")
    args = parser.parse_args(argv)
    quick = args.quick

    def pick(value: Any, full: Any, smoke: Any) -> Any:
        return value if value is not None else (smoke if quick else full)

    return Settings(
        rounds=pick(args.rounds, 3, 1),
        duration=pick(args.duration, 8.0, 3.0),
        warmup=pick(args.warmup, 2.0, 1.0),
        connections=args.connections,
        load_cpus=args.load_cpus,
        proxy_cpus=args.proxy_cpus,
        backlog=args.backlog,
        lp_clients=pick(args.lp_clients, 9000, 2000),
        lp_naive_clients=pick(args.lp_naive_clients, 2000, 1000),
        lp_hold=args.lp_hold,
        lp_timeout=args.lp_timeout,
        co_clients=pick(args.co_clients, 1000, 300),
        co_changes=pick(args.co_changes, 5, 3),
        rid_clients=args.rid_clients,
        throughput=args.only in (None, "throughput", "cache"),
        longpoll=args.only in (None, "longpoll", "cache"),
        bursts=args.only != "cache",
        targets=CACHE_TARGETS if args.only == "cache" else TARGETS,
        json_path=args.json,
    )


def say(text: str = "") -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- static upstream


def electric_body(size: int) -> bytes:
    """A JSON array of Electric insert messages, as close to ``size`` bytes as rows allow."""
    rows: list[str] = []
    length = 2
    i = 0
    while True:
        i += 1
        row = json.dumps(
            {
                "key": f'"public"."todos"/"{i}"',
                "value": {
                    "id": str(i),
                    "title": f"todo number {i}",
                    "done": "false",
                    "org_id": "acme",
                },
                "headers": {"operation": "insert", "relation": ["public", "todos"]},
            },
            separators=(",", ":"),
        )
        if rows and length + len(row) + 1 > size:
            break
        rows.append(row)
        length += len(row) + 1
    body = ("[" + ",".join(rows) + "]").encode()
    # Pad the last title so the body is exactly ``size`` bytes: "1 KB" means 1,024 here.
    pad = size - len(body)
    if pad > 0:
        first = b'"title":"todo number 1"'
        body = body.replace(first, first[:-1] + b" " * pad + b'"', 1)
    return body


NGINX_COMMON = """
worker_processes 1;
pid {dir}/{name}.pid;
error_log {dir}/{name}-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
"""

NGINX_TEMP = """
  client_body_temp_path {dir}/{name}-tmp/body;
  proxy_temp_path {dir}/{name}-tmp/proxy;
  fastcgi_temp_path {dir}/{name}-tmp/fastcgi;
  uwsgi_temp_path {dir}/{name}-tmp/uwsgi;
  scgi_temp_path {dir}/{name}-tmp/scgi;
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  tcp_nodelay on;
"""

# Electric's headers on a catch-up chunk (sync protocol sections 3 and 5); nginx adds ETag.
ELECTRIC_HEADERS = {
    "electric-handle": "$arg_handle",
    "electric-offset": '"26800584_4"',
    "electric-has-data": '"true"',
    "electric-schema": "'"
    + json.dumps(
        {
            "id": {"type": "text", "pk_index": 0, "not_null": True},
            "title": {"type": "text"},
            "done": {"type": "text"},
            "org_id": {"type": "text"},
        },
        separators=(",", ":"),
    )
    .replace("{", "{{")
    .replace("}", "}}")
    + "'",
    "cache-control": '"public, max-age=60, stale-while-revalidate=300"',
    "access-control-allow-origin": '"*"',
    "access-control-expose-headers": '"electric-cursor,electric-handle,electric-has-data,'
    "electric-offset,electric-schema,electric-up-to-date,electric-internal-known-error,"
    'retry-after"',
    "access-control-allow-methods": '"GET, POST, HEAD, DELETE, OPTIONS"',
}


def plain_headers() -> dict[str, str]:
    """:data:`ELECTRIC_HEADERS` as values rather than nginx directives (no quotes, single
    braces); the handle is the one asked for, so it is left to the server."""
    plain = {}
    for name, value in ELECTRIC_HEADERS.items():
        if name != "electric-handle":
            plain[name] = value[1:-1].replace("{{", "{").replace("}}", "}")
    return plain


NGINX_UPSTREAM = (
    NGINX_COMMON
    + """
http {{
"""
    + NGINX_TEMP
    + """
  sendfile on;
  tcp_nopush on;
  default_type application/json;
  map $arg_handle $bench_body {{
    bench-1mb /body-1mb.json;
    bench-10mb /body-10mb.json;
    default /body-1kb.json;
  }}
  server {{
    listen {host}:{port} backlog=4096;
    root {dir}/www;
    location = /v1/shape {{
"""
    + "".join(f"      add_header {k} {v} always;\n" for k, v in ELECTRIC_HEADERS.items())
    + """      try_files $bench_body =404;
    }}
  }}
}}
"""
)

# A plain reverse proxy with what Electric's docs ask of one: HTTP/1.1 keep-alive upstream,
# no buffering (so live and SSE answers stream). Unbuffered, nginx relays through one buffer
# of proxy_buffer_size, 4 KB by default, which capped it at ~450 req/s (0.46 GB/s) on 1 MB
# bodies here; 64 KB is what aiohttp reads at a time, so both stream in like-sized pieces.
NGINX_PROXY = (
    NGINX_COMMON
    + """
http {{
"""
    + NGINX_TEMP
    + """
  upstream electric {{ server {host}:{upstream_port}; keepalive 256; }}
  server {{
    listen {host}:{port} backlog={backlog};
    location /v1/shape {{
      proxy_pass http://electric;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_buffer_size 64k;
      proxy_buffers 4 64k;
      proxy_busy_buffers_size 64k;
    }}
  }}
}}
"""
)


def write_nginx_conf(workdir: Path, name: str, template: str, **values: Any) -> Path:
    (workdir / f"{name}-tmp").mkdir(exist_ok=True)
    conf = workdir / f"{name}.conf"
    conf.write_text(template.format(dir=workdir, name=name, host=HOST, **values))
    return conf


def nginx_argv(workdir: Path, conf: Path) -> list[str]:
    return [
        nginx_binary(),
        "-e",
        str(workdir / "nginx-startup.log"),
        "-p",
        str(workdir),
        "-c",
        str(conf),
        "-g",
        "daemon off;",
    ]


# --------------------------------------------------------------------------- throughput


@dataclass
class Target:
    name: str
    start: Callable[[], Proc | None]  # None: nothing to start (the upstream itself)
    url: str = ""


def check(target: Target, size_key: str, expected: int) -> str:
    """One request before measuring: the right status, body and headers, or the run stops."""
    request = urllib.request.Request(
        f"{target.url}?table=todos&handle=bench-{size_key}&offset=0_0",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        body = resp.read()
        headers = resp.headers
        status = resp.status
    problems = []
    if status != 200:
        problems.append(f"status {status}")
    if len(body) != expected:
        problems.append(f"body {len(body)} bytes, expected {expected}")
    for name in ("electric-handle", "electric-offset", "electric-schema"):
        if name not in headers:
            problems.append(f"no {name}")
    if target.name.startswith("electric-proxy"):
        if "Authorization" not in (headers.get("Vary") or ""):
            problems.append("no Vary: Authorization")
        if "access-control-allow-origin" in headers:
            problems.append("Electric's CORS headers leaked")
    if problems:
        raise RuntimeError(f"{target.name} {size_key}: " + "; ".join(problems))
    return f"{target.name} {size_key}: 200, {len(body)} bytes, headers ok"


def throughput(cfg: Settings, procs: Processes, workdir: Path) -> dict[str, Any]:
    """Every target, every body size, ``cfg.rounds`` rounds in alternating order."""
    www = workdir / "www"
    www.mkdir()
    bodies = {key: electric_body(size) for key, size in BODY_BYTES.items()}
    for key, body in bodies.items():
        (www / f"body-{key}.json").write_bytes(body)
    os.chmod(workdir, 0o755)  # nginx workers run as nobody when started by root
    up_port = free_port()
    conf = write_nginx_conf(workdir, "upstream", NGINX_UPSTREAM, port=up_port)
    upstream = procs.start("nginx-upstream", nginx_argv(workdir, conf), cfg.load_cpus, port=up_port)
    upstream_url = f"http://{HOST}:{up_port}/v1/shape"
    py = sys.executable

    def serve(name: str, argv: list[str], port: int) -> Proc:
        proc = procs.start(name, argv, cfg.proxy_cpus, port=port)
        targets[name].url = f"http://{HOST}:{port}/v1/shape"
        return proc

    def nginx_proxy() -> Proc:
        port = free_port()
        conf = write_nginx_conf(
            workdir, "proxy", NGINX_PROXY, port=port, upstream_port=up_port, backlog=cfg.backlog
        )
        return serve("nginx", nginx_argv(workdir, conf), port)

    def node_proxy() -> Proc:
        port = free_port()
        script = str(SERVERS / "node_proxy.mjs")
        argv = ["node", script, str(port), upstream_url, TOKEN, SECRET, str(cfg.backlog)]
        return serve("node", argv, port)

    def aiohttp_proxy(name: str, *extra: str) -> Callable[[], Proc]:
        def start() -> Proc:
            port = free_port()
            argv = [py, str(SERVERS / "aiohttp_proxy.py"), "--port", str(port), *extra]
            argv += ["--upstream", upstream_url, "--backlog", str(cfg.backlog)]
            return serve(name, argv, port)

        return start

    def aiohttp_memory() -> Proc:
        port = free_port()
        argv = [py, str(SERVERS / "aiohttp_memory.py"), "--port", str(port), "--www", str(www)]
        argv += ["--headers", json.dumps(plain_headers()), "--backlog", str(cfg.backlog)]
        return serve("aiohttp-memory", argv, port)

    def electric_proxy() -> Proc:
        # The shape cache off: every request pays the chain *and* the trip upstream.
        port = free_port()
        argv = ep_argv(port, upstream_url, cfg.backlog, "--shape-cache-bytes", "0")
        return serve("electric-proxy", argv, port)

    def electric_proxy_cache() -> Proc:
        port = free_port()
        argv = ep_argv(port, upstream_url, cfg.backlog, "--users", str(CACHE_USERS), "--metrics")
        return serve("electric-proxy-cache", argv, port)

    targets = {
        "direct": Target("direct", lambda: None, upstream_url),
        "nginx": Target("nginx", nginx_proxy),
        "node": Target("node", node_proxy),
        "aiohttp": Target("aiohttp", aiohttp_proxy("aiohttp")),
        "aiohttp-uvloop": Target("aiohttp-uvloop", aiohttp_proxy("aiohttp-uvloop", "--uvloop")),
        "aiohttp-memory": Target("aiohttp-memory", aiohttp_memory),
        "electric-proxy": Target("electric-proxy", electric_proxy),
        "electric-proxy-cache": Target("electric-proxy-cache", electric_proxy_cache),
    }
    results: dict[str, dict[str, list[WrkResult]]] = {
        name: {key: [] for key in BODY_BYTES} for name in cfg.targets
    }
    #: What the cached proxy's metrics said after each run: hits, misses (= upstream requests).
    cache_counts: dict[str, list[dict[str, float]]] = {key: [] for key in BODY_BYTES}
    pinned: dict[str, str] = {"wrk": cfg.load_cpus, "nginx-upstream": affinity(upstream.pid)}
    checks: list[str] = []
    wrk_log = workdir / "wrk.log"
    headers = [f"Authorization: Bearer {TOKEN}"]

    def measure(name: str, key: str, duration: float) -> None:
        """A fresh proxy process: check, warm up, measure, read its peak RSS, stop it."""
        target = targets[name]
        proc = target.start()
        try:
            tree = proc.tree() if proc else upstream.tree()
            if proc is not None:
                pinned[name] = ",".join(sorted({affinity(p) for p in tree}))
            line = check(target, key, len(bodies[key]))
            if line not in checks:
                checks.append(line)
            url = f"{target.url}?table=todos&handle=bench-{key}&offset=0_0"

            users = {"BENCH_USERS": str(CACHE_USERS), "BENCH_TOKEN": TOKEN}

            def load(seconds: float) -> WrkResult:
                return run_wrk(
                    url,
                    connections=cfg.connections,
                    duration=seconds,
                    cpus=cfg.load_cpus,
                    headers=headers,
                    log=wrk_log,
                    env=users if name == "electric-proxy-cache" else None,
                )

            load(cfg.warmup)
            if proc is None:
                reset_peak_rss(tree)  # the long-lived upstream: this run's peak only
            result = load(duration)
            result.peak_rss_mb = peak_rss_mb(proc.tree() if proc else tree)
            if name == "electric-proxy-cache":
                cache_counts[key].append(shape_cache_counts(target.url))
        finally:
            if proc is not None:
                procs.stop(proc)
        results[name][key].append(result)
        busy = " ".join(f"{c} {v:.0f}%" for c, v in sorted(result.cpu_busy.items()))
        say(
            f"  {name:15} {SIZE_LABEL[key]:>5}: {result.rps:8.0f} req/s "
            f"{result.mb_per_s:7.1f} MB/s p50 {result.p50_ms:7.2f} ms "
            f"p99 {result.p99_ms:8.2f} ms rss {result.peak_rss_mb:6.1f} MB "
            f"errors {result.errors + result.non_2xx} [busy {busy}]"
        )

    for rnd in range(cfg.rounds):
        order = list(cfg.targets) if rnd % 2 == 0 else list(reversed(cfg.targets))
        say(f"round {rnd + 1}/{cfg.rounds}: {' -> '.join(order)}")
        for name in order:
            for key in SIZES:
                measure(name, key, cfg.duration)
    say(f"memory against body size: {SIZE_LABEL[BIG]} bodies, once per target")
    for name in cfg.targets:
        measure(name, BIG, min(cfg.duration, 4.0))
    procs.stop(upstream)
    return {
        "bodies": {key: len(body) for key, body in bodies.items()},
        "results": results,
        "cache_counts": cache_counts,
        "pinned": pinned,
        "checks": checks,
    }


def shape_cache_counts(shape_url: str) -> dict[str, float]:
    """The shape cache's counters from the proxy's /metrics (every run, warm-up and check
    included): each miss is one request to the upstream."""
    metrics_url = shape_url.removesuffix("/v1/shape") + "/metrics"
    with urllib.request.urlopen(metrics_url, timeout=30) as resp:
        text = resp.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("hits", "misses", "evictions"):
            if line.startswith(f"electric_proxy_shape_cache_{name}_total{{"):
                counts[name] = float(line.rsplit(" ", 1)[1])
    return counts


def ep_argv(port: int, upstream_url: str, backlog: int, *extra: str) -> list[str]:
    script = str(SERVERS / "electric_proxy_server.py")
    return [
        *(sys.executable, script, "--port", str(port), "--upstream", upstream_url),
        *("--token", TOKEN, "--secret", SECRET, "--backlog", str(backlog), *extra),
    ]


# --------------------------------------------------------------------------- long-polls


def http_json(method: str, url: str) -> Any:
    data = b"" if method == "POST" else None
    request = urllib.request.Request(url, method=method, data=data)
    with urllib.request.urlopen(request, timeout=30) as resp:
        body = resp.read()
    try:
        return json.loads(body)
    except ValueError:
        return body.decode()


def run_client(
    cfg: Settings, procs: Processes, argv: list[str], proxy: Proc | None, name: str
) -> tuple[dict[str, Any], float, int]:
    """Run the long-poll client (pinned to the load CPUs); return its JSON, the proxy's peak
    RSS and the most fds the proxy held (sampled every 0.2 s)."""
    client = [sys.executable, str(HERE / "longpoll_client.py"), *argv]
    proc = procs.start(name, client, cfg.load_cpus)
    peak_fds = 0
    while proc.popen.poll() is None:
        if proxy is not None:
            peak_fds = max(peak_fds, open_fds(proxy.pid))
        time.sleep(0.2)
    procs.stop(proc)
    rss = peak_rss_mb(proxy.tree()) if proxy is not None else 0.0
    out = proc.log.read_text().strip().splitlines()
    if proc.popen.returncode != 0 or not out:
        raise RuntimeError(f"{name} failed:\n{proc.log_tail()}")
    return json.loads(out[-1]), rss, peak_fds


def delay_summary(delays: list[float], clients: int) -> dict[str, Any]:
    """Send-to-upstream delays; requests that never arrived count as infinitely late."""
    padded = sorted(delays) + [float("inf")] * max(0, clients - len(delays))

    def at(q: float) -> float:
        return padded[min(len(padded) - 1, int(q * len(padded)))]

    return {"reached": len(delays), "p50_s": at(0.5), "p99_s": at(0.99)}


def longpolls(cfg: Settings, procs: Processes) -> dict[str, Any]:
    """A burst direct, through electric-proxy and through a naive proxy; then coalescing."""
    up_port = free_port()
    up_argv = [sys.executable, str(SERVERS / "longpoll_upstream.py"), "--port", str(up_port)]
    upstream = procs.start(
        "longpoll-upstream", [*up_argv, "--hold", str(cfg.lp_hold)], cfg.load_cpus, port=up_port
    )
    control = f"http://{HOST}:{up_port}/_bench"
    upstream_url = f"http://{HOST}:{up_port}/v1/shape"
    pinned = {"longpoll-upstream": affinity(upstream.pid), "longpoll-client": cfg.load_cpus}
    out: dict[str, Any] = {"pinned": pinned, "burst": {}, "coalesce": {}}

    def burst(name: str, url: str, clients: int, proxy: Proc | None) -> None:
        http_json("POST", f"{control}/reset?hold={cfg.lp_hold}")
        argv = ["burst", "--url", url, "--token", TOKEN, "--clients", str(clients)]
        argv += ["--timeout", str(cfg.lp_timeout)]
        result, rss, fds = run_client(cfg, procs, argv, proxy, f"client-{name}")
        stats = http_json("GET", f"{control}/stats")
        summary = {
            "clients": clients,
            "ok": result["ok"],
            "timeouts": result["timeouts"],
            "errors": result["errors"],
            "statuses": result["statuses"],
            "response_s": result["response_s"],
            "wall_s": result["wall_s"],
            "delay": delay_summary(stats["delays"], clients),
            "upstream_peak_held": stats["peak_held"],
            "proxy_peak_rss_mb": rss if proxy else None,
            "proxy_peak_fds": fds if proxy else None,
        }
        out["burst"][name] = summary
        d = summary["delay"]
        say(
            f"  {name:26} {clients:5} long-polls: ok {summary['ok']}, timed out "
            f"{summary['timeouts']}, errors {sum(summary['errors'].values())}, reached "
            f"upstream {d['reached']}, send->upstream p50 {fmt_s(d['p50_s'])} "
            f"p99 {fmt_s(d['p99_s'])}, rss {fmt_mb(summary['proxy_peak_rss_mb'])}, "
            f"fds {summary['proxy_peak_fds']}"
        )

    if cfg.bursts:
        say(
            f"long-poll burst (upstream holds {cfg.lp_hold:g} s; client timeout "
            f"{cfg.lp_timeout:g} s)"
        )
        burst("direct", upstream_url, cfg.lp_clients, None)
        port = free_port()
        argv = ep_argv(port, upstream_url, cfg.backlog)
        with procs.running("electric-proxy-lp", argv, cfg.proxy_cpus, port=port) as proxy:
            pinned["electric-proxy (long-polls)"] = affinity(proxy.pid)
            burst("electric-proxy", f"http://{HOST}:{port}/v1/shape", cfg.lp_clients, proxy)
        for name, clients, extra in (
            (FLOOR, cfg.lp_clients, ("--limit", "10000")),
            (NAIVE, cfg.lp_naive_clients, ()),
        ):
            port = free_port()
            naive = [sys.executable, str(SERVERS / "aiohttp_proxy.py"), "--port", str(port)]
            naive += [*extra, "--upstream", upstream_url, "--backlog", str(cfg.backlog)]
            with procs.running("aiohttp-lp", naive, cfg.proxy_cpus, port=port) as proxy:
                pinned[name] = affinity(proxy.pid)
                burst(name, f"http://{HOST}:{port}/v1/shape", clients, proxy)

    say(f"coalescing: identical waiting clients, {cfg.co_changes} changes")
    variants = (
        (COALESCE_ON, cfg.co_clients, (), ()),
        ("coalesce_live=False", cfg.co_clients, ("--no-coalesce",), ()),
        # The README's browser chain: a fresh X-Request-ID per request, a traceparent each.
        (REQUEST_ID_ON, cfg.rid_clients, ("--request-id",), ("--traceparent",)),
    )
    for label, clients, extra, client_extra in variants:
        http_json("POST", f"{control}/reset?hold=30")
        port = free_port()
        argv = ep_argv(port, upstream_url, cfg.backlog, *extra)
        with procs.running("electric-proxy-co", argv, cfg.proxy_cpus, port=port) as proxy:
            client = ["coalesce", "--url", f"http://{HOST}:{port}/v1/shape", "--token", TOKEN]
            client += ["--clients", str(clients), "--changes", str(cfg.co_changes)]
            client += ["--control", control, "--timeout", "40", *client_extra]
            result, rss, _ = run_client(cfg, procs, client, proxy, "client-coalesce")
        result["proxy_peak_rss_mb"] = rss
        out["coalesce"][label] = result
        say(
            f"  {label:20} upstream requests {result['upstream_requests']} for "
            f"{result['changes']} changes ({result['upstream_requests_per_change']:g}/change), "
            f"clients got the change {result['clients_with_data']}/"
            f"{clients * cfg.co_changes}, change->all answered median "
            f"{fmt_s(result['fanout_s_median'])}, rss {fmt_mb(rss)}"
        )
    procs.stop(upstream)
    return out


NAIVE = "naive aiohttp (limit 100)"
FLOOR = "minimal aiohttp (limit 10,000)"
COALESCE_ON = "coalesce_live=True"
REQUEST_ID_ON = "coalesce_live=True, request_id step + traceparent"


# --------------------------------------------------------------------------- report


def fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return "never"
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def fmt_mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} MB"


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(rows: list[list[str]], header: list[str]) -> str:
    """A Markdown table, readable as printed and pasteable into the README as is."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def spread(values: Sequence[float]) -> str:
    if len(values) < 2:
        return ""
    return f" ({min(values):,.0f} - {max(values):,.0f})"


def report_throughput(cfg: Settings, data: dict[str, Any]) -> tuple[str, dict[str, float]]:
    results: dict[str, dict[str, list[WrkResult]]] = data["results"]
    parts: list[str] = []
    medians: dict[str, float] = {}
    load_cpu = "cpu" + cfg.load_cpus.split(",")[0]
    proxy_cpu = "cpu" + cfg.proxy_cpus.split(",")[0]
    for key in BODY_BYTES:
        for name in cfg.targets:
            runs = results[name][key]
            if runs:
                medians[f"{name}/{key}/rps"] = med([r.rps for r in runs])
                medians[f"{name}/{key}/rss"] = med([r.peak_rss_mb for r in runs])
    for key in SIZES:
        rows = []
        direct = medians[f"direct/{key}/rps"]
        for name in cfg.targets:
            runs = results[name][key]
            rps = [r.rps for r in runs]
            rows.append(
                [
                    LABEL[name],
                    f"{med(rps):,.0f}{spread(rps)}",
                    f"{med([r.mb_per_s for r in runs]):,.1f}",
                    f"{med([r.p50_ms for r in runs]):.2f}",
                    f"{med([r.p99_ms for r in runs]):.2f}",
                    f"{med([r.peak_rss_mb for r in runs]):.1f}",
                    f"{med(rps) / direct:.2f}x",
                    f"{med([r.cpu_busy.get(load_cpu, 0) for r in runs]):.0f}% / "
                    f"{med([r.cpu_busy.get(proxy_cpu, 0) for r in runs]):.0f}%",
                    str(sum(r.errors + r.non_2xx for r in runs)),
                ]
            )
        header = ["target", "req/s median (min - max)", "MB/s", "p50 ms", "p99 ms"]
        header += ["peak RSS MB", "vs direct", "CPU busy load/proxy", "errors"]
        parts.append(
            f"### {SIZE_LABEL[key]} body ({data['bodies'][key]:,} bytes), "
            f"{cfg.connections} connections, {len(results['direct'][key])} round(s)\n\n"
            + table(rows, header)
        )
    for key in SIZES:
        rows = []
        for row in cfg.targets:
            cells = [LABEL[row]]
            for col in cfg.targets:
                a, b = medians[f"{row}/{key}/rps"], medians[f"{col}/{key}/rps"]
                cells.append(f"{a / b:.2f}x")
            rows.append(cells)
        parts.append(
            f"req/s ratios, {SIZE_LABEL[key]} (row / column, medians)\n\n"
            + table(rows, ["", *cfg.targets])
        )
    rows = []
    for name in cfg.targets:
        cells = [LABEL[name]]
        cells += [f"{medians.get(f'{name}/{key}/rss', float('nan')):.1f}" for key in BODY_BYTES]
        big = results[name][BIG]
        cells.append(f"{big[0].mb_per_s:,.0f}" if big else "-")
        rows.append(cells)
    header = ["peak RSS (MB) by body size", *(SIZE_LABEL[k] for k in BODY_BYTES)]
    parts.append(
        "### Memory against body size (VmHWM of a fresh process per body size; "
        f"{SIZE_LABEL[BIG]} measured once)\n\n"
        + table(rows, [*header, f"MB/s at {SIZE_LABEL[BIG]}"])
    )
    counts: dict[str, list[dict[str, float]]] = data["cache_counts"]
    if any(counts.values()):
        rows = []
        for key in BODY_BYTES:
            runs = counts[key]
            if not runs:
                continue
            cached = medians.get(f"electric-proxy-cache/{key}/rps", float("nan"))
            plain = medians.get(f"electric-proxy/{key}/rps", float("nan"))
            rows.append(
                [
                    SIZE_LABEL[key],
                    f"{med([r.get('hits', 0) for r in runs]):,.0f}",
                    f"{med([r.get('misses', 0) for r in runs]):,.0f}",
                    f"{cached:,.0f}",
                    f"{plain:,.0f}",
                    f"{cached / plain:.2f}x",
                ]
            )
        header = ["body", "hits (median run)", "upstream requests for the shape (misses)"]
        header += ["req/s with the cache", "req/s without", "ratio"]
        parts.append(
            f"### Shape cache: {CACHE_USERS} users of one organisation on one shape "
            "(each measurement is one shape in a fresh process; counts include the check "
            "request and the warm-up)\n\n" + table(rows, header)
        )
    return "\n\n".join(parts), medians


def report_longpoll(cfg: Settings, data: dict[str, Any]) -> str:
    rows = []
    for name, s in data["burst"].items():
        d = s["delay"]
        rows.append(
            [
                name,
                f"{s['ok']:,}/{s['clients']:,}",
                f"{s['timeouts']:,}",
                f"{sum(s['errors'].values()):,}",
                f"{d['reached']:,}",
                fmt_s(d["p50_s"]),
                fmt_s(d["p99_s"]),
                fmt_s(s["response_s"]["p50"]),
                fmt_s(s["response_s"]["max"]),
                fmt_mb(s["proxy_peak_rss_mb"]),
                "-" if s["proxy_peak_fds"] is None else f"{s['proxy_peak_fds']:,}",
                f"{s['upstream_peak_held']:,}",
            ]
        )
    header = ["path", "completed", "timed out", "errors", "reached upstream"]
    header += ["send->upstream p50", "p99", "response p50", "response max"]
    header += ["proxy peak RSS", "proxy peak fds", "upstream peak held"]
    burst = table(rows, header) if rows else "(not run)"
    rows = []
    for label, s in data["coalesce"].items():
        rows.append(
            [
                label,
                f"{s['clients']:,}",
                str(s["changes"]),
                f"{s['upstream_requests']:,}",
                f"{s['upstream_requests_per_change']:g}",
                f"{s['clients_with_data']:,}/{s['clients'] * cfg.co_changes:,}",
                fmt_s(s["fanout_s_median"]),
                fmt_mb(s["proxy_peak_rss_mb"]),
            ]
        )
    header = ["electric-proxy", "waiting clients", "changes", "upstream requests"]
    header += ["per change", "clients got the change", "change->all answered (median)"]
    coalesce = table(rows, [*header, "proxy peak RSS"])
    return (
        f"### Live long-polls (upstream holds each {cfg.lp_hold:g} s; a client gives up after "
        f"{cfg.lp_timeout:g} s)\n\n{burst}\n\n"
        "### Live-request coalescing (identical clients, one token)\n\n"
        f"{coalesce}"
    )


def verdict(ok: bool, text: str) -> str:
    return f"[{'met' if ok else 'MISSED'}] {text}"


def ratio_verdict(what: str, ratio: float, target: float) -> str:
    short = "" if ratio >= target else f"; short by {(1 - ratio / target) * 100:.0f}%"
    return verdict(ratio >= target, f"{what}: {ratio:.2f}x (target >= {target:g}x{short})")


def limit_verdict(what: str, ratio: float, limit: float) -> str:
    over = "" if ratio <= limit else f"; over by {(ratio / limit - 1) * 100:.0f}%"
    return verdict(ratio <= limit, f"{what}: {ratio:.2f}x (target <= {limit:g}x{over})")


def report_targets(cfg: Settings, m: dict[str, float], lp: dict[str, Any] | None) -> str:
    lines = []
    if "node/1kb/rps" in m:
        ep1k, ep1m = m["electric-proxy/1kb/rps"], m["electric-proxy/1mb/rps"]
        lines.append(
            ratio_verdict(
                "1 KB req/s, electric-proxy / Node fetch proxy", ep1k / m["node/1kb/rps"], 2.5
            )
        )
        lines.append(
            ratio_verdict(
                "1 KB req/s, electric-proxy / minimal aiohttp", ep1k / m["aiohttp/1kb/rps"], 1.0
            )
        )
        lines.append(
            "[shown] 1 KB req/s, electric-proxy / minimal aiohttp on uvloop (the same event "
            f"loop as electric-proxy): {ep1k / m['aiohttp-uvloop/1kb/rps']:.2f}x"
        )
        lines.append(
            ratio_verdict(
                "1 MB throughput, electric-proxy / minimal aiohttp",
                ep1m / m["aiohttp/1mb/rps"],
                1.1,
            )
        )
        rss = [m.get(f"electric-proxy/{k}/rss", float("nan")) for k in BODY_BYTES]
        # Memory is flat in body size when ten times the body costs (almost) nothing more:
        # buffering bodies would add connections x 9 MB; socket and chunk buffers are bounded.
        flat = rss[2] <= rss[1] * 1.10
        lines.append(
            verdict(
                flat,
                f"electric-proxy peak RSS {rss[0]:.0f} / {rss[1]:.0f} / {rss[2]:.0f} MB at "
                f"1 KB / 1 MB / 10 MB bodies (flat = 10 MB within +10% of 1 MB; buffering "
                f"{cfg.connections} bodies would add {cfg.connections * 9} MB)",
            )
        )
    if lp:
        s = lp["burst"].get("electric-proxy")
        base = lp["burst"].get("direct")
        if s:
            n = s["clients"]
            lines.append(
                verdict(
                    s["ok"] == n,
                    f"{n:,} concurrent long-polls through one electric-proxy "
                    f"process: {s['ok']:,} completed",
                )
            )
            rss = s["proxy_peak_rss_mb"]
            floor = lp["burst"].get(FLOOR)
            if floor:
                lines.append(
                    limit_verdict(
                        f"  proxy peak RSS {rss:.0f} MB / the minimal pass-through's "
                        f"{floor['proxy_peak_rss_mb']:.0f} MB",
                        rss / floor["proxy_peak_rss_mb"],
                        1.1,
                    )
                )
            p50 = s["delay"]["p50_s"]
            added = p50 - (base["delay"]["p50_s"] if base else 0.0)
            lines.append(
                verdict(
                    added < 1.0,
                    f"  median added delay {fmt_s(added)} (send->upstream {fmt_s(p50)} through "
                    f"the proxy - {fmt_s(base['delay']['p50_s']) if base else '?'} direct; "
                    "target < 1 s)",
                )
            )
        s = lp["burst"].get(FLOOR)
        if s:
            lines.append(
                f"[shown] the floor: a minimal aiohttp pass-through with a 10,000-connection pool "
                f"holds {s['ok']:,}/{s['clients']:,} long-polls at "
                f"{fmt_mb(s['proxy_peak_rss_mb'])} peak RSS; median send->upstream "
                f"{fmt_s(s['delay']['p50_s'])}"
            )
        s = lp["burst"].get(NAIVE)
        if s:
            late = s["clients"] - s["ok"]
            lines.append(
                f"[shown] naive aiohttp proxy, {s['clients']:,} long-polls: {late:,} "
                f"({late / s['clients']:.0%}) timed out or failed; median send->upstream "
                f"{fmt_s(s['delay']['p50_s'])}"
            )
        s = lp["coalesce"].get(REQUEST_ID_ON)
        if s:
            per = s["upstream_requests_per_change"]
            lines.append(
                verdict(
                    per <= 1.0,
                    f"coalescing with the request_id step and a traceparent per client: "
                    f"{s['clients']:,} identical waits cost the upstream {per:g} request(s) "
                    "per change",
                )
            )
        s = lp["coalesce"].get(COALESCE_ON)
        if s:
            per = s["upstream_requests_per_change"]
            lines.append(
                verdict(
                    per <= 1.0 and s["clients_with_data"] == s["clients"] * s["changes"],
                    f"coalescing: {s['clients']:,} identical waiting clients cost the upstream "
                    f"{per:g} request(s) per change; {s['clients_with_data']:,} of "
                    f"{s['clients'] * s['changes']:,} answers carried the change",
                )
            )
    if "electric-proxy-cache/1kb/rps" in m and "aiohttp/1kb/rps" in m:
        hits, passing = m["electric-proxy-cache/1kb/rps"], m["aiohttp/1kb/rps"]
        lines.append(
            ratio_verdict(
                "1 KB shape cache hits, electric-proxy / minimal aiohttp", hits / passing, 3.0
            )
        )
        if "aiohttp-memory/1kb/rps" in m:
            ceiling = m["aiohttp-memory/1kb/rps"]
            lines.append(
                f"[shown] the ceiling: aiohttp answering 1 KB from memory serves "
                f"{ceiling / passing:.2f}x the minimal pass-through; cache hits reach "
                f"{hits / ceiling:.0%} of it"
            )
    if "electric-proxy-cache/1kb/rps" in m:
        lines.append(
            "[shown] shape cache, 1 KB, "
            f"{CACHE_USERS} users of one organisation: "
            f"{m['electric-proxy-cache/1kb/rps'] / m['electric-proxy/1kb/rps']:.2f}x the req/s "
            "of the same chain without it"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    require_tools()
    os.sched_setaffinity(0, {int(c) for c in cfg.load_cpus.split(",")})
    began = time.monotonic()
    when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    info = versions()
    say(f"electric-proxy benchmark, {when}")
    say(", ".join(f"{k} {v}" for k, v in info.items()))
    say(
        f"rounds {cfg.rounds}, {cfg.duration:g} s per run after {cfg.warmup:g} s warm-up, "
        f"{cfg.connections} connections, listen backlog {cfg.backlog}; pinned: proxy under test "
        f"on CPU {cfg.proxy_cpus}; wrk, upstreams, long-poll client and this script on CPU "
        f"{cfg.load_cpus}"
    )
    raw: dict[str, Any] = {"when": when, "versions": info, "settings": cfg.__dict__}
    with tempfile.TemporaryDirectory(prefix="ep-bench-") as tmp:
        procs = Processes(Path(tmp))
        try:
            tp = throughput(cfg, procs, Path(tmp)) if cfg.throughput else None
            lp = longpolls(cfg, procs) if cfg.longpoll else None
        except BaseException as exc:
            say(f"\nfailed: {exc!r}")
            for log in sorted(Path(tmp).glob("*.log")):
                say(f"--- {log.name} (last lines)")
                say("\n".join(log.read_text(errors="replace").splitlines()[-15:]))
            raise
        finally:
            procs.stop_all()
    say()
    say(f"## Results ({when}, {time.monotonic() - began:.0f} s)")
    say()
    pinning = {**(tp["pinned"] if tp else {}), **(lp["pinned"] if lp else {})}
    say(
        "Pinning (CPU affinity read back from each process): "
        + ", ".join(f"{name} -> CPU {cpus}" for name, cpus in pinning.items())
    )
    say()
    medians: dict[str, float] = {}
    if tp:
        text, medians = report_throughput(cfg, tp)
        say(text)
        say()
        raw["throughput"] = {
            "bodies": tp["bodies"],
            "checks": tp["checks"],
            "results": {
                n: {k: [r.as_dict() for r in runs] for k, runs in sizes.items()}
                for n, sizes in tp["results"].items()
            },
        }
    if lp:
        say(report_longpoll(cfg, lp))
        say()
        raw["longpoll"] = lp
    say("### Targets")
    say()
    say(report_targets(cfg, medians, lp))
    if cfg.json_path is not None:
        cfg.json_path.write_text(json.dumps(raw, indent=2, default=str).replace("Infinity", "null"))
        say(f"\nraw numbers: {cfg.json_path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
