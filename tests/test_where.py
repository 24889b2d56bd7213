"""Tests for electric_proxy.where: break-out attempts, placeholders, combination, properties.

The property tests re-parse every combined filter with pglast directly, independently of the
module's own round-trip proof, and check that the server filter is intact and ANDed with
the client's at the root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pglast import ast, parse_sql
from pglast.enums import BoolExprType
from pglast.stream import RawStream

from electric_proxy.where import (
    DEFAULT_LIMITS,
    ClientFilter,
    Limits,
    ServerFilter,
    WhereError,
    check_params,
    combine,
    parse_client_where,
    parse_order_by,
)

COLUMNS = {
    "id": "int4",
    "org_id": "text",
    "title": "text",
    "done": "bool",
    "tags": "text[]",
    "created_at": "timestamptz",
    "n": "int8",
    "Title": "text",
}
SERVER_TEXT = "org_id = :org_id AND deleted_at IS NULL"


def reject(text: str, *, columns: Any = COLUMNS, **kwargs: Any) -> WhereError:
    with pytest.raises(WhereError) as info:
        parse_client_where(text, columns=columns, **kwargs)
    return info.value


def where_of(sql: str) -> Any:
    statements = parse_sql("SELECT 1 WHERE " + sql)
    assert len(statements) == 1
    statement: Any = statements[0].stmt
    return statement.whereClause


def params_in(node: Any) -> set[int]:
    found: set[int] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, tuple):
            stack.extend(current)
        elif isinstance(current, ast.Node):
            if isinstance(current, ast.ParamRef):
                found.add(current.number or 0)
            stack.extend(getattr(current, name) for name in current)
    return found


def shifted(node: Any, by: int) -> Any:
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, tuple):
            stack.extend(current)
        elif isinstance(current, ast.Node):
            if isinstance(current, ast.ParamRef):
                current.number = (current.number or 0) + by
            stack.extend(getattr(current, name) for name in current)
    return node


# --------------------------------------------------------------------------------------
# Break-out attempts and other refusals: reason, field and position


BREAK_OUTS = [
    ("true) OR (true", 'syntax error at or near ")"', 4),
    ("1=1) OR (1=1", 'syntax error at or near ")"', 3),
    ("id = 1 -- comment", "comments are not allowed", 7),
    ("id = 1 /* */ OR true", "comments are not allowed", 7),
    ("id = 1 /* unterminated", "unterminated /* comment", 7),
    ("title = $$($$) OR (1=1", "dollar-quoted strings are not allowed", 8),
    ("title = $t$x$t$", "dollar-quoted strings are not allowed", 8),
    ("title = $$x", "unterminated dollar-quoted string", 8),
    ("title = 'x", "unterminated quoted string", 8),
    ("title = 'x'')", "unterminated quoted string", 8),
    ("id = 1; DROP TABLE t", "';' is not allowed", 6),
    ("id = 1 UNION SELECT 1", "UNION/INTERSECT/EXCEPT is not allowed", 7),
    ("id = 1 EXCEPT SELECT 1", "UNION/INTERSECT/EXCEPT is not allowed", 7),
    ("id IN (SELECT id FROM t)", "subqueries are not allowed", 3),
    ("EXISTS (SELECT 1)", "subqueries are not allowed", 0),
    ("id = (SELECT 1)", "subqueries are not allowed", 5),
    ("id = ANY(SELECT 1)", "subqueries are not allowed", 3),
    ("pg_sleep(1) IS NULL", "function pg_sleep() is not allowed", 0),
    ("now() > created_at", "function now() is not allowed", 0),
    ("CURRENT_TIMESTAMP > created_at", "CURRENT_DATE, CURRENT_USER and similar", 0),
    ("id = 1 ORDER BY id", "ORDER BY is not allowed", 7),
    ("id = 1 LIMIT 1", "LIMIT is not allowed", 7),
    ("id = 1 GROUP BY id", "GROUP BY is not allowed", 7),
    ("id = 1 HAVING true", "HAVING is not allowed", 7),
    ("id = 1 FOR UPDATE", "FOR UPDATE/SHARE is not allowed", 7),
    ("id = 1 WINDOW w AS ()", "WINDOW is not allowed", 7),
    ("t.id = 1", "qualified column names are not allowed", 0),
    ("public.t.id = 1", "qualified column names are not allowed", 0),
    ("t.* IS NULL", "'*' is not allowed", 0),
    ("secret = 1", 'column "secret" is not allowed', 0),
    ('"ID" = 1', 'column "ID" is not allowed', 0),
    ("id OPERATOR(pg_catalog.=) 1", "schema-qualified operators", 3),
    ("CASE WHEN done THEN true END", "CASE expressions are not allowed", 0),
    ("title ~ 'a.*'", 'operator "~" is not allowed', 6),
    ("title ->> 'k' = 'v'", 'operator "->>" is not allowed', 6),
    ("title SIMILAR TO 'x'", "SIMILAR TO is not allowed", 6),
    ("NULLIF(id, 1) = 1", "NULLIF is not allowed", 0),
    ("title LIKE 'x' ESCAPE '!'", "LIKE ... ESCAPE is not allowed", 6),
    ("created_at AT TIME ZONE 'UTC' > '2020-01-01'", "AT TIME ZONE is not allowed", 11),
    ("pg_catalog.lower(title) = 'x'", "schema-qualified function pg_catalog.lower()", 0),
    ("count(*) > 1", "function count() is not allowed", 0),
    ("lower(DISTINCT title) = 'x'", "DISTINCT in function arguments", 0),
    ("lower(title) OVER () = 'x'", "window functions (OVER)", 0),
    ("concat(VARIADIC ARRAY['a']) = 'a'", "VARIADIC is not allowed", 0),
    ("title = 'x' COLLATE \"C\"", "COLLATE is not allowed", 12),
    ("CAST(id AS numeric) = 1", "cast to type pg_catalog.numeric is not allowed", 0),
    ("CAST(title AS varchar(3)) = 'x'", "type modifiers in casts are not allowed", 0),
    ("id = $0", "parameters are numbered from $1", 5),
    ("id = $65", "parameter $65 is above the limit of $64", 5),
    ("id = $99999999999", "parameter number too large", 5),
    ("id = $2", "parameter $1 is never used", None),
    ("1", "must be a condition", 0),
    ("'x'", "must be a condition", 0),
    ("NULL", "must be a condition", 0),
    ("$1 + 1", "must be a condition", 3),
    ("", "is empty", 0),
    ("   \n ", "is empty", 5),
    ("id = B'101'", "bit-string constants are not allowed", 3),
    ("(tags).x = 1", "field selection is not allowed", 9),
    ("id = 1 AND", "syntax error at end of input", 10),
]


@pytest.mark.parametrize(("text", "reason", "position"), BREAK_OUTS)
def test_refused(text: str, reason: str, position: int | None) -> None:
    error = reject(text, field="subset__where")
    assert reason in error.reason
    assert error.position == position
    assert error.field == "subset__where"


def test_refusals_are_valueerrors_with_client_safe_dict() -> None:
    error = reject("true) OR (true")
    assert isinstance(error, ValueError)
    assert error.to_dict() == {
        "field": "where",
        "reason": 'syntax error at or near ")"',
        "position": 4,
    }
    assert "position 4" in str(error)


def test_positions_count_characters_not_bytes() -> None:
    error = reject("title = 'éééé' OR now() > created_at")
    assert error.position == 18
    assert reject("title = 'ü' AND x.y = 1").position == 16


def test_huge_nesting_is_refused_by_depth() -> None:
    error = reject("NOT " * 40 + "done")
    assert error.reason == "is nested more than 32 levels deep"
    assert error.position == 32 * 4
    deep = "(" * 2500 + "done" + ")" * 2500
    assert "longer than" in reject(deep).reason
    paren_only = "(" * 1000 + "done" + ")" * 1000
    assert parse_client_where(paren_only, columns=COLUMNS).sql == "done"


def test_long_left_deep_chains_are_refused_without_recursion_errors() -> None:
    chain = "id = 0" + " OR id = 1" * 300
    assert "longer than" not in reject(chain, limits=Limits(max_length=100_000)).reason
    sums = "1" + " + 1" * 1000 + " = id"
    error = reject(sums, limits=Limits(max_length=100_000), leakproof=False)
    assert "levels deep" in error.reason


def test_node_count_limit() -> None:
    many = "id IN (" + ", ".join(str(i) for i in range(300)) + ")"
    error = reject(many)
    assert error.reason == "has more than 256 syntax nodes"
    assert parse_client_where(many, columns=COLUMNS, limits=Limits(max_nodes=400)).max_param == 0


def test_huge_text() -> None:
    text = "title = '" + "x" * 5000 + "'"
    error = reject(text)
    assert error.reason == "is longer than 4096 characters"
    assert error.position == 4096


def test_nul_and_lone_surrogate() -> None:
    error = reject("id = 1\x00 OR true")
    assert (error.reason, error.position) == ("contains a NUL character", 6)
    error = reject("title = '\udcff'")
    assert "lone surrogate" in error.reason
    assert error.position == 9


def test_non_string_input() -> None:
    with pytest.raises(WhereError, match="must be a string"):
        parse_client_where(b"id = 1", columns=None)  # type: ignore[arg-type]


def test_rewrapping_is_impossible_because_the_text_is_rebuilt_from_the_tree() -> None:
    client = parse_client_where("done OR title = 'x'", columns=COLUMNS)
    combined = combine(ServerFilter.compile(SERVER_TEXT), client)
    assert combined == "org_id = $1 AND deleted_at IS NULL AND (done OR title = 'x')"
    hand_made = ClientFilter(sql="true) OR (true", max_param=0)
    with pytest.raises(WhereError, match="syntax error"):
        combine(ServerFilter.compile(SERVER_TEXT), hand_made)
    smuggled = ClientFilter(sql="id IN (SELECT id FROM other)", max_param=0)
    with pytest.raises(WhereError, match="subqueries"):
        combine(ServerFilter.compile(SERVER_TEXT), smuggled)
    lying = ClientFilter(sql="id = $1", max_param=0)
    with pytest.raises(WhereError, match="parameters"):
        combine(ServerFilter.compile(SERVER_TEXT), lying)


# --------------------------------------------------------------------------------------
# What is accepted, and how it is normalised


ACCEPTED = [
    ("id = 1", "id = 1"),
    ("ID=1", "id = 1"),
    ('"Title" = $1', '"Title" = $1'),
    ("title != 'it''s'", "title <> 'it''s'"),
    ("title = E'a\\'b'", "title = 'a''b'"),
    ("done", "done"),
    ("true", "TRUE"),
    ("NOT done", "NOT done"),
    ("done IS NOT TRUE", "done IS NOT TRUE"),
    ("title IS NULL AND (id = $1 OR id = $2)", "title IS NULL AND (id = $1 OR id = $2)"),
    ("id IN (1, 2, 3)", "id IN (1, 2, 3)"),
    ("id NOT IN ($1, $2)", "id NOT IN ($1, $2)"),
    ("title ILIKE $1", "title ILIKE $1"),
    ("title NOT LIKE 'a%'", "title NOT LIKE 'a%'"),
    ("id BETWEEN 1 AND 10", "id BETWEEN 1 AND 10"),
    ("id NOT BETWEEN SYMMETRIC 10 AND 1", "id NOT BETWEEN SYMMETRIC 10 AND 1"),
    ("title IS DISTINCT FROM $1", "title IS DISTINCT FROM $1"),
    ("id = ANY($1)", "id = ANY($1)"),
    ("$1 = ANY(tags)", "$1 = ANY(tags)"),
    ("tags[1] = 'a'", "(tags)[1] = 'a'"),
    ("coalesce(title, '') = ''", "COALESCE(title, '') = ''"),
    ("(id, n) = (1, 2)", "(id, n) = (1, 2)"),
    ("created_at > '2020-01-01'::timestamptz", "created_at > CAST('2020-01-01' AS timestamptz)"),
    ("U&'\\0041' = title", "'A' = title"),
    ("n = 5::int8 OR id = 5000000000", "n = CAST(5 AS int8) OR id = 5000000000"),
    ("'a' = ANY(ARRAY[title])", "'a' = ANY(ARRAY[title])"),
    ("tags[id] = 'a'", "(tags)[id] = 'a'"),
    ("id::int8 = $1", "CAST(id AS int8) = $1"),
    ("title LIKE ANY(ARRAY['a%', $1])", "title LIKE ANY(ARRAY['a%', $1])"),
    ("like(title, 'a\\\\')", "\"like\"(title, 'a\\\\')"),
]

# Electric's grammar, but not leakproof: accepted only with leakproof=False.
ACCEPTED_WITHOUT_LEAKPROOF = [
    ("tags @> ARRAY['a']", "tags @> ARRAY['a']"),
    ("tags && $1::text[]", "tags && CAST($1 AS text[])"),
    ("lower(title) = lower($1)", "lower(title) = lower($1)"),
    ("greatest(id, n) > 3", "GREATEST(id, n) > 3"),
    ("created_at > timestamp '2020-01-01'", "created_at > CAST('2020-01-01' AS timestamp)"),
    ("id::text = $1", "CAST(id AS text) = $1"),
    ("done = $1::bool", "done = CAST($1 AS bool)"),
    ("concat(title, 'x') = 'ax'", "concat(title, 'x') = 'ax'"),
]


@pytest.mark.parametrize(("text", "normalised"), ACCEPTED)
def test_accepted(text: str, normalised: str) -> None:
    client = parse_client_where(text, columns=COLUMNS)
    assert client.sql == normalised
    assert where_of(client.sql) == where_of(text)


@pytest.mark.parametrize(("text", "normalised"), ACCEPTED_WITHOUT_LEAKPROOF)
def test_accepted_only_without_leakproof(text: str, normalised: str) -> None:
    client = parse_client_where(text, columns=COLUMNS, leakproof=False)
    assert client.sql == normalised
    assert where_of(client.sql) == where_of(text)
    assert "not allowed" in reject(text).reason


def test_columns_none_allows_any_bare_column() -> None:
    client = parse_client_where("anything = 1 AND other IS NULL", columns=None, leakproof=False)
    assert client.columns == frozenset({"anything", "other"})
    assert "qualified" in reject("a.b = 1", columns=None).reason


def test_max_param_and_columns_are_reported() -> None:
    client = parse_client_where("id = $2 OR title = $1 OR n = $2", columns=COLUMNS)
    assert client.max_param == 2
    assert client.columns == frozenset({"id", "title", "n"})
    assert parse_client_where("done", columns=COLUMNS).max_param == 0


NOT_LEAKPROOF = "Postgres does not mark it leakproof"
LEAKY = [
    ("1 / (id - 5) = 0", f'operator "-" on int4 and int4 is not allowed: {NOT_LEAKPROOF}', 8),
    ("id + 1 = 2", 'operator "+" on int4 and int4', 3),
    ("id = $1 + 1", 'operator "+" on int4 and int4', 8),
    ("title || 'x' = 'yx'", 'operator "||" on text and text', 6),
    ("title::int = 1", "a cast from text to int4 is not allowed", 5),
    ("id::text[] = $1", "a cast from int4 to text[] is not allowed", 2),
    ("int4(title) = 1", f"int4(text) is not allowed: {NOT_LEAKPROOF}", 0),
    ("lower(title) = 'x'", "lower(text) is not allowed", 0),
    ("'abc' LIKE title", "LIKE/ILIKE is only allowed on a text or varchar column", 6),
    ("like('abc', title)", "LIKE/ILIKE is only allowed on a text or varchar column", 0),
    ("'abc' LIKE ANY(tags)", "LIKE/ILIKE is only allowed on a text or varchar column", 6),
    ("title LIKE title", "a LIKE pattern must be a string literal or a parameter", 11),
    ("title LIKE ANY($1)", "LIKE ANY/ALL needs ARRAY[...]", 6),
    ("title LIKE 'secret\\'", "must not end with the escape character", 6),
    ("title NOT ILIKE 'a\\\\\\'", "must not end with the escape character", 6),
    ("ilike(title, 'x\\')", "must not end with the escape character", 0),
    ("title ~~ ALL(ARRAY['ok', 'x\\'])", "must not end with the escape character", 6),
    ("'x'::text::date > created_at OR id = 1", "a cast may only be applied to a literal", 9),
    ("$1::date > created_at", "casting a parameter is not allowed", 2),
    ("created_at > '2020-01-01'::timestamp", 'operator ">" on timestamptz and timestamp', 11),
    ("n = 1.5", "quote the literal or pass it as a parameter", 2),
    ("n IN (1, 2)", "IN mixes int8 with the int4 literal 1; quote the literal", 2),
    ("tags @> ARRAY['a']", 'operator "@>" on text[] and text[]', 5),
    ("tags = $1", 'operator "=" on text[] and text[]', 5),
    ("greatest(id, n) > 3", "GREATEST/LEAST are not allowed in leakproof mode", 0),
    ("(id, n) < (1, 2)", "row values may only be compared with = or <>", 8),
    ("- id = 1", 'prefix operator "-" is not allowed', 0),
    ("title = 1", 'operator "=" on text and int4 is not allowed', 6),
    ("id = 'x'::date", 'there is no operator "=" on int4 and date', 3),
]


@pytest.mark.parametrize(("text", "reason", "position"), LEAKY)
def test_leakproof_refuses_what_postgres_does_not_mark_leakproof(
    text: str, reason: str, position: int | None
) -> None:
    error = reject(text)
    assert reason in error.reason
    assert error.position == position
    assert parse_client_where(text, columns=COLUMNS, leakproof=False).sql


def test_leakproof_keeps_parse_time_constants() -> None:
    for text in (
        "n = -1",
        "created_at > '2020-01-01'",
        "created_at > '2020-01-01'::timestamptz OR created_at IS NULL",
        "id IN ('1', $1, 3)",
        "id BETWEEN $1 AND 10",
        "title IS NOT DISTINCT FROM NULL",
    ):
        assert parse_client_where(text, columns=COLUMNS).sql


def test_untyped_columns_only_take_null_and_boolean_tests() -> None:
    untyped = ["title", "done"]
    for text in ("title IS NULL", "done", "NOT done OR title IS NOT NULL", "done IS NOT TRUE"):
        assert parse_client_where(text, columns=untyped).sql
    error = reject("title = $1", columns=untyped)
    assert error.reason.startswith('column "title" has no declared type')
    assert 'filter_columns = { title = "text" }' in error.reason
    assert error.position == 6
    assert parse_client_where("title = $1", columns=untyped, leakproof=False).sql


def test_like_parameters_are_recorded_and_checked() -> None:
    client = parse_client_where("title ILIKE $2 OR like(title, $3) OR id = $1", columns=COLUMNS)
    assert client.like_params == frozenset({2, 3})
    assert parse_client_where("title LIKE $1", columns=COLUMNS, leakproof=False).like_params == (
        frozenset()
    )
    assert check_params({"1": "5", "2": "a\\\\", "3": "%"}, needed=3, patterns={2, 3})
    with pytest.raises(WhereError) as info:
        check_params({"1": "5", "2": "ok", "3": "a\\"}, needed=3, patterns={2, 3}, field="params")
    assert info.value.reason.startswith("parameter 3: a LIKE pattern must not end with")
    assert info.value.field == "params"


def test_column_types_are_canonical_and_unknown_ones_refused() -> None:
    long_names = {"id": "integer", "n": "BIGINT", "created_at": "timestamp with time zone"}
    assert parse_client_where("id = n AND created_at > $1", columns=long_names).sql
    with pytest.raises(WhereError, match="unknown column type 'money'") as info:
        parse_client_where("id = 1", columns={"id": "money"})
    assert info.value.field == "columns"


# --------------------------------------------------------------------------------------
# Caching and immutability


def test_results_are_cached_and_frozen() -> None:
    first = parse_client_where("id = $1", columns=COLUMNS)
    assert parse_client_where("id = $1", columns=COLUMNS) is first
    assert parse_client_where("id = $1", columns=dict(reversed(COLUMNS.items()))) is first
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.sql = "true"  # type: ignore[misc]
    server = ServerFilter.compile(SERVER_TEXT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        server.claims = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_LIMITS.max_depth = 1000  # type: ignore[misc]


def test_refusals_are_cached_without_sharing_exception_objects() -> None:
    first = reject("now() > created_at", field="where")
    second = reject("now() > created_at", field="subset__where")
    assert first is not second
    assert (first.reason, first.position) == (second.reason, second.position)
    assert (first.field, second.field) == ("where", "subset__where")


def test_combining_does_not_disturb_the_cached_client() -> None:
    client = parse_client_where("id = $1", columns=COLUMNS)
    combine(ServerFilter.compile(SERVER_TEXT), client)
    assert client.sql == "id = $1"
    assert combine(None, client) == "id = $1"


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="positive"):
        Limits(max_nodes=0)
    with pytest.raises(ValueError, match="max_depth"):
        Limits(max_depth=1000)


# --------------------------------------------------------------------------------------
# Server filters and named placeholders


def test_named_placeholder_becomes_positional() -> None:
    server = ServerFilter.compile(SERVER_TEXT)
    assert server.sql == "org_id = $1 AND deleted_at IS NULL"
    assert server.claims == ("org_id",)


def test_placeholder_inside_string_literal_is_untouched() -> None:
    server = ServerFilter.compile("':org_id' = title AND org_id = :org_id")
    assert server.sql == "':org_id' = title AND org_id = $1"
    assert server.claims == ("org_id",)
    assert ServerFilter.compile("title = ':x'").claims == ()


def test_casts_are_not_placeholders() -> None:
    server = ServerFilter.compile("a::text = :x AND b = :y::int")
    assert server.sql == "CAST(a AS text) = $1 AND b = CAST($2 AS integer)"
    assert server.claims == ("x", "y")


def test_same_claim_twice_is_one_parameter() -> None:
    server = ServerFilter.compile("owner = :sub OR :sub = ANY(editors) OR org = :org")
    assert server.sql == "owner = $1 OR $1 = ANY(editors) OR org = $2"
    assert server.claims == ("sub", "org")


def test_dotted_and_keyword_claim_names() -> None:
    server = ServerFilter.compile("org_id = :org.id AND role = :role AND u = :user")
    assert server.claims == ("org.id", "role", "user")
    assert server.sql == "org_id = $1 AND role = $2 AND u = $3"
    assert ServerFilter.compile("a = :OrgId").claims == ("OrgId",)


def test_colon_inside_brackets_is_a_slice() -> None:
    server = ServerFilter.compile("tags[1:n] = :t")
    assert server.sql == "(tags)[1:n] = $1"
    assert server.claims == ("t",)


def test_server_filter_may_use_a_subquery_and_dollar_quotes() -> None:
    server = ServerFilter.compile(
        "org_id IN (SELECT org_id FROM members WHERE user_id = :sub) AND kind <> $$x$$"
    )
    assert server.claims == ("sub",)
    assert server.sql == (
        "org_id IN (SELECT org_id FROM members WHERE user_id = $1) AND kind <> 'x'"
    )


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("org_id = $1", "positional parameters ($n) are not allowed", 9),
        ("org_id = :", "':' must be followed directly by a claim name", 9),
        ("org_id = : org", "':' must be followed directly by a claim name", 9),
        ('org_id = :"x"', "':' must be followed directly by a claim name", 9),
        # A claim name run into '-' would parse as subtraction and fail only at run time.
        ("org_id = :org-id", "':org-id' is not one placeholder", 13),
        ("org_id = :org-id", "reads as ':org' then '-id'; write it as ':org_id'", 13),
        ("v > :min_version-1", "or put a space before '-' to subtract", 16),
        ("org_id = :claims.org-id", "reads as ':claims.org' then '-id'", 20),
        ("org_id = :x.1", "':x.1' is not one placeholder", 11),
        ("org_id = :orgé", "claim name holds only ASCII letters, digits and '_'", 9),
        ("org_id = :org$id", "claim name holds only ASCII letters, digits and '_'", 9),
        ("org_id = :org_id)", 'syntax error at or near ")"', 16),
        ("org_id = :org_id; DROP TABLE t", "';' is not allowed", 16),
        ("a = :x UNION SELECT 1", "UNION/INTERSECT/EXCEPT is not allowed", 7),
        ("", "is empty", 0),
        ("a = 1\x00", "contains a NUL character", 5),
    ],
)
def test_bad_server_filters(text: str, reason: str, position: int | None) -> None:
    with pytest.raises(WhereError) as info:
        ServerFilter.compile(text)
    assert reason in info.value.reason
    assert info.value.position == position
    assert info.value.field == "server_where"


def test_placeholders_followed_by_an_operator_with_a_space_or_a_cast_still_work() -> None:
    server = ServerFilter.compile("v > :min_version - 1 AND o = :claims.org::text AND p = (:x)")
    assert server.claims == ("min_version", "claims.org", "x")
    assert server.sql == "v > $1 - 1 AND o = CAST($2 AS text) AND p = $3"


def test_server_error_positions_refer_to_the_configured_text() -> None:
    with pytest.raises(WhereError) as info:
        ServerFilter.compile("a = :long_claim_name AND b = = 1")
    assert info.value.position == 29


# --------------------------------------------------------------------------------------
# combine


def test_combine_renumbers_client_parameters() -> None:
    server = ServerFilter.compile("org_id = :org AND (owner = :sub OR shared)")
    client = parse_client_where("title = $1 OR id = ANY($2)", columns=COLUMNS)
    assert combine(server, client) == (
        "org_id = $1 AND (owner = $2 OR shared) AND (title = $3 OR id = ANY($4))"
    )


def test_combine_server_or_root_is_parenthesised() -> None:
    server = ServerFilter.compile("owner = :sub OR public")
    client = parse_client_where("done", columns=COLUMNS)
    assert combine(server, client) == "(owner = $1 OR public) AND done"


def test_combine_server_only_client_only_and_neither() -> None:
    server = ServerFilter.compile(SERVER_TEXT)
    client = parse_client_where("id = $1 OR id = $2", columns=COLUMNS)
    assert combine(server, None) == "org_id = $1 AND deleted_at IS NULL"
    assert combine(None, client) == "id = $1 OR id = $2"
    assert combine(None, None) is None


def test_combine_is_deterministic() -> None:
    server = ServerFilter.compile(SERVER_TEXT)
    texts = ["title = $1", "done AND id IN (1, 2)", "NOT (id = $1 OR n > $2)"]
    first = [combine(server, parse_client_where(t, columns=COLUMNS)) for t in texts]
    fresh_server = ServerFilter.compile("org_id   =   :org_id  AND  deleted_at IS  NULL")
    second = [combine(fresh_server, parse_client_where(t, columns=COLUMNS)) for t in texts]
    assert first == second
    assert fresh_server == server


def test_combine_keeps_a_client_and_nested() -> None:
    server = ServerFilter.compile(SERVER_TEXT)
    client = parse_client_where("done AND id = $1", columns=COLUMNS)
    combined = combine(server, client)
    assert combined == "org_id = $1 AND deleted_at IS NULL AND (done AND id = $2)"
    root = where_of(combined)
    assert len(root.args) == 3
    assert isinstance(root.args[2], ast.BoolExpr)


# --------------------------------------------------------------------------------------
# ORDER BY


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("id", "id"),
        ("created_at DESC NULLS LAST, id", "created_at DESC NULLS LAST, id"),
        ("title asc nulls first", "title ASC NULLS FIRST"),
        ('"Title" DESC', '"Title" DESC'),
    ],
)
def test_order_by_accepted(text: str, normalised: str) -> None:
    assert parse_order_by(text, columns=COLUMNS) == normalised


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("id USING <", "ORDER BY ... USING is not allowed", 0),
        ("1", "constants are not allowed in ORDER BY", None),
        ("$1", "parameters are not allowed in ORDER BY", 0),
        ("lower(title)", "only column names are allowed in ORDER BY", 0),
        ("t.id", "only bare column names are allowed in ORDER BY", 0),
        ("secret", 'column "secret" is not allowed', 0),
        ("id LIMIT 1", "LIMIT is not allowed", 3),
        ("id; DROP TABLE t", "';' is not allowed", 2),
        ("id -- x", "comments are not allowed", 3),
        ("id) x", 'syntax error at or near ")"', 2),
        ("", "is empty", 0),
    ],
)
def test_order_by_refused(text: str, reason: str, position: int | None) -> None:
    with pytest.raises(WhereError) as info:
        parse_order_by(text, columns=COLUMNS)
    assert reason in info.value.reason
    assert info.value.position == position
    assert info.value.field == "subset__order_by"


# --------------------------------------------------------------------------------------
# params


def test_check_params_orders_values() -> None:
    assert check_params({"2": "b", "1": "a"}, needed=2) == ["a", "b"]
    assert check_params({}, needed=0) == []


@pytest.mark.parametrize(
    ("params", "needed", "reason"),
    [
        ({"1": "a", "3": "c"}, 3, "2 is missing"),
        ({"0": "a"}, 0, "parameter keys must be numbers from 1"),
        ({"01": "a"}, 1, "without leading zeros"),
        ({"1.0": "a"}, 1, "parameter keys must be numbers"),
        ({" 1": "a"}, 1, "parameter keys must be numbers"),
        ({"\u0661": "a"}, 1, "parameter keys must be numbers"),
        ({"9" * 5000: "a"}, 1, "parameter keys must be numbers"),
        ({"65": "a"}, 65, "above the limit of 64"),
        ({"1": "a"}, 2, "parameter $2 was not provided"),
        ({"1": "a", "2": "b"}, 1, "parameter 2 is not used"),
        ({"1": 1}, 1, "must be a string"),
        ({"1": None}, 1, "must be a string"),
        ({"1": "a\x00"}, 1, "NUL"),
        ({"1": "\udcff"}, 1, "not valid UTF-8"),
    ],
)
def test_check_params_refusals(params: dict[str, Any], needed: int, reason: str) -> None:
    with pytest.raises(WhereError) as info:
        check_params(params, needed=needed, field="subset__params")
    assert reason in info.value.reason
    assert info.value.field == "subset__params"


def test_check_params_rejects_non_mappings() -> None:
    with pytest.raises(WhereError, match="must be an object"):
        check_params(["a"], needed=1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Property-based tests

GRAMMAR_COLUMNS = ["id", "org_id", "title", "done", "n", '"Title"']

string_literal = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8
).map(lambda s: "'" + s.replace("'", "''") + "'")
number = st.integers(-(10**6), 10**6).map(str)
value = st.one_of(string_literal, number, st.just("$?"))
column = st.sampled_from(GRAMMAR_COLUMNS)


def _comparison(c: str, op: str, v: str, flip: bool) -> str:
    return f"{v} {op} {c}" if flip else f"{c} {op} {v}"


leaf = st.one_of(
    st.builds(
        _comparison,
        column,
        st.sampled_from(["=", "<>", "!=", "<", ">", "<=", ">="]),
        value,
        st.booleans(),
    ),
    st.builds(
        lambda c, neg, vs: f"{c} {'NOT ' if neg else ''}IN ({', '.join(vs)})",
        column,
        st.booleans(),
        st.lists(value, min_size=1, max_size=4),
    ),
    st.builds(lambda c, neg: f"{c} IS {'NOT ' if neg else ''}NULL", column, st.booleans()),
    st.builds(
        lambda c, op, p: f"{c} {op} {p}",
        column,
        st.sampled_from(["LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE"]),
        st.one_of(string_literal, st.just("$?")),
    ),
    st.builds(lambda c, a, b: f"{c} BETWEEN {a} AND {b}", column, value, value),
    st.builds(lambda c: f"lower({c}) = $?", column),
    st.sampled_from(["done", "true", "false", "done IS NOT TRUE"]),
)


def _tree(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda a, b: f"{a} AND {b}", children, children),
        st.builds(lambda a, b: f"({a}) OR ({b})", children, children),
        st.builds(lambda a, b: f"{a} OR {b}", children, children),
        st.builds(lambda a: f"NOT ({a})", children),
    )


clean_filter = st.recursive(leaf, _tree, max_leaves=10)


def number_params(text: str) -> str:
    counter = iter(range(1, 10_000))
    return re.sub(r"\$\?", lambda _: f"${next(counter)}", text)


HOSTILE = [
    ") OR (true",
    " OR true",
    "; DROP TABLE todos; --",
    "--",
    "/*",
    "*/",
    "$$",
    "$t$",
    "'",
    ")",
    "(",
    " UNION SELECT 1",
    "::int",
    " ORDER BY 1",
    " LIMIT 1",
    "\\",
    "E'\\''",
    " OR org_id = 'b'",
    "(SELECT 1)",
    "now()",
    "$0",
    "$65",
    "\n",
    "/* */",
    "':org_id'",
    "1=1) OR (1=1",
    "$$) OR (1=1",
    "\x00",
    "\udcff",
    "\u2028",
    "U&'\\0027'",
    '"',
    "a.b",
]
hostile_fragment = st.sampled_from(HOSTILE)

hostile_filter = st.recursive(
    st.one_of(leaf, hostile_fragment),
    lambda children: st.one_of(
        _tree(children),
        st.builds(lambda a, h, b: f"{a}{h}{b}", children, hostile_fragment, children),
    ),
    max_leaves=12,
)

SERVERS = [
    ServerFilter.compile(SERVER_TEXT),
    ServerFilter.compile("org_id = :org_id"),
    ServerFilter.compile("owner = :sub OR :sub = ANY(editors)"),
    ServerFilter.compile("deleted_at IS NULL"),
    ServerFilter.compile("org_id = :org AND (team = :team OR public) AND NOT archived"),
]


def assert_server_and_client(server: ServerFilter, client: ClientFilter) -> None:
    combined = combine(server, client)
    assert combined is not None
    root = where_of(combined)
    assert isinstance(root, ast.BoolExpr)
    assert root.boolop == BoolExprType.AND_EXPR
    args: tuple[Any, ...] = root.args or ()
    server_part = args[:-1]
    rebuilt = (
        server_part[0]
        if len(server_part) == 1
        else ast.BoolExpr(boolop=BoolExprType.AND_EXPR, args=server_part)
    )
    assert RawStream()(rebuilt) == server.sql
    assert args[-1] == shifted(where_of(client.sql), len(server.claims))
    expected = set(range(1, len(server.claims) + client.max_param + 1))
    assert params_in(root) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clean_filter.map(number_params), st.sampled_from(SERVERS))
def test_well_formed_filters_are_accepted_and_combined_safely(
    text: str, server: ServerFilter
) -> None:
    columns = frozenset({*GRAMMAR_COLUMNS, "Title"})
    client = parse_client_where(text, columns=columns, leakproof=False)
    assert where_of(client.sql) == where_of(text)
    assert_server_and_client(server, client)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hostile_filter,
    st.one_of(st.none(), st.lists(st.integers(0, 70), min_size=20, max_size=20)),
    st.sampled_from(SERVERS),
)
def test_hostile_filters_either_fail_cleanly_or_stay_inside_the_server_filter(
    text: str, numbers: list[int] | None, server: ServerFilter
) -> None:
    if numbers is None:
        text = number_params(text)
    else:
        draws = iter(numbers * 10)
        text = re.sub(r"\$\?", lambda _: f"${next(draws)}", text)
    try:
        client = parse_client_where(text, columns=frozenset({*GRAMMAR_COLUMNS, "Title"}))
    except WhereError as error:
        assert error.field == "where"
        assert error.position is None or 0 <= error.position <= len(text)
        return
    assert_server_and_client(server, client)


SQL_WORDS = [
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "(",
    ")",
    "[",
    "]",
    ",",
    ";",
    "'",
    '"',
    "$1",
    "$$",
    "--",
    "/*",
    "*/",
    "::",
    ":",
    ".",
    "*",
    "=",
    "<>",
    "~",
    "IN",
    "IS",
    "NULL",
    "LIKE",
    "ANY",
    "ARRAY",
    "CASE",
    "WHEN",
    "THEN",
    "END",
    "EXISTS",
    "UNION",
    "ORDER",
    "BY",
    "LIMIT",
    "id",
    "title",
    "1",
    "'x'",
    "E'\\''",
    "true",
    "now()",
    "lower",
    "CAST",
    "AS",
    "int",
    "text[]",
    "OPERATOR",
    "pg_catalog",
    "BETWEEN",
    "SYMMETRIC",
    "COLLATE",
    "ROW",
    "\\",
    "U&",
    "\x00",
]


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(st.sampled_from(SQL_WORDS)).map(" ".join)))
def test_random_text_only_ever_raises_where_error(text: str) -> None:
    for attempt in (
        lambda: parse_client_where(text, columns=None),
        lambda: parse_client_where(text, columns=COLUMNS, leakproof=False),
        lambda: parse_order_by(text, columns=None),
        lambda: ServerFilter.compile(text),
    ):
        with contextlib.suppress(WhereError):
            attempt()


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=5), st.integers(0, 6))
def test_check_params_only_ever_raises_where_error(params: dict[str, str], needed: int) -> None:
    try:
        values = check_params(params, needed=needed)
    except WhereError:
        return
    assert len(values) == needed
    assert values == [params[str(i)] for i in range(1, needed + 1)]
