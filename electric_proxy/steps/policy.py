"""Shape policies: the server decides table, columns, replica and a claim-bound row filter.

Default deny: a request gets a shape only when a configured shape matches it. The
client names the shape with ``table=`` (its name in the policy, which need not be the
table's); a policy with one shape serves it without a name. The row filter's
``:claim`` placeholders become positional ``params[n]`` filled from the principal's
claims, so claim values never touch SQL text; a missing claim is a 403.

A client filter (``where`` + ``params[n]``), when the shape allows one, is parsed with
Postgres's own parser, checked against an allow-list of columns and of grammar, and
combined as a syntax tree ``server AND client``. Subset snapshots (``subset__*`` in the
query, or a ``POST`` body) get the same checks; a POST body is rebuilt from its allowed
keys, never forwarded as sent (Electric merges body keys over the query).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, Literal

from aiohttp import hdrs, web
from multidict import MultiDict, MultiMapping
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..chain import Principal, Step, client_query
from ..errors import BadRequest, Forbidden, InvalidBody, InvalidFilter, PayloadTooLarge
from ..json_input import JsonInputError, load_client_json
from ..keys import PRINCIPAL, SAME_FOR_EVERYONE, UPSTREAM
from ..protocol import SUBSET_PAGING_PARAMS, positional_params
from ..where import (
    ClientFilter,
    Limits,
    ServerFilter,
    WhereError,
    canonical_type,
    check_params,
    combine,
    parse_client_where,
    parse_order_by,
    quote_ident,
)

__all__ = ["ShapePolicy", "ShapeRule"]

_BODY_KEYS = frozenset({"where", "params", "limit", "offset", "order_by"})
_IGNORED_BODY_KEYS = frozenset({"where_expr", "order_by_expr"})


class ShapeRule(BaseModel):
    """One shape a principal may sync."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    table: str | None = Field(None, description="Postgres table; defaults to the shape's name")
    columns: tuple[str, ...] | None = Field(None, description="Columns sent; default all")
    primary_key: tuple[str, ...] = Field(("id",), description="Always added to `columns`")
    replica: Literal["default", "full"] = "default"
    where: str | None = Field(None, description="Row filter; :claim placeholders bind claims")
    require_claims: dict[str, str | list[str]] = Field(
        default_factory=dict, description="Claims the principal must have (value or one of)"
    )
    client_where: bool = Field(False, description="May the client add its own `where`?")
    subsets: bool = Field(True, description="May the client ask for subset snapshots?")
    filter_columns: tuple[str, ...] | dict[str, str] | None = Field(
        None,
        description="Columns client filters may use, as a list or with their Postgres types"
        ' ({title = "text"}); default: `columns` (or any), untyped',
    )
    public: bool = Field(
        False,
        description="The same rows for everyone, logged in or not: responses stay cacheable "
        "by shared caches for anyone (no Vary). Refused when the shape binds claims",
    )

    @model_validator(mode="after")
    def _public_is_the_same_for_everyone(self) -> ShapeRule:
        if self.public:
            claims = ServerFilter.compile(self.where).claims if self.where is not None else ()
            if claims or self.require_claims:
                raise ValueError(
                    "public = true is only for a shape that is the same for everyone; this one "
                    "depends on the principal's claims ("
                    + ", ".join(f":{c}" for c in (*claims, *self.require_claims))
                    + ")"
                )
        return self

    leakproof: bool = Field(
        True, description="Refuse client filters that could fail on other tenants' rows"
    )

    @field_validator("filter_columns")
    @classmethod
    def _known_types(
        cls, value: tuple[str, ...] | dict[str, str] | None
    ) -> tuple[str, ...] | dict[str, str] | None:
        if isinstance(value, dict):
            return {name: canonical_type(kind) for name, kind in value.items()}
        return value

    @field_validator("where")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ServerFilter.compile(value)
            except WhereError as exc:
                raise ValueError(f"invalid row filter: {exc.reason}") from exc
        return value

    def model_post_init(self, context: Any, /) -> None:
        for derived in ("_server", "_column_set", "_upstream_columns", "_queryable_columns"):
            getattr(self, derived)  # at start-up, so no request pays for it

    # Derived once per rule; cached_property keeps the per-request reads plain attribute
    # lookups (a pydantic private attribute costs a __getattr__ call each time).
    @cached_property
    def _server(self) -> ServerFilter | None:
        return ServerFilter.compile(self.where) if self.where is not None else None

    @cached_property
    def _column_set(self) -> frozenset[str] | dict[str, str] | None:
        allowed = self.filter_columns if self.filter_columns is not None else self.columns
        if allowed is None or isinstance(allowed, dict):
            return allowed
        return frozenset(allowed)

    @cached_property
    def _upstream_columns(self) -> str | None:
        if self.columns is None:
            return None
        names = [*self.primary_key, *(c for c in self.columns if c not in self.primary_key)]
        return ",".join(quote_ident(n) for n in names)

    def upstream_columns(self) -> str | None:
        return self._upstream_columns

    @cached_property
    def _queryable_columns(self) -> str | None:
        # Electric's own allow-list (GHSA-c82q-v86f-c87f) for subset filters, subset order and
        # the projection: the primary key, the synced columns and the filter columns, so it
        # enforces what this rule does even if the proxy's check were bypassed. Sent only with
        # an explicit `columns`: without one Electric would narrow the rows to this list.
        if self.columns is None:
            return None
        names = [*self.primary_key, *self.columns, *(self.filter_columns or ())]
        return ",".join(quote_ident(n) for n in dict.fromkeys(names))

    def queryable_columns(self) -> str | None:
        """The ``queryable_columns`` sent upstream, or ``None`` when the rule sets none."""
        return self._queryable_columns


