"""A faithful stand-in for Electric and pytest fixtures, for this project and plugin authors.

With ``electric-proxy`` installed, pytest loads the fixtures automatically::

    async def test_my_step(electric_upstream, proxy_client):
        client = await proxy_client([MyAuth(), ShapePolicy(...), Credentials(...)])
        resp = await client.get("/v1/shape", params={"offset": "-1"})
"""

from __future__ import annotations

import os
from typing import NoReturn

from .upstream import Column, FakeElectric, RecordedRequest

__all__ = [
    "TENANT_ROWS",
    "Column",
    "FakeElectric",
    "RecordedRequest",
    "two_tenant_upstream",
    "unavailable",
]

TENANT_ROWS = (
    {"id": 1, "org_id": "acme", "title": "Ship the proxy", "done": False},
    {"id": 2, "org_id": "acme", "title": "Write the threat model", "done": True},
    {"id": 3, "org_id": "globex", "title": "Plan the launch", "done": False},
    {"id": 4, "org_id": "globex", "title": "Hire a designer", "done": False},
)


def two_tenant_upstream(secret: str | None = None, **options: float | int | bool) -> FakeElectric:
    """A ``todos`` table shared by two organisations, ``acme`` and ``globex``."""
    upstream = FakeElectric(secret=secret, **options)  # type: ignore[arg-type]
    upstream.add_table(
        "todos",
        [
            Column("id", "int8", primary_key=True, not_null=True),
            Column("org_id", "text", not_null=True),
            Column("title", "text"),
            Column("done", "bool"),
        ],
        TENANT_ROWS,
    )
    return upstream


def unavailable(reason: str) -> NoReturn:
    """A test's real prerequisite (a server, a browser) is missing: fail under CI, else skip.

    CI installs every prerequisite, so there a missing one is a broken set-up, never a pass.
    """
    import pytest  # here, not at the top: the demo uses this package without pytest installed

    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
