"""Mount a proxied shape endpoint: its exact route, its chain and its upstream pool.

Two ways in, both a few lines for the user::

    proxy = ShapeProxy(upstream="http://electric:3000/v1/shape", chain=[...])
    proxy.setup(app)                        # a route on the user's own app
    app.add_subapp("/electric", proxy.app())  # or a sub-app under a prefix
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from .chain import UPSTREAM, Handler, Middleware, Step, UpstreamRequest, compose
from .errors import MethodNotAllowed, NotFound
from .forward import Forwarder, UpstreamSettings
from .http_server import own_application
from .inflight import InFlight
from .logs import bind_request_id
from .protocol import FORWARDED_REQUEST_HEADERS, SHAPE_METHODS

__all__ = ["Endpoint", "ShapeProxy", "forwarded_headers"]

_ALLOW = ", ".join(sorted(SHAPE_METHODS))


class Endpoint(abc.ABC):
    """What every proxied endpoint shares: its chain, its upstream pool and their lifecycle."""

    def __init__(self, *, forwarder: Forwarder, chain: Sequence[Middleware], path: str) -> None:
        if not path.startswith("/") or (path.endswith("/") and path != "/"):
            raise ValueError(f"path must start with '/' and not end with one: {path!r}")
        self.path = path
        self.forwarder = forwarder
        self.steps: tuple[Middleware, ...] = tuple(chain)
        for step in self.steps:
            if isinstance(step, Step):
                forwarder.trace_configs.extend(step.upstream_trace_configs())
        #: Live requests held right now; ended cleanly when the app shuts down.
        self.inflight = InFlight()
        #: Wraps every request on the route (metrics set it); ``None`` costs nothing.
        self.observer: Middleware | None = None
        self._handler: Handler = compose(self.steps, self.inflight.around(forwarder))

    @abc.abstractmethod
    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Route the endpoint's paths to :meth:`route`."""

    @abc.abstractmethod
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Check the path and method, build the upstream request, run the chain."""

    async def route(self, request: web.Request) -> web.StreamResponse:
        """The route's handler: :meth:`handle`, inside the observer when there is one."""
        observer = self.observer
        if observer is None:
            return await self.handle(request)
        return await observer(request, self.handle)

    def setup(self, app: web.Application) -> None:
        """Add the routes and the lifecycle of the upstream session (and of steps) to ``app``."""
        self.add_routes(app.router)
        app.cleanup_ctx.append(self.forwarder.session_ctx)
        app.on_startup.append(self.inflight.open)
        app.on_shutdown.append(self.inflight.drain)
        for step in self.steps:
            if isinstance(step, Step) and step.holds_resources():
                app.cleanup_ctx.append(step.cleanup_ctx)

    def app(self) -> web.Application:
        """A fresh application holding only this endpoint (standalone or as a sub-app).

        Being the proxy's own, every answer it makes is the proxy's JSON, its router's
        404 and 405 included (:func:`~electric_proxy.http_server.own_application`).
        """
        app = web.Application()
        own_application(app)
        self.setup(app)
        return app

    async def run_chain(
        self, request: web.Request, upstream: UpstreamRequest
    ) -> web.StreamResponse:
        request[UPSTREAM] = upstream
        response = await self._handler(request)
        if self.inflight.streams_body(request, response):
            return await self.inflight.stream(request, response)
        return response


def forwarded_headers(request: web.Request, allowed: frozenset[str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() in allowed)


class ShapeProxy(Endpoint):
    """One shape endpoint in front of one Electric.

    The chain runs in the given order for every request on ``path``; nothing else in the
    host application is affected. ``coalesce_live`` shares one upstream request among
    identical waiting long-polls (see :mod:`electric_proxy.coalesce`).
    """

    def __init__(
        self,
        *,
        upstream: str | UpstreamSettings,
        chain: Sequence[Middleware] = (),
        path: str = "/v1/shape",
        coalesce_live: bool = True,
    ) -> None:
        settings = (
            upstream if isinstance(upstream, UpstreamSettings) else UpstreamSettings(url=upstream)
        )
        if URL(settings.url).path in ("", "/"):
            settings = settings.model_copy(update={"url": settings.url.rstrip("/") + "/v1/shape"})
        forwarder = Forwarder(settings, coalesce_live=coalesce_live)
        super().__init__(forwarder=forwarder, chain=chain, path=path)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", self.path, self.route)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # The router matches the *decoded* path, so /v1/%73hape would arrive here too.
        # Only the exact bytes of the configured route are served.
        bind_request_id("-")
        raw_path = request.raw_path.partition("?")[0]
        resource = request.match_info.route.resource
        if resource is None or raw_path != resource.canonical:
            return NotFound("no such endpoint").to_response()
        if request.method not in SHAPE_METHODS:
            error = MethodNotAllowed(
                f"method {request.method} is not allowed", headers={hdrs.ALLOW: _ALLOW}
            )
            return error.to_response()
        upstream = UpstreamRequest(
            method=request.method, headers=forwarded_headers(request, FORWARDED_REQUEST_HEADERS)
        )
        return await self.run_chain(request, upstream)