def _claim_text(principal: Principal | None, name: str) -> str:
    if principal is None:
        raise Forbidden("this shape needs an authenticated principal", code="missing_claim")
    try:
        value = principal.claim(name)
    except KeyError:
        raise Forbidden(
            f"the principal has no {name!r} claim", code="missing_claim", details={"claim": name}
        ) from None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise Forbidden(f"the {name!r} claim is not a scalar", code="missing_claim")


def _filter_error(exc: WhereError) -> InvalidFilter:
    details: dict[str, Any] = {"field": exc.field, "reason": exc.reason}
    if exc.position is not None:
        details["position"] = exc.position
    return InvalidFilter(f"{exc.field}: {exc.reason}", details=details)


class ShapePolicy(Step):
    """Decide the shape server-side (default deny), bind claims, check client filters."""

    shapes: dict[str, ShapeRule] = Field(min_length=1)
    limits: Limits = Field(default_factory=Limits)
    max_body_size: int = Field(1 << 20, ge=1024, description="Bytes of a POST subset body")

    @cached_property
    def _combine(
        self,
    ) -> Callable[[str, str | None], tuple[str | None, int, frozenset[int]]]:
        # The combined `where` depends on the rule and the client text only (claims go into
        # params), so it is computed once per distinct client filter. Also returned: how many
        # client params it takes and which of them are LIKE patterns (client numbering).
        @functools.lru_cache(maxsize=4096)
        def combined(name: str, client_text: str | None) -> tuple[str | None, int, frozenset[int]]:
            rule = self.shapes[name]
            client: ClientFilter | None = None
            if client_text is not None:
                client = parse_client_where(
                    client_text,
                    columns=rule._column_set,
                    limits=self.limits,
                    field="where",
                    leakproof=rule.leakproof,
                )
            if client is None:
                return combine(rule._server, None), 0, frozenset()
            return combine(rule._server, client), client.max_param, client.like_params

        return combined

    def _select(self, query: MultiMapping[str]) -> tuple[str, ShapeRule]:
        name = query.get("table")
        if name is None:
            if len(self.shapes) == 1:
                return next(iter(self.shapes.items()))
            raise BadRequest("say which shape with `table=`", code="missing_shape")
        rule = self.shapes.get(name)
        if rule is None:
            raise Forbidden("this shape is not allowed", code="shape_not_allowed")
        return name, rule

    def _check_required(self, rule: ShapeRule, principal: Principal | None) -> None:
        for claim, wanted in rule.require_claims.items():
            have = _claim_text(principal, claim)
            if have not in ([wanted] if isinstance(wanted, str) else wanted):
                raise Forbidden("this shape is not allowed", code="shape_not_allowed")

    async def on_request(self, request: web.Request) -> None:
        if request.method == hdrs.METH_OPTIONS:
            return
        query = client_query(request)
        name, rule = self._select(query)
        principal = request.get(PRINCIPAL)
        self._check_required(rule, principal)
        if rule.public:
            request[SAME_FOR_EVERYONE] = True

        client_params, _ = positional_params(query)
        client_where = query.get("where")
        if (client_where is not None or client_params) and not rule.client_where:
            raise BadRequest("this shape takes no client filter", code="filter_not_allowed")
        try:
            where, needed, patterns = self._combine(name, client_where)
            server_values = [
                _claim_text(principal, c) for c in (rule._server.claims if rule._server else ())
            ]
            values = server_values
            if client_params or needed:  # with neither, check_params could only return []
                values += check_params(
                    client_params, needed=needed, field="params", patterns=patterns
                )
        except WhereError as exc:
            raise _filter_error(exc) from None

        built = request[UPSTREAM]
        built.query["table"] = rule.table or name
        if (columns := rule.upstream_columns()) is not None:
            built.query["columns"] = columns
        if (queryable := rule.queryable_columns()) is not None:
            built.query["queryable_columns"] = queryable
        if rule.replica != "default":
            built.query["replica"] = rule.replica
        if where is not None:
            built.query["where"] = where
        for i, value in enumerate(values, start=1):
            built.query[f"params[{i}]"] = value

        self._subset_from_query(rule, query, built.query)
        if request.method == hdrs.METH_POST:
            if not rule.subsets:
                raise Forbidden("subset snapshots are not allowed", code="subsets_not_allowed")
            built.body = await self._subset_body(request, rule)
            built.headers[hdrs.CONTENT_TYPE] = "application/json"

    def _subset_from_query(
        self, rule: ShapeRule, query: MultiMapping[str], out: MultiDict[str]
    ) -> None:
        where = query.get("subset__where")
        order_by = query.get("subset__order_by")
        raw_params = query.get("subset__params")
        paging = [(k, query[k]) for k in SUBSET_PAGING_PARAMS if k in query]
        if where is None and order_by is None and raw_params is None and not paging:
            return
        if not rule.subsets:
            raise Forbidden("subset snapshots are not allowed", code="subsets_not_allowed")
        for key, value in paging:
            out[key] = _count(value, key, minimum=1 if key == "subset__limit" else 0)
        params = _json_params(raw_params, "subset__params") if raw_params is not None else {}
        subset = self._subset(rule, where, params, order_by, prefix="subset__")
        for key, value in subset.items():
            out[f"subset__{key}"] = value if isinstance(value, str) else json.dumps(value)

    def _subset(
        self,
        rule: ShapeRule,
        where: str | None,
        params: Mapping[str, str],
        order_by: str | None,
        *,
        prefix: str,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            needed = 0
            patterns: frozenset[int] = frozenset()
            if where is not None:
                parsed = parse_client_where(
                    where,
                    columns=rule._column_set,
                    limits=self.limits,
                    field=f"{prefix}where",
                    leakproof=rule.leakproof,
                )
                out["where"] = combine(None, parsed)
                needed, patterns = parsed.max_param, parsed.like_params
            values = check_params(params, needed=needed, field=f"{prefix}params", patterns=patterns)
            if values:
                out["params"] = {str(i): v for i, v in enumerate(values, start=1)}
            if order_by is not None:
                out["order_by"] = parse_order_by(
                    order_by, columns=rule._column_set, limits=self.limits
                )
        except WhereError as exc:
            raise _filter_error(exc) from None
        return out

    async def _subset_body(self, request: web.Request, rule: ShapeRule) -> bytes:
        if request.content_length is not None and request.content_length > self.max_body_size:
            raise PayloadTooLarge(f"the body is larger than {self.max_body_size} bytes")
        received = bytearray()
        async for chunk in request.content.iter_any():
            received += chunk
            if len(received) > self.max_body_size:
                raise PayloadTooLarge(f"the body is larger than {self.max_body_size} bytes")
        try:
            body = load_client_json(bytes(received), max_size=self.max_body_size)
        except JsonInputError as exc:
            raise InvalidBody(f"the body is not usable JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidBody("the body must be a JSON object")
        unknown = sorted(set(body) - _BODY_KEYS - _IGNORED_BODY_KEYS)
        if unknown:
            raise InvalidBody(
                "the body may only hold where, params, limit, offset and order_by",
                details={"keys": unknown},
            )
        where = _typed(body, "where", str)
        order_by = _typed(body, "order_by", str)
        limit = _typed(body, "limit", int)
        offset = _typed(body, "offset", int)
        if limit is not None and limit <= 0:
            raise InvalidBody("limit must be a positive integer")
        if offset is not None and offset < 0:
            raise InvalidBody("offset must not be negative")
        params = _params_object(body.get("params"), "params")
        rebuilt = self._subset(rule, where, params, order_by, prefix="")
        if limit is not None:
            rebuilt["limit"] = limit
        if offset is not None:
            rebuilt["offset"] = offset
        return json.dumps(rebuilt, separators=(",", ":")).encode()


def _count(value: str, field: str, *, minimum: int) -> str:
    """A paging number as Electric reads it, written back in one canonical form."""
    if not (value.isascii() and value.isdecimal() and len(value) <= 12) or int(value) < minimum:
        raise BadRequest(
            f"{field} must be a whole number of at least {minimum}",
            code="invalid_filter",
            details={"field": field},
        )
    return str(int(value))


def _typed(body: Mapping[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidBody(f"{key} must be a {kind.__name__}")
    return value


def _params_object(value: Any, field: str) -> dict[str, str]:
    """Params as Electric takes them: ``{"1": "v"}``, or the TS client's list form."""
    if value is None:
        return {}
    if isinstance(value, list):
        value = {str(i): v for i, v in enumerate(value, start=1)}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidBody(f"{field} must map numbers to strings")
    return value


def _json_params(raw: str, field: str) -> dict[str, str]:
    try:
        value = load_client_json(raw)
    except JsonInputError as exc:
        raise BadRequest(f"{field} is not usable JSON: {exc}", code="invalid_filter") from None
    try:
        return _params_object(value, field)
    except InvalidBody as exc:
        raise BadRequest(exc.message, code="invalid_filter") from None
