"""Mount a proxied shape endpoint: its exact route, its chain and its upstream pool.

Two ways in, both a few lines for the user::

    proxy = ShapeProxy(upstream="http://electric:3000/v1/shape", chain=[...])
    proxy.setup(app)                        # a route on the user's own app
    app.add_subapp("/electric", proxy.app())  # or a sub-app under a prefix
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar, cast

from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from .caching import CacheMode, CacheScope
from .chain import Handler, Middleware, Route, Step, UpstreamRequest, compose, pass_through_params
from .errors import MethodNotAllowed, NotFound, ProxyError
from .forward import Forwarder, UpstreamSettings
from .http_server import own_application
from .inflight import InFlight
from .keys import PRINCIPAL, ROUTE, UPSTREAM
from .logs import bind_request_id
from .protocol import ELECTRIC_EXPOSED_HEADERS, FORWARDED_REQUEST_HEADERS, SHAPE_METHODS
from .shape_cache import DEFAULT_SHAPE_CACHE_BYTES, ShapeCache
from .upstream_errors import UpstreamErrorCleaner, error_body, passes_must_refetch

__all__ = ["Endpoint", "ShapeProxy", "forwarded_headers"]


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
        self._allow = ", ".join(sorted(self.methods))
        self._clean_error = UpstreamErrorCleaner(forwarder.base_url_parts())
        #: Live requests held right now; ended cleanly when the app shuts down.
        self.inflight = InFlight()
        #: Wraps every request on the route (metrics set it); ``None`` costs nothing.
        self.observer: Middleware | None = None
        self._handler: Handler = compose(self.steps, self.inflight.around(self._forward))

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

    async def route(self, request: web.Request) -> web.StreamResponse:
        """The route's handler: :meth:`handle`, inside the observer when there is one."""
        observer = self.observer
        if observer is None:
            return await self.handle(request)
        return await observer(request, self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        bind_request_id("-")
        try:
            self.check_path(request)
            if request.method not in self.methods:
                raise MethodNotAllowed(
                    f"method {request.method} is not allowed", headers={hdrs.ALLOW: self._allow}
                )
            upstream = self.build(request)
        except ProxyError as exc:
            return exc.to_response()
        return await self.run_chain(request, upstream)

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
        request[ROUTE] = self.route_info
        response = await self._handler(request)
        self.cache_scope.mark(request, response, PRINCIPAL in request)
        if self.inflight.streams_body(request, response):
            return await self.inflight.stream(request, response)
        return response

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if request.method == hdrs.METH_OPTIONS:
            # A preflight never reaches the upstream: its CORS answer would not fit the proxy's.
            return web.Response(status=204, headers={hdrs.ALLOW: self._allow})
        response = await self.forwarder(request)
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
    return CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() in allowed)


#: What Electric sends with a 409 when the client must start again from a new handle.
MUST_REFETCH = b'[{"headers":{"control":"must-refetch"}}]'


def electric_health_url(shape_url: URL) -> URL:
    """Electric's health route for a shape URL: ``.../v1/shape`` becomes ``.../v1/health``."""
    path = shape_url.path
    if path.endswith("/shape"):
        return shape_url.with_path(path.removesuffix("shape") + "health")
    return shape_url.with_path("/v1/health")


class ShapeProxy(Endpoint):
    """One shape endpoint in front of one Electric.

    The chain runs in the given order for every request on ``path``; nothing else in the
    host application is affected. ``coalesce_live`` shares one upstream request among
    identical waiting long-polls (see :mod:`electric_proxy.coalesce`); ``cache`` is how
    responses are marked for shared caches (see :mod:`electric_proxy.caching`);
    ``shape_cache_bytes`` bounds the cache of Electric's answers shared by users whose built
    upstream requests are identical (see :mod:`electric_proxy.shape_cache`; 0 turns it off).
    """

    methods = SHAPE_METHODS
    request_headers = FORWARDED_REQUEST_HEADERS | {"content-type"}
    exposed_headers = ELECTRIC_EXPOSED_HEADERS

    def __init__(
        self,
        *,
        upstream: str | UpstreamSettings,
        chain: Sequence[Middleware] = (),
        path: str = "/v1/shape",
        coalesce_live: bool = True,
        cache: CacheMode = "vary",
        shape_cache_bytes: int = DEFAULT_SHAPE_CACHE_BYTES,
    ) -> None:
        if shape_cache_bytes < 0:
            raise ValueError("shape_cache_bytes must be 0 (off) or more")
        settings = (
            upstream if isinstance(upstream, UpstreamSettings) else UpstreamSettings(url=upstream)
        )
        if URL(settings.url).path in ("", "/"):
            settings = settings.model_copy(update={"url": settings.url.rstrip("/") + "/v1/shape"})
        shape_cache = ShapeCache(shape_cache_bytes) if shape_cache_bytes else None
        forwarder = Forwarder(settings, coalesce_live=coalesce_live, shape_cache=shape_cache)
        super().__init__(forwarder=forwarder, chain=chain, path=path, cache=cache)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", self.path, self.route)

    def check_path(self, request: web.Request) -> None:
        # The router matches the *decoded* path, so /v1/%73hape would arrive here too.
        # Only the exact bytes of the configured route are served.
        raw_path = request.raw_path.partition("?")[0]
        resource = request.match_info.route.resource
        if resource is None or raw_path != resource.canonical:
            raise NotFound("no such endpoint")

    def build(self, request: web.Request) -> UpstreamRequest:
        return UpstreamRequest(
            method=request.method,
            query=pass_through_params(request),
            headers=forwarded_headers(request, FORWARDED_REQUEST_HEADERS),
        )

    def upstream_probe(self) -> tuple[str, URL]:
        return hdrs.METH_GET, electric_health_url(self.forwarder.url)

    def upstream_problem(self, status: int) -> str | None:
        # Electric says 202 while it starts or waits for its replication lock.
        return None if status == 200 else f"Electric's health check answered {status}"

    def passes_error(self, response: web.StreamResponse, body: bytes) -> bytes | None:
        # The client needs a 409 to start again; only Electric's control messages pass.
        if response.status != 409:
            return None
        return body if passes_must_refetch(body) else MUST_REFETCH
