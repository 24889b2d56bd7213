#!/usr/bin/env python3
"""Regenerate ``electric_proxy/where/_leakproof.py`` from a running PostgreSQL's catalogue.

The proxy's leakproof rule must say what Postgres says, not what someone believes about
Postgres, so the table is produced by asking the server itself. For each operator, function
and cast in Electric's grammar, applied to columns of Electric's types, the script lets
Postgres *resolve* the expression (``CREATE TEMP VIEW ... AS SELECT a OP b FROM probe``) and
then reads back what it resolved to:

* every function the view's stored expression tree calls (``pg_rewrite.ev_action``: the
  ``funcid`` of function calls and the ``oprcode`` of every ``opno``), i.e. the operator
  Postgres picked and every implicit cast function it inserted, and whether each one's
  ``pg_proc.proleakproof`` is set (``pg_depend`` cannot be used: Postgres records no
  dependency on built-in, pinned objects);
* whether the tree contains a ``CoerceViaIO`` (a cast through text output and input: its
  I/O functions are not in the tree, and they are not leakproof).

A resolution is leakproof only when every function it runs is marked leakproof and there is
no I/O coercion. Resolution failures (no such operator, ambiguous) are not listed: they are
parse-time errors, raised before any row is read.

Usage::

    python scripts/leakproof_table.py "host=/tmp/sock port=5432 user=postgres"      # write
    python scripts/leakproof_table.py --check "host=..."                            # compare

The test ``tests/test_leakproof_catalogue.py`` runs :func:`probe` against a private
cluster and asserts that the committed table is exactly what it finds.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "electric_proxy" / "where" / "_leakproof.py"
sys.path.insert(0, str(ROOT))

from electric_proxy.where import _types  # noqa: E402  (the proxy's own list of Electric's types)

BASE_TYPES = tuple(sorted(_types.BASE_TYPES))
ARRAY_TYPES = tuple(f"{name}[]" for name in BASE_TYPES)
TYPES = BASE_TYPES + ARRAY_TYPES

# Electric's binary operators (§16.2).
OPERATORS = (
    "=", "<>", "<", ">", "<=", ">=",
    "~~", "~~*", "!~~", "!~~*",
    "@>", "<@", "&&",
    "+", "-", "*", "/", "^", "&", "|", "#", "||",
)  # fmt: skip
# Electric's functions (§16.2), probed with one argument of every type, and two arguments
# for those that take two.
FUNCTIONS_1 = (
    "lower", "upper", "concat", "int2", "int4", "int8", "float4", "float8", "numeric", "bool",
    "uuid", "text", "date", "time", "timestamp", "timestamptz", "interval", "array_ndims",
    "justify_days", "justify_hours", "justify_interval",
)  # fmt: skip
FUNCTIONS_2 = ("like", "ilike", "concat", "timezone", "array_cat", "array_append", "array_prepend")

_PROBE = r"""
CREATE OR REPLACE FUNCTION pg_temp.lp_probe(expression text)
RETURNS TABLE (result text, leakproof bool, functions text)
LANGUAGE plpgsql AS $$
DECLARE
    view_oid oid;
BEGIN
    BEGIN
        EXECUTE 'CREATE TEMP VIEW lp_view AS SELECT ' || expression || ' AS r FROM lp_columns';
    EXCEPTION WHEN others THEN
        RETURN;  -- not resolvable: a parse-time error, so nothing to list
    END;
    view_oid := 'lp_view'::regclass;
    RETURN QUERY
    WITH tree AS (
        SELECT w.ev_action::text AS nodes FROM pg_rewrite w WHERE w.ev_class = view_oid
    ), called AS (
        SELECT m[1]::oid AS proc
        FROM tree, regexp_matches(tree.nodes, ':(?:funcid|opfuncid) (\d+)', 'g') AS m
        UNION
        SELECT o.oprcode
        FROM tree, regexp_matches(tree.nodes, ':opno (\d+)', 'g') AS m
        JOIN pg_operator o ON o.oid = m[1]::oid
    ), procs AS (
        SELECT p.proname, p.proleakproof FROM called JOIN pg_proc p ON p.oid = called.proc
    )
    SELECT format_type(a.atttypid, NULL),
           coalesce(bool_and(procs.proleakproof), true)
             AND NOT EXISTS (SELECT 1 FROM tree WHERE tree.nodes LIKE '%{COERCEVIAIO %'),
           coalesce(string_agg(DISTINCT procs.proname, ','), '')
    FROM pg_attribute a LEFT JOIN procs ON true
    WHERE a.attrelid = view_oid AND a.attname = 'r'
    GROUP BY a.atttypid;
    EXECUTE 'DROP VIEW lp_view';
