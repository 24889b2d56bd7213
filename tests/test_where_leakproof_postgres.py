"""The leakproof proof, on real PostgreSQL: tenant A's outcome never depends on tenant B's rows.

For every filter the proxy accepts in leakproof mode (hypothesis-generated ordinary filters
plus a hostile list), the outcome for tenant A (its rows, or the error's SQLSTATE) must be
identical in two databases that differ only in whether tenant B's hostile rows exist, under
two server filter shapes (a claim equality and a membership subquery). And, because Postgres
may legally evaluate the client's conjunct first on every row, the client expression alone
is evaluated over the whole table (``SELECT (client) FROM todos``): it must fail with B's
rows present exactly when it fails without them.

How it is executed: ``PREPARE`` with untyped parameters, then ``EXECUTE`` with quoted
literals; each statement is prepared once, so Postgres plans it with the values bound (a
custom plan), in which a parameter is a constant of the type Postgres inferred from its
context. Electric inlines parameters as ``'v'::type`` literals, which are also constants
coerced before any row is read, and infers the same types from the same contexts (the
column compared with, text for a LIKE pattern). A bad value fails the same way in both: at
the start, for every tenant alike.

The control runs the hostile list with ``leakproof=False`` and must find leaks, so this
test can fail.
"""

from __future__ import annotations

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

COLUMNS = {
    "id": "int4",
    "org_id": "text",
    "title": "text",
    "n": "int8",
    "d": "date",
    "ts": "timestamptz",
    "f": "float8",
    "done": "bool",
    "tags": "text[]",
}
TABLE = (
    "CREATE TABLE todos (id int4 PRIMARY KEY, org_id text, title text, n int8, d date,"
    " ts timestamptz, f float8, done bool, tags text[])"
)
A_ROWS = [
    (1, "a", "first", 5, "2024-01-01", "2024-01-01T00:00Z", 1.5, False, ["x", "y"]),
    (2, "a", "plan the launch", -3, "2020-02-29", None, 0.0, True, []),
    (3, "a", None, None, None, None, None, None, None),
    (4, "a", "100%_done", 2147483647, "1999-12-31", "1999-12-31T23:59Z", -2.5, False, ["a\\"]),
]
# Tenant B's rows are hostile: a title that is a LIKE trap, NULLs, extreme integers and floats,
# far and infinite dates.
B_ROWS = [
    (11, "b", "secret\\", 2**63 - 1, "5874897-12-31", "294276-12-31T23:59Z", 1e308, True,
     ["secret\\"]),
    (12, "b", "secret plan", -(2**63), "4713-01-01 BC", "-infinity", float("nan"), False, None),
    (13, "b", None, None, None, None, None, None, None),
    (14, "b", "\\\\", 0, "infinity", "infinity", float("-inf"), None, ["%", "\\"]),
    (15, "b", "zzz", 2147483648, "2024-01-01", "2024-01-01T00:00Z", 0.0, True, []),
]  # fmt: skip
SERVERS = {
    "claim": (ServerFilter.compile("org_id = :org_id"), "a"),
    "membership": (
        ServerFilter.compile("org_id IN (SELECT org_id FROM memberships WHERE user_id = :sub)"),
        "alice",
    ),
}
WORLDS = ("with_b", "without_b")


@pytest.fixture(scope="module")
def worlds(pg_cluster: Cluster) -> Iterator[Any]:
    """Two schemas, ``with_b`` and ``without_b``, identical but for tenant B's rows."""
    with pg_cluster.database("leakproof_differential") as connection:
        for world in WORLDS:
            connection.execute(f"CREATE SCHEMA {world}")
            connection.execute(f"SET search_path = {world}")
            connection.execute(TABLE)
            connection.execute("CREATE TABLE memberships (user_id text, org_id text)")
            rows = A_ROWS + (B_ROWS if world == "with_b" else [])
            members = [("alice", "a")] + ([("bob", "b")] if world == "with_b" else [])
            with connection.cursor() as cursor:
                cursor.executemany(f"INSERT INTO todos VALUES ({', '.join(['%s'] * 9)})", rows)
                cursor.executemany("INSERT INTO memberships VALUES (%s, %s)", members)
            connection.execute("ANALYZE")
        yield connection


def outcome(connection: Any, world: str, statement: str, values: Sequence[str]) -> str:
    """Rows (as text) or the SQLSTATE of the error, of one statement in one world."""
    from psycopg import errors, sql

    connection.execute(f"SET search_path = {world}")
    try:
        connection.execute(("PREPARE q AS " + statement).encode())
    except errors.Error as exc:
        return f"error at PREPARE {exc.sqlstate}"
    try:
        if values:
            arguments = sql.SQL(", ").join(sql.Literal(v) for v in values)
            execute = sql.SQL("EXECUTE q ({})").format(arguments)
        else:
            execute = sql.SQL("EXECUTE q")
        rows = connection.execute(execute).fetchall()
    except errors.Error as exc:
        return f"error {exc.sqlstate}"
    finally:
        connection.execute("DEALLOCATE q")
    return repr(sorted(rows, key=repr))


