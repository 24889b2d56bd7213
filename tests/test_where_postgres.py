"""Combined filters executed by a real PostgreSQL: no other tenant's row, no deleted row.

The unit tests prove the combined text parses to ``server AND client``; this proves what
that means to the database itself, including for break-out attempts and generated filters.
The combined ``where`` is pasted into the statement text exactly as Electric would, and user
values travel only as parameters (PREPARE/EXECUTE with quoted literals).

The cluster is the session's private one (``tests/pg_cluster.py``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_cluster import Cluster

from electric_proxy.where import (
    ServerFilter,
    WhereError,
    check_params,
    combine,
    parse_client_where,
)

TENANT = "a"
COLUMNS = {"id": "int4", "org_id": "text", "title": "text", "deleted_at": "timestamptz"}
SERVER = ServerFilter.compile("org_id = :org_id AND deleted_at IS NULL")

ROWS = [
    (1, "a", "first", None),
    (2, "a", "it's", None),
    (3, "a", "100%", None),
    (4, "a", "under_score", None),
    (5, "a", "gone", "2024-01-01T00:00:00Z"),
    (6, "a", "also gone", "2024-06-01T00:00:00Z"),
    (7, "b", "first", None),
    (8, "b", "secret of b", None),
    (9, "b", "it's", None),
    (10, "b", "100%", None),
    (11, "b", "gone", "2024-01-01T00:00:00Z"),
    (12, None, "no tenant", None),
    (13, "A", "upper-case tenant", None),
    (14, "a ", "padded tenant", None),
    (15, "b", "a", None),
]
VISIBLE = {row[0] for row in ROWS if row[1] == TENANT and row[3] is None}


@pytest.fixture(scope="module")
def postgres(pg_cluster: Cluster) -> Iterator[Any]:
    """A database seeded with two tenants' rows, for this module."""
    with pg_cluster.database("where_postgres") as connection:
        connection.execute(
            "CREATE TABLE todos (id int PRIMARY KEY, org_id text, title text,"
            " deleted_at timestamptz)"
        )
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO todos VALUES (%s, %s, %s, %s)", ROWS)
        yield connection


class Outcome(Counter[str]):
    """Tally of what happened to each client filter, reported at the end of a test."""


def run_filter(connection: Any, text: str, values: Sequence[str], tally: Outcome) -> None:
    """Validate (Electric's whole grammar), combine and execute one filter; nothing may leak."""
    from psycopg import errors, sql

    try:
        client = parse_client_where(text, columns=COLUMNS, leakproof=False)
        client_values = check_params(
            {str(i): v for i, v in enumerate(values, 1)}, needed=client.max_param
        )
    except WhereError:
        tally["rejected by the validator"] += 1
        return
    combined = combine(SERVER, client)
    assert combined is not None
    prepare = "PREPARE q AS SELECT id, org_id, deleted_at FROM todos WHERE " + combined
    arguments = [TENANT, *client_values]
    execute = sql.SQL("EXECUTE q ({})").format(
        sql.SQL(", ").join(sql.Literal(value) for value in arguments)
    )
    try:
        connection.execute(prepare.encode())
    except errors.Error:
        tally["accepted, refused by Postgres at PREPARE"] += 1
        return
    try:
        rows = connection.execute(execute).fetchall()
    except errors.Error:
        tally["accepted, failed at EXECUTE"] += 1
        return
    finally:
        connection.execute("DEALLOCATE q")
    leaked = [row for row in rows if row[1] != TENANT or row[2] is not None]
    assert not leaked, f"{text!r} with {values!r} leaked {leaked} via {combined!r}"
    assert {row[0] for row in rows} <= VISIBLE
    tally["accepted and executed"] += 1


def report(capsys: pytest.CaptureFixture[str], name: str, tally: Outcome) -> None:
    with capsys.disabled():
        summary = ", ".join(f"{count} {what}" for what, count in sorted(tally.items()))
        print(f"\n[{name}] {sum(tally.values())} filters: {summary}")


def assert_table_intact(connection: Any) -> None:
    count = connection.execute("SELECT count(*) FROM todos").fetchone()
    assert count == (len(ROWS),)


