"""What the plugin's tests share: an in-memory span recorder and a standard shape chain.

Each test gets its own ``TracerProvider`` (handed to the step), so no test touches the global
provider and no span leaks from one test into another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from electric_proxy_otel import OpenTelemetry
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from electric_proxy import Credentials, ShapePolicy
from electric_proxy.testing import RunningUpstream, eventually, two_users


def shape_chain(upstream: RunningUpstream, **rule: Any) -> list[Any]:
    """Bearer auth, a claim-bound todos policy and secret injection (no tracing step)."""
    todos = {"where": "org_id = :org_id", "columns": ["id", "org_id", "title", "done"], **rule}
    return [
        two_users(),
        ShapePolicy(shapes={"todos": todos}),
        Credentials(secret=upstream.secret),
    ]


def traceparent(span: ReadableSpan) -> str:
    """The W3C header that carries ``span`` as the parent."""
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


class Recorder:
    """A provider of its own with an in-memory exporter; spans appear as they end."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def step(self, **options: Any) -> OpenTelemetry:
        return OpenTelemetry(tracer_provider=self.provider, **options)

    def finished(self, kind: SpanKind | None = None) -> list[ReadableSpan]:
        spans = self.exporter.get_finished_spans()
        return [s for s in spans if kind is None or s.kind == kind]

    async def wait(self, kind: SpanKind, count: int = 1, within: float = 5.0) -> list[ReadableSpan]:
        """The finished spans of ``kind`` once there are ``count``: a server span ends only
        after its response's last byte, which can be just after the client has read it."""
        await eventually(
            lambda: len(self.finished(kind)) >= count,
            within=within,
            message=lambda: f"{count} {kind.name} span(s) expected, got {self.finished(kind)}",
        )
        return self.finished(kind)

    async def one(self, kind: SpanKind) -> ReadableSpan:
        spans = await self.wait(kind)
        assert len(spans) == 1, spans
        return spans[0]


def dumped(spans: Sequence[ReadableSpan]) -> str:
    """Everything the exporter would ship: names, attributes, events, links, status."""
    return "\n".join(span.to_json() for span in spans)
