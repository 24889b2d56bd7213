"""OpenTelemetry tracing for electric-proxy.

Once this distribution is installed, a config turns it on like a built-in step::

    [[chain]]
    use = "opentelemetry"            # first, so every answer gets a span
    # trust_incoming_context = false
    # record_principal = false

Each request becomes a SERVER span named after its route (``GET /v1/shape``) that lasts
until the body has been sent, long-polls and SSE included; the call to Electric is its
CLIENT child, and Electric receives that child's ``traceparent``. Only the OpenTelemetry
API is used: the application chooses the SDK, the sampler and the exporter.
"""

from __future__ import annotations

from ._step import OpenTelemetry

__all__ = ["OpenTelemetry"]
