"""The endpoint skeleton every proxied route shares, top to bottom.

A request is checked (exact path, method), parsed once into the complete upstream request,
run through the chain around the forwarder, and marked for caches; subclasses say only what
differs: their routes, how they parse a target, how to probe their upstream, and what to
rewrite on the way back. :mod:`electric_proxy.shapes` and :mod:`electric_proxy.streams` are
the two endpoints.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from typing import ClassVar, Protocol, cast

from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from .caching import CacheMode, CacheScope
from .chain import Handler, Middleware, Route, Step, UpstreamRequest, compose
from .errors import MethodNotAllowed, ProxyError
from .forward import Forwarder
from .http_server import own_application
from .inflight import InFlight
from .keys import PRINCIPAL, ROUTE, UPSTREAM
from .logs import bind_request_id, current_request_id
from .upstream_errors import UpstreamErrorCleaner, error_body

__all__ = ["Endpoint", "EndpointObserver", "forwarded_headers"]


class EndpointObserver(Protocol):
    """Something that watches every request of an endpoint from outside (metrics).

    Given to the endpoint when it is built; ``observe`` is called once, from the endpoint's
    constructor, and returns the middleware that wraps the endpoint's route.
    """

    def observe(self, endpoint: Endpoint) -> Middleware: ...


def _around(middleware: Middleware, inner: Handler) -> Handler:
    async def run(request: web.Request) -> web.StreamResponse:
        return await middleware(request, inner)

    return run


class Endpoint(abc.ABC):
    """What every proxied endpoint shares: one way to handle a request, top to bottom.

    :meth:`handle` checks the exact path and the method, builds the complete
    :class:`~electric_proxy.UpstreamRequest` once (:meth:`build`), runs the chain around the
    forwarder, and marks the response for caches (:mod:`electric_proxy.caching`) whatever
    the chain holds. Upstream errors are replaced by the proxy's own (see
    :mod:`electric_proxy.upstream_errors`) before any step sees them.
    """

    methods: ClassVar[frozenset[str]]
    request_headers: ClassVar[frozenset[str]]
    exposed_headers: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        *,
        forwarder: Forwarder,
        chain: Sequence[Middleware],
        path: str,
        cache: CacheMode = "vary",
        observers: Sequence[EndpointObserver] = (),
    ) -> None:
        if not path.startswith("/") or (path.endswith("/") and path != "/"):
            raise ValueError(f"path must start with '/' and not end with one: {path!r}")
        self.path = path
        self.forwarder = forwarder
        self.steps: tuple[Middleware, ...] = tuple(chain)
        configurable = [step for step in self.steps if isinstance(step, Step)]
        for step in configurable:
            forwarder.trace_configs.extend(step.upstream_trace_configs())
        self.route_info = Route(self.methods, self.request_headers, self.exposed_headers)
        self.cache_scope = CacheScope.of((s.identity_headers() for s in configurable), cache)
        self._clean_error = UpstreamErrorCleaner(forwarder.base_url_parts())
        #: Live requests held right now; ended cleanly when the app shuts down.
        self.inflight = InFlight()
        self._handler: Handler = compose(self.steps, self._forward)
        # Observers (metrics) wrap the whole route, given once here and never patched on.
        self._route: Handler = self.handle
        for observer in reversed(observers):
            self._route = _around(observer.observe(self), self._route)

    @abc.abstractmethod
    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Route the endpoint's paths to :meth:`route`."""

    @abc.abstractmethod
    def check_path(self, request: web.Request) -> None:
        """Raise NotFound unless the raw path is exactly one this endpoint serves."""

    @abc.abstractmethod
    def build(self, request: web.Request) -> UpstreamRequest:
        """Parse the client's target once into the complete upstream request."""

    @property
    def route_label(self) -> str:
        """The endpoint's name in metrics and readiness: bounded, never a client's path."""
        return self.path

    def serves(self, path: str) -> bool:
        """Whether a request for ``path`` would reach this endpoint (so no other route may
        use it)."""
        return path == self.path

    @abc.abstractmethod
    def upstream_probe(self) -> tuple[str, URL]:
        """The method and URL that tell whether the upstream can serve (for ``/readyz``)."""

    @abc.abstractmethod
    def upstream_problem(self, status: int) -> str | None:
        """What the probe's ``status`` says is wrong with the upstream, or ``None``."""

    def from_upstream(self, request: web.Request, response: web.StreamResponse) -> None:  # noqa: B027
        """Adjust a successful upstream answer before the steps see it (default: nothing)."""

    def passes_error(self, response: web.StreamResponse, body: bytes) -> bytes | None:
        """The body to pass on for an upstream error the client needs as it is, else None."""
        return None

    @property
    def route(self) -> Handler:
        """The route's handler: :meth:`handle`, inside the observers when there are any.

        The handler itself rather than a method calling it: a held request keeps one
        coroutine frame less alive (thousands of long-polls wait at once).
        """
        return self._route

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if current_request_id() != "-":  # a keep-alive connection's previous request
            bind_request_id("-")
        try:
            self.check_path(request)
            if request.method not in self.methods:
                raise MethodNotAllowed(
                    f"method {request.method} is not allowed",
                    headers={hdrs.ALLOW: self.route_info.allow},
                )
            upstream = self.build(request)
        except ProxyError as exc:
            return exc.to_response()
        # The chain runs in this frame, not a helper's: a held request keeps each alive.
        request[UPSTREAM] = upstream
        request[ROUTE] = self.route_info
        self.inflight.arrive(request)
        response = await self._handler(request)
        self.cache_scope.mark(request, response, PRINCIPAL in request)
        return await self.inflight.send(request, response)

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

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if request.method == hdrs.METH_OPTIONS:
            # A preflight never reaches the upstream: its CORS answer would not fit the proxy's.
            return web.Response(status=204, headers={hdrs.ALLOW: self.route_info.allow})
        hold = self.inflight.hold(request)
        try:
            response = await self.forwarder(request)
        except asyncio.CancelledError:
            if hold is not None and hold.absorbs():
                raise hold.answer() from None
            raise
        finally:
            self.inflight.release(hold)
        if response.status < 400:
            self.from_upstream(request, response)
            return response
        whole = cast(web.Response, response)  # the forwarder reads error bodies whole
        body = error_body(whole)
        passed = self.passes_error(response, body)
        if passed is not None:
            whole.body = passed
            return whole
        return self._clean_error(request, request[UPSTREAM], response, body)


def forwarded_headers(request: web.Request, allowed: frozenset[str]) -> CIMultiDict[str]:
    """The client's headers named in ``allowed`` (lower case), as sent and in order."""
    return CIMultiDict([(k, v) for k, v in request.headers.items() if k.lower() in allowed])
