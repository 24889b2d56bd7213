"""The Electric stand-in: upstreams the demo and the tests run the proxy against.

:class:`FakeElectric` speaks Electric's shape HTTP API faithfully enough for the real
``@electric-sql/client`` (``upstream.py`` and the private modules beside it, with a
``where`` evaluator of its own in ``where_eval.py``); :func:`two_tenant_upstream` is the
``todos`` table of two organisations the demo serves; :class:`DurableStreams` is a small
Durable Streams server for the streams route. Nothing here imports pytest: the demo runs on
it without the test dependencies installed.
"""

from __future__ import annotations

from .streams import DurableStreams, StreamRequest
from .tenants import TENANT_ROWS, two_tenant_upstream
from .upstream import Column, FakeElectric, RecordedRequest

__all__ = [
    "TENANT_ROWS",
    "Column",
    "DurableStreams",
    "FakeElectric",
    "RecordedRequest",
    "StreamRequest",
    "two_tenant_upstream",
]