def test_server_filter_alone_sees_exactly_the_tenant(postgres: Any) -> None:
    combined = combine(SERVER, None)
    assert combined is not None
    postgres.execute(("PREPARE q AS SELECT id FROM todos WHERE " + combined).encode())
    try:
        rows = postgres.execute("EXECUTE q ('a')").fetchall()
    finally:
        postgres.execute("DEALLOCATE q")
    assert {row[0] for row in rows} == VISIBLE


def test_a_client_filter_narrows_the_result(postgres: Any) -> None:
    client = parse_client_where("title = $1 OR id = $2", columns=COLUMNS)
    combined = combine(SERVER, client)
    assert combined is not None
    postgres.execute(("PREPARE q AS SELECT id FROM todos WHERE " + combined).encode())
    try:
        rows = postgres.execute("EXECUTE q ('a', 'first', '3')").fetchall()
    finally:
        postgres.execute("DEALLOCATE q")
    assert {row[0] for row in rows} == {1, 3}


BREAK_OUTS: list[tuple[str, list[str]]] = [
    ("true) OR (true", []),
    ("1=1) OR (1=1", []),
    ("true", []),
    ("true OR true", []),
    ("org_id = 'b'", []),
    ("org_id = 'b' OR true", []),
    ("true OR org_id = 'b'", []),
    ("org_id <> 'a' OR deleted_at IS NOT NULL", []),
    ("deleted_at IS NOT NULL", []),
    ("NOT (org_id = $1)", ["a"]),
    ("org_id = $1", ["b"]),
    ("org_id = $1 OR org_id = $2", ["a", "b"]),
    ("org_id = $1", ["a' OR '1'='1"]),
    ("org_id IN ('a', 'b') OR id > 0", []),
    ("org_id = ANY(ARRAY['a', 'b'])", []),
    ("org_id IS DISTINCT FROM 'a'", []),
    ("(org_id = 'b') IS NOT FALSE", []),
    ("coalesce(org_id, 'b') = 'b'", []),
    ("lower(org_id) = 'a' OR org_id = 'b'", []),
    ("id BETWEEN 1 AND 100", []),
    ("title LIKE '%'", []),
    ("title = E'\\'' OR true", []),
    ("title = 'x'' OR ''1''=''1'", []),
    ("title = $$x$$ OR (1=1", []),
    ("title = $t$x$t$ OR true", []),
    ("id > 0 -- AND false", []),
    ("id > 0 /* OR true */", []),
    ("id > 0; SELECT * FROM todos", []),
    ("id > 0 UNION SELECT id, org_id, deleted_at FROM todos", []),
    ("id IN (SELECT id FROM todos)", []),
    ("EXISTS (SELECT 1 FROM todos WHERE org_id = 'b')", []),
    ("id = 8 AND 1 / (id - 8) = 0", []),
    ("title::int = 1", []),
    ("'b' = ANY(ARRAY[org_id])", []),
    ("pg_sleep(10) IS NULL", []),
    ("now() > deleted_at", []),
    ("org_id = 'b' ORDER BY id", []),
    ("org_id = 'b' LIMIT 1", []),
    ("todos.org_id = 'b'", []),
    ("org_id = U&'\\0062'", []),
    ("org_id OPERATOR(pg_catalog.=) 'b'", []),
    ("CASE WHEN org_id = 'b' THEN true ELSE true END", []),
    ("(org_id, deleted_at) IS DISTINCT FROM ('a', NULL)", []),
]


