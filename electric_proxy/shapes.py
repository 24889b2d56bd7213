"""The shape endpoint: one Electric ``/v1/shape`` behind its exact route, its chain and its pool.

Two ways in, both a few lines for the user::

    proxy = ShapeProxy(upstream="http://electric:3000/v1/shape", chain=[...])
    proxy.setup(app)                          # a route on the user's own app
    app.add_subapp("/electric", proxy.app())  # or a sub-app under a prefix
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import hdrs, web
from yarl import URL

from .caching import CacheMode
from .chain import Middleware, UpstreamRequest, pass_through_params
from .endpoint import Endpoint, EndpointObserver, forwarded_headers
from .errors import NotFound
from .forward import Forwarder, UpstreamSettings
from .protocol import ELECTRIC_EXPOSED_HEADERS, FORWARDED_REQUEST_HEADERS, SHAPE_METHODS
from .shape_cache import DEFAULT_SHAPE_CACHE_BYTES, ShapeCache
from .upstream_errors import passes_must_refetch

__all__ = ["MUST_REFETCH", "ShapeProxy", "electric_health_url"]


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
        observers: Sequence[EndpointObserver] = (),
        shape_cache_bytes: int = DEFAULT_SHAPE_CACHE_BYTES,
    ) -> None:
        if shape_cache_bytes < 0:
            raise ValueError("shape_cache_bytes must be 0 (off) or more")
        settings = UpstreamSettings.of(upstream, bare_origin_path="/v1/shape")
        shape_cache = ShapeCache(shape_cache_bytes) if shape_cache_bytes else None
        forwarder = Forwarder(settings, coalesce_live=coalesce_live, shape_cache=shape_cache)
        super().__init__(
            forwarder=forwarder, chain=chain, path=path, cache=cache, observers=observers
        )

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