END
$$
"""

# format_type's names back to Electric's short names, so the table is keyed the way the
# proxy's configuration spells types.
_SHORT = {
    "boolean": "bool",
    "smallint": "int2",
    "integer": "int4",
    "bigint": "int8",
    "real": "float4",
    "double precision": "float8",
    "character varying": "varchar",
    "time without time zone": "time",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
}


def _short(name: str) -> str:
    if name.endswith("[]"):
        return _short(name[:-2]) + "[]"
    return _SHORT.get(name, name)


@dataclass
class Table:
    """What the catalogue says, keyed by the types the proxy sees on each side."""

    version: str = ""
    operators: dict[tuple[str, str, str], tuple[str, bool]] = field(default_factory=dict)
    functions: dict[tuple[str, tuple[str, ...]], tuple[str, bool]] = field(default_factory=dict)
    casts: dict[tuple[str, str], bool] = field(default_factory=dict)


def _column(type_name: str) -> str:
    return '"' + type_name + '"'


def _operator_probes() -> Iterator[tuple[tuple[str, str, str], str]]:
    for operator in OPERATORS:
        for left in BASE_TYPES:
            for right in BASE_TYPES:
                yield (operator, left, right), f"{_column(left)} {operator} {_column(right)}"
        for element, array in zip(BASE_TYPES, ARRAY_TYPES, strict=True):
            for left, right in ((array, array), (array, element), (element, array)):
                yield (operator, left, right), f"{_column(left)} {operator} {_column(right)}"


def _function_probes() -> Iterator[tuple[tuple[str, tuple[str, ...]], str]]:
    for name in FUNCTIONS_1:
        for argument in TYPES:
            yield (name, (argument,)), f"{name}({_column(argument)})"
    for name in FUNCTIONS_2:
        pairs: Iterable[tuple[str, str]]
        if name.startswith("array_"):
            pairs = (
                pair
                for element, array in zip(BASE_TYPES, ARRAY_TYPES, strict=True)
                for pair in ((array, array), (array, element), (element, array))
            )
        else:
            pairs = ((left, right) for left in BASE_TYPES for right in BASE_TYPES)
        for left, right in pairs:
            yield (name, (left, right)), f"{name}({_column(left)}, {_column(right)})"


def probe(connection: Any) -> Table:
    """Ask the server behind ``connection`` (psycopg, autocommit) how it resolves everything."""
    version = str(connection.execute("SHOW server_version").fetchone()[0]).split()[0]
    table = Table(version=version)
    columns = ", ".join(f"{_column(name)} {name}" for name in TYPES)
    connection.execute(f"CREATE TEMP TABLE IF NOT EXISTS lp_columns ({columns})")
    connection.execute(_PROBE)

    def resolve(expression: str) -> tuple[str, bool] | None:
        row = connection.execute("SELECT * FROM pg_temp.lp_probe(%s)", (expression,)).fetchone()
        return None if row is None else (_short(row[0]), bool(row[1]))

    for key, expression in _operator_probes():
        if (found := resolve(expression)) is not None:
            table.operators[key] = found
    for function_key, expression in _function_probes():
        if (found := resolve(expression)) is not None:
            table.functions[function_key] = found
    for source in TYPES:
        for target in TYPES:
            if (found := resolve(f"CAST({_column(source)} AS {target})")) is not None:
                table.casts[(source, target)] = found[1]
    return table


def _lines(items: Iterable[str], indent: int) -> str:
    return "".join(f"{' ' * indent}{item},\n" for item in sorted(items))


def _key(value: object) -> str:
    """``repr`` with double quotes, as the project's style has it (no value holds a quote)."""
    return repr(value).replace("'", '"')


def render(table: Table) -> str:
    """The Python module the proxy imports: leakproof resolutions, and fallible ones."""
    major = table.version.split(".")[0]
    leakproof_ops = {k: v[0] for k, v in table.operators.items() if v[1]}
    fallible_ops = {k for k, v in table.operators.items() if not v[1]}
    leakproof_functions = {k: v[0] for k, v in table.functions.items() if v[1]}
    leakproof_casts = {k for k, v in table.casts.items() if v}
    return f'''"""Generated from PostgreSQL {table.version} by scripts/leakproof_table.py.

What PostgreSQL {major}'s catalogue says about Electric's operators, functions and casts applied
to columns of Electric's types, after Postgres's own operator and function resolution
(implicit casts included). "Leakproof" means every function the resolved expression runs is
marked ``pg_proc.proleakproof`` and no cast goes through text I/O: the property Postgres
itself requires before it evaluates a qual below a security barrier or row-level security.
Do not edit by hand: regenerate it.
``tests/test_leakproof_catalogue.py`` regenerates the table from a real server and asserts
it equals this file.
"""

from typing import Final

POSTGRES_VERSION: Final = {_key(table.version)}

# (operator, left type, right type) -> result type, where the resolution is leakproof.
LEAKPROOF_OPERATORS: Final[dict[tuple[str, str, str], str]] = {{
{_lines((f"{_key(k)}: {_key(v)}" for k, v in leakproof_ops.items()), 4)}}}

# (operator, left type, right type) that resolve, but run a function that is not leakproof.
FALLIBLE_OPERATORS: Final[frozenset[tuple[str, str, str]]] = frozenset(
    {{
{_lines((_key(k) for k in fallible_ops), 8)}    }}
)

# (function, argument types) -> result type, where the resolution is leakproof.
LEAKPROOF_FUNCTIONS: Final[dict[tuple[str, tuple[str, ...]], str]] = {{
{_lines((f"{_key(k)}: {_key(v)}" for k, v in leakproof_functions.items()), 4)}}}

# (source type, target type) whose cast is binary or runs only leakproof functions.
LEAKPROOF_CASTS: Final[frozenset[tuple[str, str]]] = frozenset(
    {{
{_lines((_key(k) for k in leakproof_casts), 8)}    }}
)
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dsn", help="libpq connection string of a PostgreSQL server")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    options = parser.parse_args(argv)
    import psycopg

    with psycopg.connect(options.dsn, autocommit=True) as connection:
        text = render(probe(connection))
    if options.check:
        same = TARGET.read_text() == text
        print("up to date" if same else f"{TARGET} differs from the catalogue")
        return 0 if same else 1
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
