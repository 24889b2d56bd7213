"""The ``opentelemetry`` step: one SERVER span per proxied request, ended with its body.

A proxied response is returned to aiohttp before its body exists; the body of a live
long-poll or an SSE stream then flows for up to a minute. The span therefore does not end
when the chain returns but when the request's task does, which is after aiohttp has written
the last byte (or has given up). How the body ended comes from
:meth:`~electric_proxy.UpstreamResponse.add_done_callback`; a task that was cancelled (the
client went away, or the server is stopping) ends the span as an error.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import Field, PrivateAttr

from electric_proxy import (
    PRINCIPAL,
    REQUEST_ID,
    STREAM_PATH,
    UPSTREAM,
    Handler,
    Step,
    UpstreamResponse,
)

from . import _attributes as attr
from ._client import TRACE_HEADERS, upstream_trace_config

__all__ = ["OpenTelemetry"]

try:
    _VERSION = version("electric-proxy-otel")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    _VERSION = "0"

_CANCELLED = "cancelled before the response was complete (client gone or server stopping)"


class _ServerSpan:
    """One request's SERVER span and what is known of its outcome so far."""

    __slots__ = ("_error", "_record_principal", "_request", "_status", "span")

    def __init__(self, span: Span, request: web.Request, record_principal: bool) -> None:
        self.span = span
        self._request = request
        self._record_principal = record_principal
        self._status: int | None = None
        self._error: BaseException | None = None

    def responded(self, response: web.StreamResponse) -> None:
        self._status = response.status
        if isinstance(response, UpstreamResponse):
            response.add_done_callback(self.body_ended)

    def failed(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error

    def body_ended(self, error: BaseException | None) -> None:
        if error is not None:
            self.failed(error)

    def task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self.failed(asyncio.CancelledError())
        elif (error := task.exception()) is not None:
            self.failed(error)
        self.end()

    def end(self) -> None:
        span, request = self.span, self._request
        request_id = request.get(REQUEST_ID)
        if request_id is not None:
            span.set_attribute(attr.REQUEST_ID, request_id)
        principal = request.get(PRINCIPAL)
        if self._record_principal and principal is not None:
            span.set_attribute(attr.ENDUSER_ID, principal.id)
        if self._status is not None:
            span.set_attribute(attr.HTTP_RESPONSE_STATUS_CODE, self._status)
        if self._error is not None:
            span.set_attribute(attr.ERROR_TYPE, attr.error_type(self._error))
            cancelled = isinstance(self._error, asyncio.CancelledError)
            span.set_status(Status(StatusCode.ERROR, _CANCELLED if cancelled else None))
        elif self._status is not None and self._status >= 500:
            span.set_attribute(attr.ERROR_TYPE, str(self._status))
            span.set_status(Status(StatusCode.ERROR))
        span.end()


class OpenTelemetry(Step):
    """Trace each request through the proxy, and the proxy's call to Electric.

    Put it first in the chain, so that every answer (a CORS preflight, a 401, a 403) gets a
    span. Spans go to ``tracer_provider`` when one is given in code, otherwise to the global
    provider that the application (or ``opentelemetry-instrument``) set up.
    """

    tracer_name: str = Field(
        "electric_proxy_otel",
        min_length=1,
        description="Instrumentation scope of the spans; service.name belongs to the provider",
    )
    trust_incoming_context: bool = Field(
        False,
        description="Continue the client's W3C traceparent; otherwise start a new trace "
        "that links to it. Trust it only when every caller is yours",
    )
    record_principal: bool = Field(
        False, description="Record the authenticated principal's id as enduser.id"
    )
    tracer_provider: TracerProvider | None = Field(None, exclude=True, repr=False)

    _tracer: Tracer = PrivateAttr()
    _propagator: TraceContextTextMapPropagator = PrivateAttr()
    _trace_config: aiohttp.TraceConfig = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._tracer = trace.get_tracer(
            self.tracer_name, _VERSION, tracer_provider=self.tracer_provider
        )
        # W3C trace context only: baggage from a browser is not forwarded, nor read.
        self._propagator = TraceContextTextMapPropagator()
        self._trace_config = upstream_trace_config(self._tracer, self._propagator)

    def upstream_trace_configs(self) -> tuple[aiohttp.TraceConfig]:
        return (self._trace_config,)

    def _parent(self, request: web.Request) -> tuple[Context, list[Link] | None]:
        incoming = self._propagator.extract(request.headers)
        if self.trust_incoming_context:
            return incoming, None
        remote = trace.get_current_span(incoming).get_span_context()
        return Context(), [Link(remote)] if remote.is_valid else None

    def _start(self, request: web.Request) -> Span:
        method, attributes = attr.method_attributes(request.method)
        attributes[attr.URL_PATH] = request.raw_path.partition("?")[0]
        attributes[attr.URL_SCHEME] = request.scheme
        major, minor = request.version
        attributes[attr.NETWORK_PROTOCOL_VERSION] = f"{major}.{minor}"
        resource = request.match_info.route.resource
        name = method
        if resource is not None:
            attributes[attr.HTTP_ROUTE] = resource.canonical
            name = f"{method} {resource.canonical}"
        if STREAM_PATH not in request:
            attributes.update(attr.shape_attributes(request.query))
        parent, links = self._parent(request)
        return self._tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes, links=links
        )

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        server = _ServerSpan(self._start(request), request, self.record_principal)
        upstream_headers = request[UPSTREAM].headers
        for header in TRACE_HEADERS:
            upstream_headers.popall(header, None)
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(server.task_done)
        try:
            with trace.use_span(server.span, record_exception=False, set_status_on_exception=False):
                response = await handler(request)
        except web.HTTPException as exc:
            server.responded(exc)  # aiohttp answers with it: a response, not a failure
            raise
        except BaseException as exc:
            server.failed(exc)
            raise
        else:
            server.responded(response)
            return response
        finally:
            if task is None:  # driven outside a task: the body's end cannot be observed
                server.end()
