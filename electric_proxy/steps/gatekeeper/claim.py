"""The gatekeeper's shape claim: the one shape a token grants, and how a request matches it.

The issuer validates a shape into this form before signing it, and the verifier reads the
signed claim back into it, so both sides agree on one canonical shape: ``params`` numbered
from 1 without gaps, ``columns`` as Postgres names.
"""

from __future__ import annotations

from typing import Any, Literal

from multidict import MultiMapping
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from ...protocol import positional_params
from ...where import quote_ident, split_identifiers

__all__ = ["ShapeClaim"]


class ShapeClaim(BaseModel):
    """The one shape a gatekeeper token grants, in the form the TypeScript client takes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    table: str = Field(min_length=1, description="As the client sends it, e.g. `public.todos`")
    where: str | None = Field(None, min_length=1)
    params: dict[str, str] = Field(
        default_factory=dict, description='{"1": "acme"} or ["acme"]; values bind $1, $2, ...'
    )
    columns: tuple[str, ...] | None = Field(
        None, min_length=1, description='Column names, or one "id,title" string'
    )
    replica: Literal["default", "full"] = "default"

    @field_validator("params", mode="before")
    @classmethod
    def _numbered(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return {str(i): v for i, v in enumerate(value, start=1)}
        return value

    @field_validator("params")
    @classmethod
    def _sequential(cls, value: dict[str, str]) -> dict[str, str]:
        if sorted(value) != sorted(str(i) for i in range(1, len(value) + 1)):
            raise ValueError("params must be numbered 1, 2, ... without gaps")
        return {str(i): value[str(i)] for i in range(1, len(value) + 1)}

    @field_validator("columns", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        if isinstance(value, str):
            names = split_identifiers(value)
            if names is None:
                raise ValueError("not a list of column names")
            return names
        return value

    @field_serializer("columns")
    def _as_list(self, value: tuple[str, ...] | None) -> list[str] | None:
        return list(value) if value is not None else None

    def claim(self) -> dict[str, Any]:
        """The canonical JSON form, as it goes into a token and out to the client."""
        return self.model_dump(mode="json", exclude_none=True)

    def upstream_params(self) -> list[tuple[str, str]]:
        """The shape parameters Electric gets: the claim's, whatever the client sent."""
        out = [("table", self.table)]
        if self.columns is not None:
            out.append(("columns", ",".join(quote_ident(c) for c in self.columns)))
        if self.replica != "default":
            out.append(("replica", self.replica))
        if self.where is not None:
            out.append(("where", self.where))
        out += [(f"params[{n}]", v) for n, v in self.params.items()]
        return out

    def mismatch(self, query: MultiMapping[str]) -> str | None:
        """The first shape parameter where the client's request differs from this claim."""
        if query.get("table") != self.table:
            return "table"
        if query.get("where") != self.where:
            return "where"
        sent, unclosed = positional_params(query)
        if unclosed or sent != self.params:
            return "params"
        columns = query.get("columns")
        if (split_identifiers(columns) if columns is not None else None) != self.columns:
            return "columns"
        if query.get("replica", "default") != self.replica:
            return "replica"
        return None
