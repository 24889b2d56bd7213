"""The stand-ins the fixtures start, on real sockets, with the secrets they demand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aiohttp.test_utils import TestServer

from ..standin import DurableStreams, FakeElectric, two_tenant_upstream

if TYPE_CHECKING:
    from pytest_aiohttp import AiohttpServer

__all__ = [
    "STREAMS_SECRET",
    "UPSTREAM_SECRET",
    "RunningStreams",
    "RunningUpstream",
    "start_electric",
    "start_streams",
]

UPSTREAM_SECRET: Final = "upstream-secret-9f3c1d7e5b2a"
STREAMS_SECRET: Final = "streams-secret-5e1b7c3a9d04"


@dataclass(frozen=True)
class RunningUpstream:
    """A :class:`FakeElectric` being served; ``url`` is its ``/v1/shape`` endpoint."""

    electric: FakeElectric
    server: TestServer
    secret: str

    @property
    def url(self) -> str:
        return str(self.server.make_url("/v1/shape"))


@dataclass(frozen=True)
class RunningStreams:
    """A :class:`DurableStreams` being served; ``url`` is its service prefix."""

    streams: DurableStreams
    server: TestServer
    secret: str

    @property
    def url(self) -> str:
        return str(self.server.make_url(self.streams.prefix))


async def start_electric(
    aiohttp_server: AiohttpServer, **options: float | int | bool
) -> RunningUpstream:
    """The two-tenant ``todos`` upstream demanding :data:`UPSTREAM_SECRET`, with live holds of
    1 s (long-poll) and 2 s (SSE) unless ``options`` say otherwise."""
    electric = two_tenant_upstream(
        UPSTREAM_SECRET, **{"long_poll_timeout": 1.0, "sse_timeout": 2.0, **options}
    )
    # Electric's own access log is not the proxy's; keeping it out lets tests scan the
    # proxy's logs for secrets.
    server = await aiohttp_server(electric.app(), access_log=None)
    return RunningUpstream(electric=electric, server=server, secret=UPSTREAM_SECRET)


async def start_streams(aiohttp_server: AiohttpServer) -> RunningStreams:
    """A Durable Streams service demanding ``Authorization: Bearer`` :data:`STREAMS_SECRET`."""
    streams = DurableStreams(secret=STREAMS_SECRET)
    server = await aiohttp_server(streams.app(), access_log=None)
    return RunningStreams(streams=streams, server=server, secret=STREAMS_SECRET)