class Tally(Counter[str]):
    """What happened to the corpus, printed with -s and asserted at the end."""


def differential(
    connection: Any, text: str, values: Sequence[str], tally: Tally, *, leakproof: bool = True
) -> list[str]:
    """Run one filter everywhere; return the differences found (empty: no leak)."""
    try:
        client = parse_client_where(text, columns=COLUMNS, leakproof=leakproof)
        client_values = check_params(
            {str(i): v for i, v in enumerate(values, 1)},
            needed=client.max_param,
            patterns=client.like_params,
        )
    except WhereError:
        tally["refused"] += 1
        return []
    tally["accepted"] += 1
    leaks = []
    for name, (server, claim) in SERVERS.items():
        combined = combine(server, client)
        statement = f"SELECT id FROM todos WHERE {combined}"
        seen = {w: outcome(connection, w, statement, [claim, *client_values]) for w in WORLDS}
        if seen["with_b"] != seen["without_b"]:
            leaks.append(f"{name}: {text!r} {values!r}: {seen}")
        tally["executions: error" if "error" in seen["with_b"] else "executions: rows"] += 1
    everywhere = f"SELECT ({client.sql}) IS NULL FROM todos"
    seen = {w: outcome(connection, w, everywhere, client_values) for w in WORLDS}
    if ("error" in seen["with_b"]) != ("error" in seen["without_b"]):
        leaks.append(f"every row: {text!r} {values!r}: {seen}")
    tally["filters that leak"] += bool(leaks)
    return leaks


Case = tuple[str, list[str]]

HOSTILE: list[Case] = [
    ("title LIKE 'secret\\'", []),
    ("title LIKE 'secr\\'", []),
    ("title ILIKE 'SECRET\\'", []),
    ("title NOT LIKE 'sec\\'", []),
    ("title NOT ILIKE 's\\'", []),
    ("like(title, 'secret\\')", []),
    ("ilike(title, 'se\\')", []),
    ("title LIKE ANY(ARRAY['zz', 'secr\\'])", []),
    ("title LIKE $1", ["secret\\"]),
    ("title ILIKE $1 OR id = 1", ["S\\"]),
    ("title LIKE ANY(ARRAY[$1, 'x'])", ["se\\"]),
    ("title LIKE $1", ["secret\\\\"]),
    ("title LIKE '%\\\\'", []),
    ("d < '9999-01-01' OR d IS NULL OR 'x'::text::date > d", []),
    ("'x'::text::date > d OR id = 1", []),
    ("$1::date > d OR id = 1", ["x"]),
    ("ts > '2020-01-01'::date OR id = 1", []),
    ("d > '2020-01-01'::timestamptz", []),
    ("n + 1 > 0", []),
    ("n * 4 > 0", []),
    ("n::int4 = 0", []),
    ("1 / (n - 5) = 0", []),
    ("f * 1e10 > 0", []),
    ("id = $1 + 1", ["2147483647"]),
    ("lower(title) = 'x'", []),
    ("title::int4 = 1 OR id = 1", []),
    ("tags @> ARRAY['secret\\']", []),
    ("tags[1] LIKE 'secret\\'", []),
    ("n = 1.5", []),
    ("n IN (1, 9223372036854775807)", []),
    ("d = 'infinity' OR ts < '-infinity'", []),
    ("n = $1", ["9223372036854775808"]),
    ("d > $1", ["not a date"]),
    ("title = ANY($1)", ["{secret\\\\,a}"]),
    ("tags = $1", ["{a}"]),
    ("n BETWEEN $1 AND 9223372036854775807", ["-9223372036854775808"]),
    ("f > 'NaN' OR f = '-Infinity'", []),
    ("coalesce(title, 'secret\\') = $1", ["secret\\"]),
    ("int8(id) > 0 AND id::int8 < 5", []),
    ("'secret' = ANY(tags) OR tags[2] IS NULL", []),
    ("d > '9999-01-01' AND 'x'::text::date > d", []),
    ("d > '9999-01-01' AND n + 1 > 0", []),
    ("title = $1 OR n = 9223372036854775807", ["secret\\"]),
    ("ts >= $1 AND f <> 'NaN'", ["294276-12-31T23:59Z"]),
]


