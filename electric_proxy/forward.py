"""The only place that talks to the upstream: one pooled session, streamed bodies, faults.

Design choices, each forced by the protocol:

* ``auto_decompress=False``: compressed bytes pass through untouched with their
  ``Content-Encoding`` and ``Content-Length``, so they always agree with the body and the
  proxy pays no inflate/deflate cost. Aiohttp's own ``Accept-Encoding`` default is
  skipped, so the upstream only compresses when the *client* asked for it.
* No total timeout and a read timeout above Electric's 20 s long-poll and 60 s SSE holds;
  a connection limit sized for thousands of held live requests.
* The response is returned *unprepared* so the steps can adjust its headers as the chain
  unwinds; the body is streamed when aiohttp prepares it (the way ``FileResponse`` works).
* A client that goes away cancels the handler task (aiohttp's ``handler_cancellation``);
  the upstream connection is then closed, not returned to the pool half-read.
* Where the upstream would be called, identical live long-polls share one request
  (:mod:`electric_proxy.coalesce`) and catch-up GETs may be answered from the shape cache
  (:mod:`electric_proxy.shape_cache`); both key on :func:`answer_key`, the built request
  without the headers that only label it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, MultiMapping
from pydantic import BaseModel, ConfigDict, Field, field_validator
from yarl import URL

from .bodies import complete_body
from .chain import UpstreamRequest
from .coalesce import Coalescer, LeaderLeft
from .errors import ElectricProxyError, UpstreamTimeout, UpstreamUnavailable
from .keys import REQUEST_ID, UPSTREAM, UPSTREAM_STATUS
from .protocol import ANSWER_NEUTRAL_HEADERS, HOP_BY_HOP_HEADERS, live_kind
from .shape_cache import CachedAnswer, Fill, ShapeCache, etag_matches
from .upstream_errors import ERROR_BODY_LIMIT

__all__ = ["AnswerKey", "Forwarder", "UpstreamResponse", "UpstreamSettings", "answer_key"]

log = logging.getLogger("electric_proxy.forward")

USER_AGENT = "electric-proxy"


class UpstreamSettings(BaseModel):
    """Where Electric is and how to hold connections to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(
        description="Electric's endpoint, e.g. http://localhost:3000/v1/shape (a bare origin "
        "gets the endpoint's default path)"
    )
    connection_limit: int = Field(
        10_000,
        ge=1,
        description="Upstream connections held at once; each live client holds one for up to 60 s",
    )
    connect_timeout: float = Field(
        10.0, gt=0, description="Seconds to get a connection (pool wait included)"
    )
    read_timeout: float = Field(
        90.0,
        gt=0,
        description="Seconds of upstream silence tolerated; keep it above Electric's 20 s "
        "long-poll and 60 s SSE holds",
    )

    @field_validator("url")
    @classmethod
    def _http_url_without_credentials(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("expected an http:// or https:// URL")
        if url.query_string:
            raise ValueError(
                "the upstream URL must not carry a query; set source_id/secret with the "
                "credentials step"
            )
        if url.user or url.password:
            raise ValueError("the upstream URL must not carry credentials")
        return value

    @classmethod
    def of(
        cls, upstream: str | UpstreamSettings, *, bare_origin_path: str = ""
    ) -> UpstreamSettings:
        """``upstream`` as settings: a URL alone gets the defaults.

        An endpoint whose upstream has a well-known path (``/v1/shape``) passes it as
        ``bare_origin_path``, so ``http://electric:3000`` means Electric's shape endpoint.
        """
        settings = upstream if isinstance(upstream, UpstreamSettings) else cls(url=upstream)
        if bare_origin_path and URL(settings.url).path in ("", "/"):
            url = settings.url.rstrip("/") + bare_origin_path
            settings = settings.model_copy(update={"url": url})
        return settings


class _PassedOn(dict[str, bool]):
    """Whether a response header name, as spelled, may pass on (hop-by-hop and Electric's CORS
    answer may not); each spelling is classified once, since upstreams repeat the same few.

    Bounded: past :data:`_MAX_NAMES` spellings the answer is computed and not kept.
    """

    def __missing__(self, name: str) -> bool:
        lower = name.lower()
        passed = lower not in HOP_BY_HOP_HEADERS and not lower.startswith("access-control-")
        if len(self) < _MAX_NAMES:
            self[name] = passed
        return passed


_MAX_NAMES = 512
_passed_on = _PassedOn()


def _connection_tokens(headers: MultiMapping[str]) -> set[str] | None:
    """The header names ``Connection`` lists beyond the hop-by-hop ones, or ``None``.

    ``Connection: keep-alive`` (nginx, most servers) names nothing new, so the usual answer
    is ``None`` and the filter is a lookup per header.
    """
    named: set[str] | None = None
    for value in headers.getall(hdrs.CONNECTION, ()):
        for token in value.split(","):
            lower = token.strip().lower()
            if lower and lower not in HOP_BY_HOP_HEADERS:
                if named is None:
                    named = set()
                named.add(lower)
    return named


def _end_to_end(headers: MultiMapping[str]) -> list[tuple[str, str]]:
    """The headers worth passing on: not hop-by-hop, not named in ``Connection``, and not
    Electric's CORS answer (any origin, no credentials), which is a step's job to replace."""
    passed = _passed_on
    named = _connection_tokens(headers) if hdrs.CONNECTION in headers else None
    if named is None:
        return [(k, v) for k, v in headers.items() if passed[k]]
    return [(k, v) for k, v in headers.items() if passed[k] and k.lower() not in named]


class UpstreamResponse(web.StreamResponse):
    """Electric's answer, headers copied and adjustable until aiohttp prepares it.

    The body comes from ``chunks`` (one upstream response, or a shared coalesced reply);
    ``done(clean)`` is called once, when the body was sent in full or abandoned, and so is
    every callback given to :meth:`add_done_callback`.
    """

    def __init__(
        self,
        status: int,
        reason: str | None,
        headers: MultiMapping[str],
        chunks: AsyncIterator[bytes],
        done: Callable[[bool], None],
    ) -> None:
        super().__init__(status=status, reason=reason)
        self.headers.extend(_end_to_end(headers))
        self._chunks = chunks
        self._done = done
        self._callbacks: list[Callable[[BaseException | None], None]] = []
        self._body_sent = False

    def add_done_callback(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call ``callback`` once the body has been streamed: with ``None`` when it was sent in
        full, otherwise with what cut it (an upstream failure, a client gone, a cancellation).

        A step sees the response before its body exists; this is how it learns how the body
        ended (to close a span, to count bytes). Add callbacks while the chain unwinds, before
        aiohttp prepares the response; they run on the request's task, in the order added, and
        must not block.
        """
        self._callbacks.append(callback)

    def _finish(self, error: BaseException | None) -> None:
        self._done(error is None)
        for callback in self._callbacks:
            try:
                callback(error)
            except Exception:
                log.exception("a response done callback failed")

    async def read(self, limit: int) -> bytes:
        """The body instead of streaming it, for an answer the proxy will not pass on (an
        error): at most ``limit`` bytes; the upstream connection is closed if more came."""
        self._body_sent = True
        received = bytearray()
        try:
            async for chunk in self._chunks:
                received += chunk
                if len(received) > limit:
                    self._finish(_BodyTooLarge())
                    return bytes(received[:limit])
        except BaseException as exc:
            self._finish(exc)
            raise
        self._finish(None)
        return bytes(received)

    async def prepare(self, request: web.BaseRequest) -> Any:
        writer = await super().prepare(request)
        if self._body_sent:
            return writer
        self._body_sent = True
        try:
            async for chunk in self._chunks:
                await self.write(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Headers are gone already; ending the reply normally would make a truncated body
            # look complete, so the client connection is cut instead.
            log.warning("upstream body failed mid-stream: %s", type(exc).__name__)
            self._finish(exc)
            if request.transport is not None:
                request.transport.abort()
            return writer
        except BaseException as exc:
            self._finish(exc)
            raise
        self._finish(None)
        return writer


AnswerKey = tuple[str, str, tuple[tuple[str, str], ...]]


def answer_key(
    built: UpstreamRequest, url: URL, ignored: frozenset[str] = ANSWER_NEUTRAL_HEADERS
) -> AnswerKey:
    """What Electric's answer to ``built`` depends on: method, full URL (shape, claim-bound
    params, credentials) and every forwarded header but the ``ignored`` ones (lower case)."""
    headers = sorted((k.lower(), v) for k, v in built.headers.items() if k.lower() not in ignored)
    return built.method, str(url), tuple(headers)


class _BodyTooLarge(ElectricProxyError):
    """An error body longer than the proxy reads: the rest is dropped with the connection."""


def _whole(
    status: int, reason: str | None, headers: MultiMapping[str], body: bytes
) -> web.Response:
    # A plain Response goes out as headers and body in a single write.
    return web.Response(status=status, reason=reason, headers=_end_to_end(headers), body=body)


def reply_for(upstream: aiohttp.ClientResponse, fill: Fill | None = None) -> web.StreamResponse:
    """The client's response for one upstream response: whole if it has arrived, else streamed.

    With a shape-cache ``fill``, a storable answer is stored once its body is complete.
    """
    body = complete_body(upstream)
    if body is not None:
        upstream.release()
        if fill is not None:
            fill.store((upstream.status, upstream.reason, _end_to_end_copy(upstream)), body)
        return _whole(upstream.status, upstream.reason, upstream.headers, body)

    def done(clean: bool) -> None:
        if clean:
            upstream.release()
        else:
            upstream.close()

    chunks: AsyncIterator[bytes] = upstream.content.iter_any()
    if fill is not None:
        chunks = fill.stream((upstream.status, upstream.reason, _end_to_end_copy(upstream)), chunks)
    return UpstreamResponse(upstream.status, upstream.reason, upstream.headers, chunks, done)


def _end_to_end_copy(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    """What a cache entry may keep of the upstream's headers (it outlives the response)."""
    return CIMultiDict(_end_to_end(upstream.headers))


def _from_cache(entry: CachedAnswer, age: int, if_none_match: list[str]) -> web.Response:
    """A fresh response from a stored answer: a 304 when the client already has its ETag."""
    headers = CIMultiDict(entry.headers)
    headers[hdrs.AGE] = str(age)
    if entry.status == 200 and etag_matches(if_none_match, entry.etag):
        return web.Response(status=304, headers=headers)
    return web.Response(status=entry.status, reason=entry.reason, headers=headers, body=entry.body)


def _is_catch_up(built: UpstreamRequest) -> bool:
    """A plain GET of a shape log: the only kind of request the shape cache answers."""
    return (
        built.method == hdrs.METH_GET
        and built.body is None
        and live_kind(built.query, built.headers.get(hdrs.ACCEPT, "")) is None
    )


#: The cache answers ``If-None-Match`` itself, from the stored ``ETag``.
_CACHE_IGNORED = ANSWER_NEUTRAL_HEADERS | {"if-none-match"}


def _is_long_poll(built: UpstreamRequest) -> bool:
    """A live long-poll: the only kind of request whose answer many clients wait for at once."""
    return built.method == hdrs.METH_GET and (
        live_kind(built.query, built.headers.get(hdrs.ACCEPT, "")) == "long_poll"
    )


class _QueryQuoted(dict[str, str]):
    """Query keys and values percent-encoded as yarl encodes them (so the URL is the one
    ``URL.with_query`` would build), each short string encoded once: names, the policy's
    table, columns and filter and the credentials come back on every request.

    Bounded: past :data:`_MAX_QUOTED` strings, or for a long one, the encoding is not kept.
    """

    def __missing__(self, text: str) -> str:
        quoted = _quote_query_part(text)
        if len(text) <= 256 and len(self) < _MAX_QUOTED:
            self[text] = quoted
        return quoted


def _quote_query_part_public(text: str) -> str:
    return URL.build(query={text: ""}).raw_query_string[:-1]


_quote_query_part: Callable[[str], str]
try:  # yarl's own quoter for query parts; the public route above builds a URL per string
    from yarl._quoters import QUERY_PART_QUOTER as _quote_query_part
except ImportError:  # pragma: no cover - another yarl layout
    _quote_query_part = _quote_query_part_public

_MAX_QUOTED = 1024


def _query_prefix(url: URL) -> str | None:
    """``url`` as text ready for an encoded query, when appending one builds exactly the URL
    ``with_query`` would (checked once here); else ``None``, and yarl builds each URL."""
    if url.raw_fragment or url.raw_query_string:
        return None
    prefix = str(url) + "?"
    probe = URL(prefix + "k=v", encoded=True)
    expected = url.with_query({"k": "v"})
    return prefix if probe == expected and str(probe) == str(expected) else None


#: Characters a path segment keeps unencoded (RFC 3986 pchar less '%'): everything else,
#: '/', '?', '#' and '%' included, is percent-encoded, so one decided segment stays one.
_SEGMENT_SAFE = "!$&'()*+,;=:@-._~"


class Forwarder:
    """The chain's endpoint: serialises the built :class:`UpstreamRequest`, sends it, replies.

    It never looks at the client's request: the path and query it sends are exactly the
    ones the steps saw, encoded here in one way.
    """

    def __init__(
        self,
        settings: UpstreamSettings,
        *,
        coalesce_live: bool = False,
        shape_cache: ShapeCache | None = None,
    ) -> None:
        self.settings = settings
        self.coalescer = Coalescer() if coalesce_live else None
        self.shape_cache = shape_cache
        self.url = URL(settings.url)
        self._base_path = self.url.raw_path.rstrip("/")
        self._prefix = _query_prefix(self.url)
        self._quoted = _QueryQuoted()
        self.trace_configs: list[aiohttp.TraceConfig] = []
        self._session_key = web.AppKey("electric_proxy.upstream_session", aiohttp.ClientSession)
        # The session of the one app serving this forwarder, read without building the
        # request's config_dict; None while none or several apps run it.
        self._session: aiohttp.ClientSession | None = None
        self._sessions = 0

    async def session_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """Cleanup context: one pooled session per proxy, closed on shutdown."""
        s = self.settings
        connector = aiohttp.TCPConnector(limit=s.connection_limit, limit_per_host=0)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=s.connect_timeout, sock_read=s.read_timeout
            ),
            auto_decompress=False,
            skip_auto_headers=(hdrs.ACCEPT_ENCODING, hdrs.CONTENT_TYPE),
            headers={hdrs.USER_AGENT: USER_AGENT},
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            trace_configs=self.trace_configs or None,
        )
        app[self._session_key] = session
        self._sessions += 1
        self._session = session if self._sessions == 1 else None
        try:
            yield
        finally:
            self._sessions -= 1
            self._session = None
            if self.coalescer is not None:
                await self.coalescer.close()
            await session.close()

    def session(self, request: web.Request) -> aiohttp.ClientSession:
        session = self._session
        if session is not None:
            return session
        return request.config_dict[self._session_key]

    def upstream_url(self, built: UpstreamRequest) -> URL:
        """The upstream URL of ``built``: its path segments below the base, and its query.

        The query is encoded pair by pair with yarl's quoter and appended to the encoded base,
        the very URL ``with_query`` builds, without its general-purpose machinery.
        """
        if built.path or self._prefix is None:
            url = self.url
            if built.path:
                url = url.with_path(self.path_of(built.path), encoded=True)
            return url.with_query(built.query) if built.query else url
        if not built.query:
            return self.url
        quoted = self._quoted
        query = "&".join([f"{quoted[k]}={quoted[v]}" for k, v in built.query.items()])
        return URL(self._prefix + query, encoded=True)

    def path_of(self, segments: Sequence[str]) -> str:
        """The upstream's encoded path for decided ``segments`` below its base path."""
        return self._base_path + "".join("/" + quote(s, safe=_SEGMENT_SAFE) for s in segments)

    def base_url_parts(self) -> tuple[str, ...]:
        """What the upstream URL always holds that no client should see (host, base path)."""
        return tuple(p for p in (self.url.host or "", self._base_path) if p.strip("/"))

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        built = request[UPSTREAM]
        url = self.upstream_url(built)
        session = self.session(request)

        def fetch() -> Awaitable[aiohttp.ClientResponse]:
            return session.request(
                built.method, url, headers=built.headers, data=built.body, allow_redirects=False
            )

        # The coalescer and the cache are tried here, in this frame, rather than in a helper
        # coroutine: a held long-poll keeps every frame above the upstream call alive.
        response: web.StreamResponse
        try:
            if self.coalescer is not None and _is_long_poll(built):
                coalescer = self.coalescer
                key = answer_key(built, url)
                while True:
                    flight, leading = coalescer.join(key, request.get(REQUEST_ID, "-"))
                    try:
                        if leading:
                            try:
                                upstream = await fetch()
                            except BaseException as exc:
                                coalescer.failed(key, flight, exc)
                                raise
                            head = coalescer.landed(key, flight, upstream)
                        else:
                            head = await flight.reply.wait_head()
                    except LeaderLeft:
                        coalescer.leave(flight)
                        continue
                    except BaseException:
                        coalescer.leave(flight)
                        raise
                    break
                reply = flight.reply
                if reply.complete and reply.error is None:
                    coalescer.leave(flight)
                    response = _whole(*head, reply.body())
                else:
                    response = UpstreamResponse(
                        *head, reply.replay(), lambda clean: coalescer.leave(flight)
                    )
            elif self.shape_cache is not None and _is_catch_up(built):
                response = await self._cached(self.shape_cache, built, url, fetch)
            else:
                response = reply_for(await fetch())
        except TimeoutError as exc:
            raise UpstreamTimeout("Electric did not answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("upstream request failed: %s", type(exc).__name__)
            raise UpstreamUnavailable("Electric could not be reached") from exc
        request[UPSTREAM_STATUS] = response.status
        if response.status >= 400 and isinstance(response, UpstreamResponse):
            # Errors are replaced, never streamed: the endpoint reads them whole (bounded).
            body = await response.read(ERROR_BODY_LIMIT)
            return _whole(response.status, response.reason, response.headers, body)
        return response

    async def _cached(
        self,
        cache: ShapeCache,
        built: UpstreamRequest,
        url: URL,
        fetch: Callable[[], Awaitable[aiohttp.ClientResponse]],
    ) -> web.StreamResponse:
        key = answer_key(built, url, _CACHE_IGNORED)
        entry = await cache.lookup(key)
        if entry is not None:
            conditions = built.headers.getall(hdrs.IF_NONE_MATCH, [])
            return _from_cache(entry, cache.age(entry), conditions)
        fill = cache.fill(key)
        try:
            upstream = await fetch()
        except BaseException:
            if fill is not None:
                fill.end()  # wake the requests waiting for it: they ask for themselves
            raise
        return reply_for(upstream, fill)
