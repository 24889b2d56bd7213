"""The two-organisation ``todos`` table that the demo serves and the fixtures start."""

from __future__ import annotations

from .upstream import Column, FakeElectric

__all__ = ["TENANT_ROWS", "two_tenant_upstream"]

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
