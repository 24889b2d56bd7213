"""`DurableStreams`: just enough of a Durable Streams server to see what the proxy sends.

The streams route forwards bytes it does not interpret, so its tests need an upstream that
records each request as it arrived and answers in the protocol's shape (``PUT`` creates,
``POST`` appends, ``GET``/``HEAD`` read, ``DELETE`` removes, ``live=sse`` streams one event),
not a complete server: the repository's conformance suite runs the reference server for that.
"""

from __future__ import annotations

import hmac
from typing import NamedTuple

from aiohttp import hdrs, web
from multidict import CIMultiDictProxy

__all__ = ["DurableStreams", "StreamRequest"]


class StreamRequest(NamedTuple):
    """One request as the stand-in received it: the raw path keeps the proxy's encoding."""

    method: str
    raw_path: str
    headers: CIMultiDictProxy[str]


class DurableStreams:
    """Streams under ``prefix`` kept in memory; ``seen`` lists every request, in order.

    With ``secret``, a request without ``Authorization: Bearer <secret>`` gets a 401, as a
    service behind Electric Cloud's secret would answer.
    """

    def __init__(self, prefix: str = "/v1/stream/svc-test", *, secret: str | None = None) -> None:
        self.prefix = prefix.rstrip("/")
        self.secret = secret
        self.streams: dict[str, bytearray] = {}
        self.seen: list[StreamRequest] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", self.prefix + "/{name:.+}", self._handle)
        return app

    def _authorised(self, request: web.Request) -> bool:
        if self.secret is None:
            return True
        supplied = request.headers.get(hdrs.AUTHORIZATION, "")
        return hmac.compare_digest(supplied.encode(), f"Bearer {self.secret}".encode())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.raw_path.partition("?")[0].removeprefix(self.prefix + "/")
        self.seen.append(StreamRequest(request.method, request.raw_path, request.headers))
        if not self._authorised(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        if request.method == "PUT":
            self.streams[name] = bytearray()
            location = str(request.url.with_query(None))
            return web.Response(
                status=201, headers={"Location": location, "Stream-Next-Offset": "0"}
            )
        if request.method == "POST":
            async for chunk in request.content.iter_any():
                self.streams.setdefault(name, bytearray()).extend(chunk)
            return web.Response(
                status=204, headers={"Stream-Next-Offset": str(len(self.streams[name]))}
            )
        if request.method == "GET" and request.query.get("live") == "sse":
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b"event: data\ndata: hello\n\n")
            return resp
        if request.method in ("GET", "HEAD"):
            return web.Response(
                body=bytes(self.streams.get(name, b"")),
                headers={"Stream-Next-Offset": "1", "Stream-Forked-From": f"{self.prefix}/src"},
            )
        self.streams.pop(name, None)
        return web.Response(status=204)
