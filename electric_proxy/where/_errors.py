"""How a refusal travels: raised inside the package, cached as a value, reported as WhereError."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from ..errors import ElectricProxyError

_P = ParamSpec("_P")
_T = TypeVar("_T")


class WhereError(ElectricProxyError, ValueError):
    """A filter that the proxy refuses.

    ``reason`` is written to be shown to the client as is: it only ever quotes the client's
    own input back. ``position`` is a 0-based character offset into the offending text, or
    None when no single place is to blame. ``field`` names the input (``where``,
    ``subset__where``, ``subset__order_by``, ``params``, ``server_where`` ...), so the caller
    can build Electric-style ``errors.<field>`` bodies.
    """

    reason: str
    position: int | None
    field: str

    def __init__(self, reason: str, *, position: int | None = None, field: str = "where") -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position
        self.field = field

    def __str__(self) -> str:
        at = "" if self.position is None else f" (at position {self.position})"
        return f"{self.field}: {self.reason}{at}"

    def __repr__(self) -> str:
        return f"WhereError({self.reason!r}, position={self.position!r}, field={self.field!r})"

    def to_dict(self) -> dict[str, object]:
        """The error as JSON-ready data, so every caller reports it the same way."""
        return {"field": self.field, "reason": self.reason, "position": self.position}


class _Rejected(ElectricProxyError):
    """Internal carrier for a refusal before the caller's field name is known."""

    def __init__(self, reason: str, position: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position


@dataclass(frozen=True)
class _Rejection:
    """A refusal in a form that can sit in a cache without being mutated or re-raised."""

    reason: str
    position: int | None


def _capture(parse: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T | _Rejection:
    """Run ``parse``, returning its refusal (or a too-deep recursion) instead of raising it."""
    try:
        return parse(*args, **kwargs)
    except _Rejected as exc:
        return _Rejection(exc.reason, exc.position)
    except RecursionError:
        return _Rejection("is nested too deeply", None)


def _unwrap(result: _T | _Rejection, field: str) -> _T:
    """The result of :func:`_capture`, or its refusal raised as a WhereError for ``field``."""
    if isinstance(result, _Rejection):
        raise WhereError(result.reason, position=result.position, field=field)
    return result