def test_break_out_attempts_never_leak(postgres: Any, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Outcome()
    for text, values in BREAK_OUTS:
        run_filter(postgres, text, values, tally)
    assert_table_intact(postgres)
    report(capsys, "break-out attempts", tally)
    assert tally["accepted and executed"] >= 15
    assert tally["rejected by the validator"] >= 15


Fragment = tuple[str, tuple[str, ...]]

text_value = st.sampled_from(
    [
        "a",
        "b",
        "first",
        "it's",
        "100%",
        "%",
        "_",
        "a' OR '1'='1",
        "'; DROP TABLE todos; --",
        "\\",
        "$1",
        "secret of b",
        "",
    ]
)
int_value = st.integers(-5, 20).map(str)
time_value = st.sampled_from(["2000-01-01T00:00:00Z", "2024-03-01T00:00:00Z", "infinity"])


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def operand(
    values: st.SearchStrategy[str], *, numeric: bool = False
) -> st.SearchStrategy[Fragment]:
    """A constant or a parameter of the given kind; parameters carry their value along."""
    constant = values.map(lambda v: (v if numeric else literal(v), ()))
    parameter = values.map(lambda v: ("$?", (v,)))
    return st.one_of(constant, parameter)


def joined(template: str, *parts: Fragment) -> Fragment:
    return template.format(*(text for text, _ in parts)), tuple(
        value for _, values in parts for value in values
    )


comparison = st.sampled_from(["=", "<>", "<", ">", "<=", ">="])
text_column = st.sampled_from(["org_id", "title"])

leaf: st.SearchStrategy[Fragment] = st.one_of(
    st.builds(
        lambda c, op, v: joined(f"{c} {op} {{}}", v),
        text_column,
        comparison,
        operand(text_value),
    ),
    st.builds(
        lambda op, v: joined(f"id {op} {{}}", v), comparison, operand(int_value, numeric=True)
    ),
    st.builds(
        lambda c, neg, vs: joined(
            f"{c} {'NOT ' if neg else ''}IN ({', '.join('{}' for _ in vs)})", *vs
        ),
        text_column,
        st.booleans(),
        st.lists(operand(text_value), min_size=1, max_size=3),
    ),
    st.builds(
        lambda c, op, v: joined(f"{c} {op} {{}}", v),
        text_column,
        st.sampled_from(["LIKE", "ILIKE", "NOT LIKE"]),
        operand(text_value),
    ),
    st.builds(
        lambda a, b: joined("id BETWEEN {} AND {}", a, b),
        operand(int_value, numeric=True),
        operand(int_value, numeric=True),
    ),
    st.builds(
        lambda c, neg: (f"{c} IS {'NOT ' if neg else ''}NULL", ()),
        st.sampled_from(["org_id", "title", "deleted_at"]),
        st.booleans(),
    ),
    st.builds(lambda v: joined("deleted_at > {}::timestamptz", v), operand(time_value)),
    st.builds(lambda v: joined("lower(org_id) = {}", v), operand(text_value)),
    st.builds(lambda v: joined("{} = ANY(ARRAY[org_id, title])", v), operand(text_value)),
    st.builds(lambda v: joined("org_id IS DISTINCT FROM {}", v), operand(text_value)),
    st.sampled_from([("true", ()), ("false", ()), ("NULL IS NULL", ())]),
)

HOSTILE = [
    ") OR (true",
    " OR true",
    " OR org_id = 'b'",
    "; DELETE FROM todos; --",
    "--",
    "/*",
    "$$",
    "'",
    ")",
    "(",
    " UNION SELECT id, org_id, deleted_at FROM todos",
    " OR deleted_at IS NOT NULL",
    ") OR (org_id <> 'a'",
    " ORDER BY 1",
    "\\",
    "E'\\''",
    "$$) OR (1=1",
]


def _tree(children: st.SearchStrategy[Fragment]) -> st.SearchStrategy[Fragment]:
    return st.one_of(
        st.builds(lambda a, b: joined("{} AND {}", a, b), children, children),
        st.builds(lambda a, b: joined("({}) OR ({})", a, b), children, children),
        st.builds(lambda a, b: joined("{} OR {}", a, b), children, children),
        st.builds(lambda a: joined("NOT ({})", a), children),
        st.builds(
            lambda a, h, b: (a[0] + h + b[0], a[1] + b[1]),
            children,
            st.sampled_from(HOSTILE),
            children,
        ),
    )


generated = st.recursive(leaf, _tree, max_leaves=8)


def number(fragment: Fragment) -> tuple[str, list[str]]:
    counter = iter(range(1, 1000))
    return re.sub(r"\$\?", lambda _: f"${next(counter)}", fragment[0]), list(fragment[1])


def test_generated_filters_never_leak(postgres: Any, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Outcome()

    @settings(
        max_examples=800,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(generated.map(number))
    def check(case: tuple[str, list[str]]) -> None:
        text, values = case
        run_filter(postgres, text, values, tally)

    check()
    assert_table_intact(postgres)
    report(capsys, "generated filters", tally)
    assert tally["accepted and executed"] >= 200
    assert tally["rejected by the validator"] >= 20
