"""Load a proxy from TOML: secrets by indirection, every error with its option path.

    [server]
    host = "127.0.0.1"
    port = 8080

    [upstream]
    url = "http://localhost:3000/v1/shape"

    [[chain]]
    use = "credentials"
    secret = { "$env" = "ELECTRIC_SECRET" }

    [metrics]             # optional: Prometheus metrics (the `metrics` extra)
    port = 9464

    [health]              # optional: /healthz and /readyz are on by default
    readyz = "/readyz"

    [admin]               # optional: POST /admin/interrupt (live revocation), loopback
    port = 9465

    [revocation]          # optional: interrupts shared by replicas (the `revocation` extra)
    redis_url = { "$env" = "REVOCATION_REDIS_URL" }

    [audit]               # optional: one JSON record per decision (off by default)
    enabled = true

Any value may be ``{ "$env" = "NAME" }`` or ``{ "$file" = "path" }`` so secrets never sit
in the file. Steps are built in the order of ``[[chain]]`` entries, which is the order they
run in. Secret options are ``SecretStr`` and print masked wherever config is shown.
"""

from __future__ import annotations

import os
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .access_log import AccessLogMode, access_log_options
from .audit import AuditSettings
from .caching import CacheMode
from .chain import Step
from .config_env import apply_environment, type_indirect_values
from .config_errors import did_you_mean, validation_problems
from .errors import ElectricProxyError
from .forward import UpstreamSettings
from .health import HealthSettings, path_conflict
from .log_setup import LogFormat
from .metrics import MetricsSettings, metrics_available
from .registry import RegistryError, build_step, load_step_class
from .revocation import AdminSettings, RevocationSettings, redis_available
from .runtime import EventLoopChoice, uvloop_available
from .shape_cache import DEFAULT_SHAPE_CACHE_BYTES
from .tls import tls_problem

if TYPE_CHECKING:
    from aiohttp import web

    from .shapes import ShapeProxy
    from .streams import StreamProxy

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "ConfigError",
    "ProxyConfig",
    "ServerSettings",
    "StreamsConfig",
    "load_config",
    "parse_config",
]


