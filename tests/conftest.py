"""Shared fixtures: the standard chain the product ships for the two-tenant upstream.

Users, tokens, polling, the CLI and real-port serving come from the testing kit
(``electric_proxy.testing``), as plugin authors get them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from pg_cluster import Cluster, private_cluster

from electric_proxy import Credentials, ShapePolicy
from electric_proxy.testing import RunningUpstream, two_users


def standard_chain(upstream: RunningUpstream, **rule: Any) -> list[Any]:
    """Bearer auth, a claim-bound todos policy and secret injection."""
    todos = {"where": "org_id = :org_id", "columns": ["id", "org_id", "title", "done"], **rule}
    return [
        two_users(),
        ShapePolicy(shapes={"todos": todos}),
        Credentials(secret=upstream.secret),
    ]


@pytest.fixture
async def shape_client(proxy_client: Any, electric_upstream: RunningUpstream) -> Any:
    """A proxy with the standard chain, client filters allowed on title and done."""
    return await proxy_client(
        standard_chain(
            electric_upstream, client_where=True, filter_columns={"title": "text", "done": "bool"}
        )
    )


async def send_raw(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client library would send malformed ones) and read the
    answer until the server closes: status, headers (lower-cased names) and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    while head.split(b" ", 2)[1].startswith(b"1"):  # 100 Continue precedes the answer
        head, _, body = body.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One private PostgreSQL cluster for the session; modules make their own databases."""
    with private_cluster() as cluster:
        yield cluster
