"""A faithful stand-in for Electric and pytest fixtures, for this project and plugin authors.

With ``electric-proxy`` installed, pytest loads the fixtures automatically::

    async def test_my_step(electric_upstream, proxy_client):
        client = await proxy_client([MyAuth(), ShapePolicy(...), Credentials(...)])
        resp = await client.get("/v1/shape", params={"offset": "-1"})
"""

from __future__ import annotations

from .upstream import Column, FakeElectric, RecordedRequest

__all__ = ["TENANT_ROWS", "Column", "FakeElectric", "RecordedRequest", "two_tenant_upstream"]

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