class ConfigError(ElectricProxyError):
    """Why a config cannot be used: one line per problem, each naming where it is."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


#: What a route's path may hold: RFC 3986 path characters a client sends as they are. The
#: shape route matches the raw bytes of the request, so a character a client must
#: percent-encode (a space, a non-ASCII letter) or a ``%`` escape would make a route nobody
#: can reach; ``{`` and ``}`` are aiohttp route variables, ``?`` and ``#`` end a path.
_PATH_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/")


def _route_path_problem(path: str, example: str) -> str | None:
    """Why ``path`` cannot be an endpoint's route, or ``None``; ``example`` shows a good one.

    The endpoints refuse some of these when built; checking here lets ``check-config``
    report each with its option path instead of ``serve`` failing on it.
    """
    expected = f"expected a path like {example}"
    if not path.startswith("/"):
        return f"{expected}, starting with '/'"
    if path.endswith("/"):
        return f"{expected}, not ending with '/'"
    if any(c in path for c in "?#"):
        return f"{expected}: a route has no query or fragment ('?', '#')"
    if any(c in path for c in "{}"):
        return f"{expected}: '{{' and '}}' are not allowed (aiohttp reads them as variables)"
    if not set(path) <= _PATH_CHARACTERS:
        return (
            f"{expected}: only letters, digits and -._~!$&'()*+,;=:@ (no spaces, no '%' "
            "escapes: a client sends those encoded and the route would never match)"
        )
    if any(segment in ("", ".", "..") for segment in path[1:].split("/")):
        return f"{expected}: no empty, '.' or '..' segments"
    return None


class ServerSettings(BaseModel):
    """The ``[server]`` section: the listener, the shape route and process tuning."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    path: str = Field("/v1/shape", description="The shape route: exactly this path is served")

    @field_validator("path")
    @classmethod
    def _route_path(cls, value: str) -> str:
        # The root is a route like any other for shapes (a host of its own); not for streams,
        # whose route is ``path + "/{stream}"``.
        problem = None if value == "/" else _route_path_problem(value, "/v1/shape")
        if problem is not None:
            raise ValueError(problem)
        return value

    shutdown_timeout: float = Field(
        10.0,
        ge=0,
        description="Seconds in-flight requests get to finish on SIGTERM (held live ones end "
        "at once)",
    )
    drain_delay: float = Field(
        0.0,
        ge=0,
        le=300,
        description="Seconds between SIGTERM and closing the listener, while /readyz already "
        "answers 503 (the time a load balancer needs to stop sending new requests)",
    )
    coalesce_live: bool = Field(True, description="One upstream request per identical long-poll")
    shape_cache_bytes: int = Field(
        DEFAULT_SHAPE_CACHE_BYTES,
        ge=0,
        description="Bytes of Electric's answers kept for users whose built upstream requests "
        "are identical (same tenant, same shape); 0 turns the shape cache off",
    )
    cache: CacheMode = Field(
        "vary",
        description="How responses that depend on the user are marked for shared caches: "
        "'vary' on the headers the authenticators name, or 'private' for caches that ignore Vary",
    )
    backlog: int = Field(
        4096, ge=1, description="Pending connections the kernel queues (a reconnect burst)"
    )
    event_loop: EventLoopChoice = Field(
        "asyncio", description="'uvloop' needs the speed extra; see the README for the trade-off"
    )
    tune_gc: bool = Field(True, description="Fewer garbage collections while many requests wait")
    tune_malloc: bool = Field(
        True, description="glibc keeps streamed bodies' buffers in its heap (fewer page faults)"
    )

    @field_validator("event_loop")
    @classmethod
    def _uvloop_installed(cls, value: EventLoopChoice) -> EventLoopChoice:
        if value == "uvloop" and not uvloop_available():
            raise ValueError("uvloop is not installed: pip install 'electric-proxy[speed]'")
        return value

    access_log: AccessLogMode = Field(
        "text",
        description="One line per request: text, json or off (queries redacted); its form "
        "follows log_format, and 'json' alone also makes log_format 'json'",
    )
    log_format: LogFormat = Field(
        "text",
        description="Every line the process writes: text, or one JSON object per line "
        "(the default is 'json' when access_log = 'json')",
    )
    tls_cert: str | None = Field(
        None, description="PEM certificate chain to serve HTTPS with (relative to the config)"
    )
    tls_key: str | None = Field(
        None, description="PEM private key of tls_cert, unencrypted; both reload on SIGHUP"
    )

    @model_validator(mode="before")
    @classmethod
    def _json_access_log_means_json_lines(cls, data: Any) -> Any:
        # A JSON access log is read by a pipeline that parses every line: a text line among
        # them would be a parse error, so asking for one asks for JSON everywhere.
        json_access = isinstance(data, Mapping) and data.get("access_log") == "json"
        if json_access and "log_format" not in data:
            return {**data, "log_format": "json"}
        return data

    @field_validator("tls_cert", "tls_key")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                with open(value, "rb"):
                    pass
            except OSError as exc:
                raise ValueError(f"cannot read {value}: {exc.strerror}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServerSettings:
        if self.log_format == "text" and self.access_log == "json":
            raise ValueError(
                "access_log = 'json' with log_format = 'text' would mix JSON and text lines "
                "on stderr; set log_format = 'json' (or leave it out)"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key for HTTPS, or neither")
        if self.tls_cert is not None and self.tls_key is not None:
            problem = tls_problem(self.tls_cert, self.tls_key)
            if problem is not None:
                raise ValueError(f"tls_cert and tls_key: {problem}")
        return self

    def run_app_options(self) -> dict[str, Any]:
        """What ``serve`` passes to ``web.run_app`` besides the address."""
        access: AccessLogMode = "off" if self.access_log == "off" else self.log_format
        return {
            "shutdown_timeout": self.shutdown_timeout,
            "handler_cancellation": True,
            **access_log_options(access),
        }


Steps = tuple[tuple[str, Step], ...]


def _describe_steps(steps: Steps) -> list[dict[str, Any]]:
    return [{"use": name, **step.model_dump(mode="json")} for name, step in steps]


@dataclass(frozen=True)
class StreamsConfig:
    """The ``[streams]`` section: Durable Streams under their own prefix, upstream and chain."""

    path: str
    upstream: UpstreamSettings
    steps: Steps

    def build(self, cache: CacheMode = "vary") -> StreamProxy:
        """The streams endpoint; see :func:`electric_proxy.server.build_streams`."""
        from .server import build_streams

        return build_streams(self, cache)


@dataclass(frozen=True)
class ProxyConfig:
    server: ServerSettings
    upstream: UpstreamSettings | None
    steps: Steps
    streams: StreamsConfig | None = None
    health: HealthSettings = field(default_factory=HealthSettings)
    metrics: MetricsSettings | None = None
    admin: AdminSettings | None = None
    revocation: RevocationSettings | None = None
    audit: AuditSettings = field(default_factory=AuditSettings)
    #: Where each setting given explicitly came from, by option path (``server.port``,
    #: ``chain[0].secret``): an ``ELECTRIC_PROXY_...`` variable, ``"$env NAME"``,
    #: ``"$file path"`` or ``"file"``; a setting not listed has its default.
    sources: Mapping[str, str] = field(default_factory=dict)

    def build(self) -> ShapeProxy:
        """The shape endpoint; see :func:`electric_proxy.server.build_shapes`."""
        from .server import build_shapes  # the assembly imports this module, not the reverse

        return build_shapes(self)

    def app(self, *, worker: int = 0) -> web.Application:
        """Every configured endpoint in one app; see :func:`electric_proxy.server.build_app`."""
        from .server import build_app

        return build_app(self, worker=worker)

    def describe(self) -> dict[str, Any]:
        """The effective config with secrets masked: safe to print or log."""
        shown: dict[str, Any] = {"server": self.server.model_dump(mode="json")}
        if self.upstream is not None:
            shown["upstream"] = self.upstream.model_dump(mode="json")
            shown["chain"] = _describe_steps(self.steps)
        if self.streams is not None:
            shown["streams"] = {
                "path": self.streams.path,
                "upstream": self.streams.upstream.model_dump(mode="json"),
                "chain": _describe_steps(self.streams.steps),
            }
        shown["health"] = self.health.model_dump(mode="json")
        if self.metrics is not None:
            shown["metrics"] = self.metrics.model_dump(mode="json")
        if self.admin is not None:
            shown["admin"] = self.admin.model_dump(mode="json")
        if self.revocation is not None:
            shown["revocation"] = self.revocation.model_dump(mode="json")
        shown["audit"] = self.audit.model_dump(mode="json")
        return shown


def _where(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _resolve(value: Any, path: tuple[str | int, ...], base: Path, problems: list[str]) -> Any:
    if isinstance(value, Mapping):
        if set(value) == {"$env"}:
            name = value["$env"]
            if not isinstance(name, str) or name not in os.environ:
                problems.append(f"{_where(path)}: environment variable {name!r} is not set")
                return None
            return os.environ[name]
        if set(value) == {"$file"}:
            file = base / str(value["$file"])
            try:
                return file.read_text().rstrip("\r\n")
            except OSError as exc:
                problems.append(f"{_where(path)}: cannot read {file}: {exc.strerror}")
                return None
        return {k: _resolve(v, (*path, k), base, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, (*path, i), base, problems) for i, v in enumerate(value)]
    return value


def _model(model: type[M], value: Any, where: str, problems: list[str]) -> M | None:
    """A plain settings section, strictly typed: TOML has real numbers and booleans, so
    ``port = "8080"`` is a mistake to report, not a string to coerce."""
    try:
        return model.model_validate(value if value is not None else {}, strict=True)
    except ValidationError as exc:
        problems += validation_problems(where, exc, model)
        return None


def _chain(entries: Any, where: str, problems: list[str]) -> Steps:
    if not isinstance(entries, list):
        problems.append(f"{where}: expected a list of [[{where}]] tables")
        return ()
    steps: list[tuple[str, Step]] = []
    for index, entry in enumerate(entries):
        at = f"{where}[{index}]"
        if any(p.startswith((f"{at}.", f"{at}:")) for p in problems):
            continue  # an unresolved $env/$file is already reported; its type error would repeat it
        if not isinstance(entry, Mapping) or not isinstance(entry.get("use"), str):
            problems.append(f'{at}: expected a table with `use = "<step name>"`')
            continue
        name = entry["use"]
        options = {k: v for k, v in entry.items() if k != "use"}
        try:
            steps.append((name, build_step(name, options)))
        except RegistryError as exc:
            problems.append(f"{at}: {exc}")
        except ValidationError as exc:
            problems += validation_problems(f"{at} ({name})", exc, load_step_class(name))
        except (TypeError, ValueError) as exc:
            problems.append(f"{at} ({name}): {exc}")
    return tuple(steps)


def _streams(data: Any, problems: list[str]) -> StreamsConfig | None:
    if not isinstance(data, Mapping):
        problems.append("streams: expected a table")
        return None
    unknown = sorted(set(data) - {"path", "upstream", "chain"})
    problems += [
        f"streams.{key}: unknown option {key!r}{did_you_mean(key, ['path', 'upstream', 'chain'])}"
        " (expected path, upstream, chain)"
        for key in unknown
    ]
    path = data.get("path", "/v1/stream")
    problem = (
        _route_path_problem(path, "/v1/stream")
        if isinstance(path, str)
        else "expected a path like /v1/stream"
    )
    if problem is not None:
        problems.append(f"streams.path: {problem}")
    upstream = _model(UpstreamSettings, data.get("upstream"), "streams.upstream", problems)
    steps = _chain(data.get("chain", []), "streams.chain", problems)
    if upstream is None or not isinstance(path, str):
        return None
    return StreamsConfig(path=path, upstream=upstream, steps=steps)


_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})


def listener_problems(
    server: ServerSettings | None,
    metrics: MetricsSettings | None,
    admin: AdminSettings | None,
    workers: int = 1,
) -> list[str]:
    """Two of ``serve``'s listeners on one address, where it would fail to bind the second.

    With ``--workers N`` the metrics and admin listeners take ``port`` to ``port + N - 1``.
    """
    listeners: list[tuple[str, str, range, str]] = []
    if server is not None and server.port:
        listeners.append(("server.port", server.host, range(server.port, server.port + 1), ""))
    if metrics is not None and metrics.listener and metrics.port:
        ports = range(metrics.port, metrics.port + workers)
        alternative = " (or `listener = false` and `main_path`)"
        listeners.append(("metrics.port", metrics.host, ports, alternative))
    if admin is not None and admin.port:
        listeners.append(("admin.port", admin.host, range(admin.port, admin.port + workers), ""))
    problems = []
    for index, (first, first_host, first_ports, _) in enumerate(listeners):
        for name, host, ports, alternative in listeners[index + 1 :]:
            hosts = {first_host, host}
            shared = sorted(set(first_ports) & set(ports))
            if shared and (len(hosts) == 1 or hosts & _ANY_ADDRESS):
                across = f" with {workers} workers" if workers > 1 else ""
                problems.append(
                    f"{name}: {shared[0]} is also {first}{across}; the {name.split('.')[0]} "
                    f"listener needs a port of its own{alternative}"
                )
    return problems


def _route_problems(
    server: ServerSettings | None,
    shapes: bool,
    streams: StreamsConfig | None,
    health: HealthSettings | None,
    metrics: MetricsSettings | None,
) -> list[str]:
    """Health and metrics paths must not shadow a proxied route, nor each other, nor the
    shape route a stream's."""
    shape_paths = [server.path] if server is not None and shapes else []
    stream_paths = [streams.path] if streams is not None else []
    problems = [
        f"server.path: {path} is under streams.path {streams.path}; choose another path"
        for path in shape_paths
        if streams is not None and path_conflict(path, [], stream_paths)
    ]
    taken: dict[str, str] = {}
    if health is not None and health.enabled:
        taken.update({health.healthz: "health.healthz", health.readyz: "health.readyz"})
    if metrics is not None and metrics.main_path is not None:
        if metrics.main_path in taken:
            return [
                *problems,
                f"metrics.main_path: {metrics.main_path} is {taken[metrics.main_path]}",
            ]
        taken[metrics.main_path] = "metrics.main_path"
    return problems + [
        f"{option}: {path} is a proxied route; choose another path"
        for path, option in taken.items()
        if path_conflict(path, shape_paths, stream_paths)
    ]


def _optional(
    model: type[M],
    data: Mapping[str, Any],
    section: str,
    problems: list[str],
    available: Callable[[], bool],
    package: str,
) -> M | None:
    """A section that needs an extra: validated when present, and a problem without it."""
    if section not in data:
        return None
    settings = _model(model, data[section], section, problems)
    if not available():
        problems.append(
            f"{section}: needs {package} package: pip install 'electric-proxy[{section}]'"
        )
    return settings


#: The sections whose plain settings ``ELECTRIC_PROXY_<SECTION>_<NAME>`` may set, and which
#: (None: every plain setting). See :mod:`electric_proxy.config_env`.
ENVIRONMENT_SETTINGS: dict[str, tuple[type[BaseModel], tuple[str, ...] | None]] = {
    "server": (ServerSettings, None),
    "upstream": (UpstreamSettings, ("url",)),
    "metrics": (MetricsSettings, ("host", "port")),
}


#: The plain sections, validated strictly (their ``$env``/``$file`` values typed first).
_SECTIONS: dict[str, type[BaseModel]] = {
    "server": ServerSettings,
    "upstream": UpstreamSettings,
    "health": HealthSettings,
    "metrics": MetricsSettings,
    "admin": AdminSettings,
    "revocation": RevocationSettings,
    "audit": AuditSettings,
    "streams.upstream": UpstreamSettings,
}


def _origin(value: Any) -> str:
    if isinstance(value, Mapping) and set(value) == {"$env"}:
        return f"$env {value['$env']}"
    if isinstance(value, Mapping) and set(value) == {"$file"}:
        return f"$file {value['$file']}"
    return "file"


def _file_sources(raw: Mapping[str, Any]) -> dict[str, str]:
    """Which options the file sets, and how (``$env``/``$file`` or written out)."""
    found: dict[str, str] = {}

    def table(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            found.update({f"{prefix}.{key}": _origin(v) for key, v in value.items()})

    def chain(prefix: str, entries: Any) -> None:
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            table(f"{prefix}[{index}]", entry)

    for section in ("server", "upstream", "health", "metrics", "admin", "revocation", "audit"):
        table(section, raw.get(section))
    chain("chain", raw.get("chain"))
    streams = raw.get("streams")
    if isinstance(streams, Mapping):
        table("streams", {k: v for k, v in streams.items() if k not in ("upstream", "chain")})
        table("streams.upstream", streams.get("upstream"))
        chain("streams.chain", streams.get("chain"))
    return found


def _tls_paths(server: Any, base: Path) -> Any:
    """``tls_cert`` and ``tls_key`` relative to the config file, as ``$file`` paths are."""
    if not isinstance(server, Mapping):
        return server
    return {
        key: str(base / value)
        if key in ("tls_cert", "tls_key") and isinstance(value, str)
        else value
        for key, value in server.items()
    }


def parse_config(
    raw: Mapping[str, Any], *, base: Path = Path(), environ: Mapping[str, str] | None = None
) -> ProxyConfig:
    """A checked config from TOML data; every problem at once in a :class:`ConfigError`.

    ``environ`` (``os.environ`` for a deployment) supplies ``ELECTRIC_PROXY_<SECTION>_<NAME>``
    settings, which win over the file's; None reads no environment (``$env`` values aside).
    """
    problems: list[str] = []
    data = type_indirect_values(raw, _resolve(raw, (), base, problems), _SECTIONS, problems)
    sources = _file_sources(raw)
    if environ is not None:
        data, from_environment = apply_environment(data, environ, ENVIRONMENT_SETTINGS, problems)
        sources.update(from_environment)
    sections = {
        "server",
        "upstream",
        "chain",
        "streams",
        "health",
        "metrics",
        "admin",
        "revocation",
        "audit",
    }
    problems += [
        f"{key}: unknown section{did_you_mean(key, sorted(sections))} "
        f"(expected {', '.join(sorted(sections))})"
        for key in sorted(set(data) - sections)
    ]
    server = _model(ServerSettings, _tls_paths(data.get("server"), base), "server", problems)
    health = _model(HealthSettings, data.get("health"), "health", problems)
    metrics = _optional(
        MetricsSettings, data, "metrics", problems, metrics_available, "the prometheus-client"
    )
    admin = _model(AdminSettings, data["admin"], "admin", problems) if "admin" in data else None
    revocation = _optional(
        RevocationSettings, data, "revocation", problems, redis_available, "the redis"
    )
    audit = _model(AuditSettings, data.get("audit"), "audit", problems)
    upstream = None
    steps: Steps = ()
    if "upstream" in data or "chain" in data or "streams" not in data:
        upstream = _model(UpstreamSettings, data.get("upstream"), "upstream", problems)
        steps = _chain(data.get("chain", []), "chain", problems)
    streams = _streams(data["streams"], problems) if "streams" in data else None
    problems += _route_problems(server, upstream is not None, streams, health, metrics)
    problems += listener_problems(server, metrics, admin)
    if problems or server is None or health is None or audit is None:
        raise ConfigError(problems)
    return ProxyConfig(
        server=server,
        upstream=upstream,
        steps=steps,
        streams=streams,
        health=health,
        metrics=metrics,
        admin=admin,
        revocation=revocation,
        audit=audit,
        sources=sources,
    )


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> ProxyConfig:
    """The config file at ``path`` with the environment's overrides (``os.environ`` unless
    ``environ`` is given); see :func:`parse_config`."""
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text())
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: not valid TOML: {exc}"]) from None
    return parse_config(raw, base=file.parent, environ=os.environ if environ is None else environ)
