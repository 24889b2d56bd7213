"""Mount a proxied shape endpoint: its exact route, its chain and its upstream pool.

Two ways in, both a few lines for the user::

    proxy = ShapeProxy(upstream="http://electric:3000/v1/shape", chain=[...])
    proxy.setup(app)                        # a route on the user's own app
    app.add_subapp("/electric", proxy.app())  # or a sub-app under a prefix
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import hdrs, web
from multidict import CIMultiDict

from .chain import UPSTREAM, Handler, Middleware, Step, UpstreamRequest, compose
from .errors import MethodNotAllowed, NotFound
from .forward import Forwarder, UpstreamSettings
from .logs import bind_request_id
from .protocol import FORWARDED_REQUEST_HEADERS, SHAPE_METHODS

__all__ = ["ShapeProxy"]

_ALLOW = ", ".join(sorted(SHAPE_METHODS))


class ShapeProxy:
    """One shape endpoint in front of one Electric.

    The chain runs in the given order for every request on ``path``; nothing else in the
    host application is affected.
    """

    def __init__(
        self,
        *,
        upstream: str | UpstreamSettings,
        chain: Sequence[Middleware] = (),
        path: str = "/v1/shape",
    ) -> None:
        if not path.startswith("/") or (path.endswith("/") and path != "/"):
            raise ValueError(f"path must start with '/' and not end with one: {path!r}")
        settings = (
            upstream if isinstance(upstream, UpstreamSettings) else UpstreamSettings(url=upstream)
        )
        self.path = path
        self.forwarder = Forwarder(settings)
        self.steps: tuple[Middleware, ...] = tuple(chain)
        self._handler: Handler = compose(self.steps, self.forwarder)

    def setup(self, app: web.Application) -> None:
        """Add the route and the upstream session's lifecycle to ``app``."""
        app.router.add_route("*", self.path, self._handle)
        app.cleanup_ctx.append(self.forwarder.session_ctx)
        for step in self.steps:
            if isinstance(step, Step) and step.holds_resources():
                app.cleanup_ctx.append(step.cleanup_ctx)

    def app(self) -> web.Application:
        """A fresh application holding only this endpoint (standalone or as a sub-app)."""
        app = web.Application()
        self.setup(app)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
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
        request[UPSTREAM] = UpstreamRequest(
            method=request.method,
            headers=CIMultiDict(
                (k, v) for k, v in request.headers.items() if k.lower() in FORWARDED_REQUEST_HEADERS
            ),
        )
        return await self._handler(request)