def test_hostile_filters_leak_nothing(worlds: Any, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally()
    leaks = [leak for text, values in HOSTILE for leak in differential(worlds, text, values, tally)]
    with capsys.disabled():
        print(f"\n[leakproof, hostile] {len(HOSTILE)} filters: {dict(tally)}")
    assert leaks == []
    assert tally["accepted"] >= 12
    assert tally["refused"] >= 20


def test_control_the_old_grammar_leaks(worlds: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Without leakproof mode the same list leaks: this test can see a leak."""
    tally = Tally()
    leaks = [
        leak
        for text, values in HOSTILE
        for leak in differential(worlds, text, values, tally, leakproof=False)
    ]
    with capsys.disabled():
        print(f"\n[control, leakproof=False] {len(HOSTILE)} filters: {dict(tally)}")
    assert any("title LIKE 'secr" in leak for leak in leaks), leaks
    assert any("::text::date" in leak for leak in leaks), leaks
    assert any("n + 1 > 0" in leak for leak in leaks), leaks
    assert tally["filters that leak"] >= 10


def quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


PATTERNS = ["secret\\", "secr\\", "%\\", "sec%", "pl%", "a\\\\", "%", "_%", "100\\%%", "\\"]
TEXTS = ["first", "secret", "secret\\", "zzz", "", "it's"]
INTS = ["0", "5", "-3", "2147483647", "2147483648", "9223372036854775807", "-9223372036854775808"]
DATES = ["2024-01-01", "infinity", "1999-12-31", "5874897-12-31"]
TIMES = ["2024-01-01T00:00Z", "-infinity", "294276-12-31T23:59Z"]
FLOATS = ["1.5", "0", "NaN", "1e308", "-Infinity"]


def operand(values: list[str], *, bare: bool = False) -> st.SearchStrategy[Case]:
    """A literal (quoted, or bare for numbers) or a parameter carrying its value."""
    literal = st.sampled_from(values).map(lambda v: (v if bare else quoted(v), []))
    parameter = st.sampled_from(values).map(lambda v: ("$?", [v]))
    return st.one_of(literal, parameter)


def joined(template: str, *parts: Case) -> Case:
    return template.format(*(text for text, _ in parts)), [v for _, vs in parts for v in vs]


comparison = st.sampled_from(["=", "<>", "<", "<=", ">", ">="])
typed_operands = {
    "title": operand(TEXTS),
    "n": st.one_of(operand(INTS), operand(INTS[:4], bare=True)),
    "id": st.one_of(operand(INTS[:4]), operand(INTS[:4], bare=True)),
    "d": operand(DATES),
    "ts": operand(TIMES),
    "f": st.one_of(operand(FLOATS), operand(["1.5", "2"], bare=True)),
}


def _compare(column: str) -> st.SearchStrategy[Case]:
    return st.builds(
        lambda op, v: joined(f"{column} {op} {{}}", v), comparison, typed_operands[column]
    )


leaf: st.SearchStrategy[Case] = st.one_of(
    *(_compare(column) for column in typed_operands),
    st.builds(
        lambda op, p: joined(f"title {op} {{}}", p),
        st.sampled_from(["LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE"]),
        operand(PATTERNS),
    ),
    st.builds(lambda p: joined("like(title, {})", p), operand(PATTERNS)),
    st.builds(
        lambda a, b: joined("title LIKE ANY(ARRAY[{}, {}])", a, b),
        operand(PATTERNS),
        operand(PATTERNS),
    ),
    st.builds(
        lambda vs: joined(f"n IN ({', '.join('{}' for _ in vs)})", *vs),
        st.lists(typed_operands["n"], min_size=1, max_size=3),
    ),
    st.builds(lambda a, b: joined("d BETWEEN {} AND {}", a, b), operand(DATES), operand(DATES)),
    st.builds(lambda v: joined("{} = ANY(tags)", v), operand(TEXTS)),
    st.builds(lambda v: joined("title IS DISTINCT FROM {}", v), operand(TEXTS)),
    st.builds(
        lambda c, neg: (f"{c} IS {'NOT ' if neg else ''}NULL", []),
        st.sampled_from(list(COLUMNS)),
        st.booleans(),
    ),
    st.sampled_from(
        [
            ("done", []),
            ("done IS NOT TRUE", []),
            ("n + 1 > 0", []),
            ("n::int4 > 0", []),
            ("'x'::text::date > d", []),
            ("lower(title) = 'secret'", []),
            ("f * 2 > 0", []),
            ("tags[1] = 'x'", []),
            ("d > '2024-01-01'::date", []),
        ]
    ),
)


def _tree(children: st.SearchStrategy[Case]) -> st.SearchStrategy[Case]:
    return st.one_of(
        st.builds(lambda a, b: joined("{} AND {}", a, b), children, children),
        st.builds(lambda a, b: joined("({}) OR ({})", a, b), children, children),
        st.builds(lambda a: joined("NOT ({})", a), children),
    )


def numbered(case: Case) -> Case:
    text, values = case
    for number in range(1, len(values) + 1):
        text = text.replace("$?", f"${number}", 1)
    return text, values


def test_generated_filters_leak_nothing(worlds: Any, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally()
    leaks: list[str] = []

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(st.recursive(leaf, _tree, max_leaves=4).map(numbered))
    def check(case: Case) -> None:
        tally["generated"] += 1
        leaks.extend(differential(worlds, *case, tally))

    check()
    with capsys.disabled():
        print(f"\n[leakproof, generated] {dict(tally)}")
    assert leaks == []
    assert tally["accepted"] >= 100
    assert tally["refused"] >= 30
