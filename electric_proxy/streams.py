"""Electric Streams (the Durable Streams protocol) through the same chain and forwarder.

Public ``{path}/{stream path}`` maps to ``{upstream url}/{stream path}``; on Electric Cloud the
upstream URL carries the service prefix (``.../v1/stream/<service-id>``), which is added on
the way in and taken out of ``Location`` and ``Stream-Forked-From`` on the way back.

What the protocol forces (streams-and-cloud notes §1.12): the raw path is forwarded with its
percent-encoding (names may hold ``%2F``) and the query verbatim; bodies stream both ways
(chunked appends, SSE); no redirect is followed; no ``Content-Type`` is invented.

Access decisions are made on the *decoded* path split into segments, so ``%2F``, ``..``
and ``//`` cannot make a path look like one thing to the policy and another to the
upstream: a path with an empty, ``.`` or ``..`` segment (after decoding) is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import hdrs, web
from yarl import URL

from .app import Endpoint, forwarded_headers
from .chain import Middleware, UpstreamRequest
from .errors import BadRequest, MethodNotAllowed, NotFound
from .forward import Forwarder, UpstreamSettings
from .logs import bind_request_id

__all__ = [
    "STREAM_PATH",
    "StreamPath",
    "StreamProxy",
    "fork_source",
    "parse_stream_path",
    "public_prefix",
]

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


@dataclass(frozen=True, slots=True)
class StreamPath:
    """A stream's path below the public prefix: as sent (raw) and as decided on (segments)."""

    raw: str
    segments: tuple[str, ...]
    prefix: str = "/v1/stream/"


STREAM_PATH = web.RequestKey("electric_proxy.stream_path", StreamPath)


def public_prefix(request: web.Request) -> str:
    """The matched route's fixed part, mount prefixes included, ending in '/'."""
    resource = request.match_info.route.resource
    return (resource.canonical if resource else "").partition("/{")[0] + "/"


def parse_stream_path(raw: str, prefix: str = "/v1/stream/") -> StreamPath:
    """Decode and split a raw stream path; BadRequest for anything ambiguous."""
    try:
        decoded = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("the stream path is not valid UTF-8", code="invalid_path") from None
    segments = tuple(decoded.split("/"))
    if any(s in ("", ".", "..") for s in segments) or "\x00" in decoded or "\\" in decoded:
        raise BadRequest(
            "the stream path may not have empty, '.' or '..' segments", code="invalid_path"
        )
    return StreamPath(raw=raw, segments=segments, prefix=prefix)


class StreamForwarder(Forwarder):
    allow = ", ".join(sorted(STREAM_METHODS))

    def __init__(self, settings: UpstreamSettings) -> None:
        super().__init__(settings)
        self.base = str(self.url).rstrip("/")
        self.base_path = self.url.path.rstrip("/")

    def upstream_url(self, request: web.Request) -> URL:
        query = request.rel_url.raw_query_string
        raw = f"{self.base}/{request[STREAM_PATH].raw}" + (f"?{query}" if query else "")
        return URL(raw, encoded=True)

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

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        response = await super().__call__(request)
        for name in (hdrs.LOCATION, "Stream-Forked-From"):
            value = response.headers.get(name)
            if value is None:
                continue
            public = self._to_public(request, value)
            if public is None:
                del response.headers[name]  # never show the client an upstream address
            else:
                response.headers[name] = public
        return response


class StreamProxy(Endpoint):
    """Durable Streams under ``path``; a stream's path is everything after it."""

    def __init__(
        self,
        *,
        upstream: str | UpstreamSettings,
        chain: Sequence[Middleware] = (),
        path: str = "/v1/stream",
    ) -> None:
        settings = (
            upstream if isinstance(upstream, UpstreamSettings) else UpstreamSettings(url=upstream)
        )
        self.stream_forwarder = StreamForwarder(settings)
        super().__init__(forwarder=self.stream_forwarder, chain=chain, path=path)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", self.path + "/{stream_path:.+}", self.route)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        bind_request_id("-")
        raw_path = request.raw_path.partition("?")[0]
        prefix = public_prefix(request)
        if not raw_path.startswith(prefix):
            return NotFound("no such endpoint").to_response()
        if request.method not in STREAM_METHODS:
            return MethodNotAllowed(
                f"method {request.method} is not allowed",
                headers={hdrs.ALLOW: self.stream_forwarder.allow},
            ).to_response()
        try:
            request[STREAM_PATH] = parse_stream_path(raw_path[len(prefix) :], prefix)
            upstream = self._upstream_request(request)
        except BadRequest as exc:
            return exc.to_response()
        return await self.run_chain(request, upstream)

    def _upstream_request(self, request: web.Request) -> UpstreamRequest:
        headers = forwarded_headers(request, STREAM_REQUEST_HEADERS)
        source = fork_source(request)
        if source is not None:
            headers["Stream-Forked-From"] = f"{self.stream_forwarder.base_path}/{source.raw}"
        body = request.content.iter_any() if request.body_exists else None
        return UpstreamRequest(method=request.method, headers=headers, body=body)


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
