"""The upstream call as a CLIENT span, through aiohttp's client tracing hooks.

The hooks run in the task that sends the request, so the span's parent is whatever span is
current there: the proxy's SERVER span, which the step makes current while the chain runs.
A coalesced live request runs in a task started by its first waiter and so belongs to that
waiter's trace.

The ``traceparent`` of the CLIENT span is written into the headers aiohttp is about to send,
after the proxy's allow-listed set was built, so Electric continues the proxy's trace. Any
``traceparent``/``tracestate`` already there is replaced, never passed on beside it.

The span ends when the response headers arrive (or the request fails), as HTTP client spans
do; the body's streaming time belongs to the SERVER span.
"""

from __future__ import annotations

from types import SimpleNamespace

import aiohttp
from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from ._attributes import (
    ERROR_TYPE,
    HTTP_RESPONSE_STATUS_CODE,
    NETWORK_PROTOCOL_VERSION,
    error_type,
    method_attributes,
    upstream_attributes,
)

__all__ = ["TRACE_HEADERS", "upstream_trace_config"]

#: The W3C trace-context headers: the proxy writes its own, a client's never pass through.
TRACE_HEADERS = ("traceparent", "tracestate")


def _span_of(ctx: SimpleNamespace) -> Span | None:
    span: Span | None = getattr(ctx, "electric_proxy_span", None)
    return span


def upstream_trace_config(tracer: Tracer, propagator: TextMapPropagator) -> aiohttp.TraceConfig:
    """A ``TraceConfig`` that records each upstream request as a CLIENT span."""

    async def on_start(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        name, attributes = method_attributes(params.method)
        attributes.update(upstream_attributes(params.url))
        span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        ctx.electric_proxy_span = span
        for header in TRACE_HEADERS:
            params.headers.popall(header, None)
        propagator.inject(params.headers, context=trace.set_span_in_context(span))

    async def on_end(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        span = _span_of(ctx)
        if span is None:
            return
        status = params.response.status
        version = params.response.version
        span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
        if version is not None:
            span.set_attribute(NETWORK_PROTOCOL_VERSION, f"{version.major}.{version.minor}")
        if status >= 400:
            span.set_attribute(ERROR_TYPE, str(status))
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    async def on_exception(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        span = _span_of(ctx)
        if span is None:
            return
        # No description and no exception event: aiohttp's messages can quote the full URL,
        # query and secret included.
        span.set_attribute(ERROR_TYPE, error_type(params.exception))
        span.set_status(Status(StatusCode.ERROR))
        span.end()

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_start)
    config.on_request_end.append(on_end)
    config.on_request_exception.append(on_exception)
    return config
