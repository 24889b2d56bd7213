"""Electric Streams (the Durable Streams protocol) through the same chain and forwarder.

Public ``{path}/{stream path}`` maps to ``{upstream url}/{stream path}``; on Electric Cloud the
upstream URL carries the service prefix (``.../v1/stream/<service-id>``), which is added on
the way in and taken out of ``Location`` and ``Stream-Forked-From`` on the way back.

What the protocol forces (streams-and-cloud notes §1.12): bodies stream both ways (chunked
appends, SSE); no redirect is followed; no ``Content-Type`` is invented.

The target is parsed once, before any step: the raw path is decoded and split into
segments, and those segments are what the policy decides on and what the forwarder encodes
and sends. A path that cannot be represented as segments without ambiguity is refused
with a 400: empty, ``.`` or ``..`` segments; a ``#`` (a fragment, which URL libraries drop on
the way out); a decoded ``/``, ``?``, ``#`` or ``\\``; control characters; bytes that are not
UTF-8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import hdrs, web
from multidict import MultiDict
from yarl import URL

from .caching import CacheMode
from .chain import Middleware, UpstreamRequest
from .endpoint import Endpoint, EndpointObserver, forwarded_headers
from .errors import BadRequest, NotFound
from .forward import Forwarder, UpstreamSettings
from .keys import FORK_SOURCE, STREAM_PATH

__all__ = ["StreamPath", "StreamProxy"]

STREAM_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"})

#: Request headers of the Durable Streams protocol, plus the generic ones worth passing on.
STREAM_REQUEST_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "content-type",
        "if-none-match",
        "traceparent",
        "tracestate",
        "stream-ttl",
        "stream-expires-at",
        "stream-closed",
        "stream-seq",
        "producer-id",
        "producer-epoch",
        "producer-seq",
        "stream-forked-from",
        "stream-fork-offset",
        "stream-fork-sub-offset",
    }
)

#: Response headers a browser client of the protocol reads.
STREAM_EXPOSED_HEADERS = (
    "stream-next-offset",
    "stream-cursor",
    "stream-up-to-date",
    "stream-closed",
    "producer-epoch",
    "producer-seq",
    "producer-expected-seq",
    "producer-received-seq",
    "etag",
    "location",
    "retry-after",
)

_NOT_IN_A_SEGMENT = frozenset("/?#\\") | {chr(c) for c in range(0x20)} | {"\x7f"}


@dataclass(frozen=True, slots=True)
class StreamPath:
    """A stream's path below the public prefix: as sent (raw) and as decided on (segments)."""

    raw: str
    segments: tuple[str, ...]
    prefix: str = "/v1/stream/"


def public_prefix(request: web.Request) -> str:
    """The matched route's fixed part, mount prefixes included, ending in '/'."""
    resource = request.match_info.route.resource
    return (resource.canonical if resource else "").partition("/{")[0] + "/"


def parse_stream_path(raw: str, prefix: str = "/v1/stream/") -> StreamPath:
    """Decode and split a raw stream path; BadRequest for anything ambiguous."""
    if "#" in raw:
        raise BadRequest("the stream path may not hold '#'", code="invalid_path")
    segments = []
    for part in raw.split("/"):
        try:
            segment = unquote(part, errors="strict")
        except UnicodeDecodeError:
            raise BadRequest("the stream path is not valid UTF-8", code="invalid_path") from None
        if segment in ("", ".", "..") or not _NOT_IN_A_SEGMENT.isdisjoint(segment):
            raise BadRequest(
                "the stream path may not have empty, '.' or '..' segments, nor an encoded "
                "'/', '?', '#', '\\' or control character",
                code="invalid_path",
            )
        segments.append(segment)
    return StreamPath(raw=raw, segments=tuple(segments), prefix=prefix)


class StreamProxy(Endpoint):
    """Durable Streams under ``path``; a stream's path is everything after it."""

    methods = STREAM_METHODS
    request_headers = STREAM_REQUEST_HEADERS
    exposed_headers = STREAM_EXPOSED_HEADERS

    def __init__(
        self,
        *,
        upstream: str | UpstreamSettings,
        chain: Sequence[Middleware] = (),
        path: str = "/v1/stream",
        cache: CacheMode = "vary",
        observers: Sequence[EndpointObserver] = (),
    ) -> None:
        forwarder = Forwarder(UpstreamSettings.of(upstream))
        self.base = str(forwarder.url).rstrip("/")
        self.base_path = forwarder.url.path.rstrip("/")
        super().__init__(
            forwarder=forwarder, chain=chain, path=path, cache=cache, observers=observers
        )

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", self.path + "/{stream_path:.+}", self.route)

    def check_path(self, request: web.Request) -> None:
        if not request.raw_path.startswith(public_prefix(request)):
            raise NotFound("no such endpoint")

    def build(self, request: web.Request) -> UpstreamRequest:
        prefix = public_prefix(request)
        raw_target = request.raw_path
        if "#" in raw_target:
            raise BadRequest("the request target may not hold '#'", code="invalid_path")
        stream = parse_stream_path(raw_target.partition("?")[0][len(prefix) :], prefix)
        request[STREAM_PATH] = stream
        headers = forwarded_headers(request, STREAM_REQUEST_HEADERS)
        source = fork_source(request)
        if source is not None:
            request[FORK_SOURCE] = source
            headers["Stream-Forked-From"] = self.forwarder.path_of(source.segments)
        body = request.content.iter_any() if request.body_exists else None
        return UpstreamRequest(
            method=request.method,
            path=stream.segments,
            query=MultiDict(request.query),
            headers=headers,
            body=body,
        )

    @property
    def route_label(self) -> str:
        return f"{self.path}/*"  # never a stream's name: labels stay bounded

    def serves(self, path: str) -> bool:
        return path == self.path or path.startswith(self.path + "/")

    def upstream_probe(self) -> tuple[str, URL]:
        # Durable Streams servers have no health route; any answer below 500 is a live server.
        return hdrs.METH_HEAD, self.forwarder.url

    def upstream_problem(self, status: int) -> str | None:
        return None if status < 500 else f"the upstream answered {status}"

    def _to_public(self, request: web.Request, value: str) -> str | None:
        """An upstream URL or path as the client must see it; None if it is not ours."""
        prefix = request[STREAM_PATH].prefix
        for base, public in (
            (self.base + "/", f"{request.url.origin()}{prefix}"),
            (self.base_path + "/", prefix),
        ):
            if value.startswith(base):
                return public + value[len(base) :]
        return None

    def from_upstream(self, request: web.Request, response: web.StreamResponse) -> None:
        for name in (hdrs.LOCATION, "Stream-Forked-From"):
            value = response.headers.get(name)
            if value is None:
                continue
            public = self._to_public(request, value)
            if public is None:
                del response.headers[name]  # never show the client an upstream address
            else:
                response.headers[name] = public


def fork_source(request: web.Request) -> StreamPath | None:
    """The stream a PUT forks from (a public path): policies must allow reading it too."""
    value = request.headers.get("Stream-Forked-From")
    if value is None:
        return None
    prefix = public_prefix(request)
    if not value.startswith(prefix):
        raise BadRequest(
            f"Stream-Forked-From must name a stream under {prefix}", code="invalid_path"
        )
    return parse_stream_path(value[len(prefix) :], prefix)
