"""The decision audit log: one JSON line per request on the proxy's routes, for a SIEM.

The access log says what was asked; this says what the proxy *decided* and on whose
behalf: who (the principal's id), which shape, allowed or refused, by which step and with
which code. Off by default (``[audit] enabled = true``); in code, an :class:`Audit` is
given to an endpoint as an observer, like :class:`~electric_proxy.Metrics`::

    audit = Audit()
    proxy = ShapeProxy(upstream=..., chain=[...], observers=[audit])

Records go to the ``electric_proxy.audit`` logger, each message one JSON object, so any
logging setup can ship them; ``[audit] file`` appends them to a file of their own (one
object per line, nothing else on it), which is what a SIEM agent tails.

A record holds no secret, token, claim value or client filter value, by construction: the
fields are chosen here, never copied from the request wholesale. The shape is recorded as
``shape_hash``, the SHA-256 of the server-decided ``table``, ``columns``, ``where`` and
``params``: equal hashes are the same rows for the same tenant, without the values. (A
hash of a guessable value can be confirmed by someone who guesses it and holds the config:
it groups, it does not encrypt.) Refusals carry their ``code``, never their message, which
may quote the client's filter.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import logging.handlers
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from .chain import Handler, Middleware
from .keys import CLIENT_QUERY, PRINCIPAL, REFUSAL, REQUEST_ID, UPSTREAM, UPSTREAM_STATUS
from .labels import step_labels

if TYPE_CHECKING:
    from .endpoint import Endpoint

__all__ = ["AUDIT_LOGGER", "Audit", "AuditSettings", "shape_hash"]

#: The logger every record goes to.
AUDIT_LOGGER = "electric_proxy.audit"
#: A client-named shape longer than this is cut (a refused name is the client's text).
_SHAPE_NAME_LIMIT = 128
#: The server-decided parameters that define the rows a request gets.
_SHAPE_KEYS = ("table", "columns", "where")


class AuditSettings(BaseModel):
    """The ``[audit]`` section: whether decisions are recorded, and where."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(False, description="One JSON record per decision, on its own logger")
    file: str | None = Field(
        None,
        description="Append the records to this file as JSON lines; unset: the "
        "electric_proxy.audit logger's handlers only",
    )


def shape_hash(query: Any) -> str | None:
    """SHA-256 (hex) of the shape a built upstream query defines, or ``None`` without one.

    Canonical JSON of ``table``, ``columns``, ``where`` and the ``params[n]`` in order, so
    the same rows for the same principal always hash alike, whatever order steps set them.
    """
    if "table" not in query:
        return None
    params: list[str] = []
    while (value := query.get(f"params[{len(params) + 1}]")) is not None:
        params.append(value)
    shape = {key: query.get(key) for key in _SHAPE_KEYS}
    text = json.dumps({**shape, "params": params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Audit:
    """Records every decision of the endpoints it observes (give it as an observer)."""

    def __init__(
        self,
        *,
        logger: logging.Logger | None = None,
        file: str | None = None,
        clock: Callable[[], str] = _now,
    ) -> None:
        self.logger = logger or logging.getLogger(AUDIT_LOGGER)
        self.file = file
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> Audit | None:
        """The audit of ``[audit]``, or ``None`` when it is off."""
        return cls(file=settings.file) if settings.enabled else None

    def setup(self, app: web.Application) -> None:
        """With ``file``: open it when ``app`` starts, close it when it stops."""
        if self.file is not None:
            app.cleanup_ctx.append(self._file_ctx)

    async def _file_ctx(self, app: web.Application) -> AsyncIterator[None]:
        assert self.file is not None
        # Watched: a log rotation that moves the file is followed, not written past.
        handler = logging.handlers.WatchedFileHandler(self.file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = self.logger
        level, propagate = logger.level, logger.propagate
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # the file has the records; the console need not repeat them
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
            handler.close()

    def observe(self, endpoint: Endpoint) -> Middleware:
        """The middleware that records ``endpoint``'s decisions (see ``EndpointObserver``)."""
        route = endpoint.route_label
        labels = step_labels(endpoint.steps)

        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                response = await handler(request)
            except asyncio.CancelledError:
                self._emit(request, route, {"decision": "cancelled"})
                raise
            except Exception:
                self._emit(request, route, {"decision": "error", "status": 500})
                raise
            outcome: dict[str, Any] = {"decision": "allowed", "status": response.status}
            refusal = response.get(REFUSAL)
            if refusal is not None:
                who = refusal.step
                outcome["decision"] = "refused"
                outcome["step"] = "endpoint" if who is None else labels.get(id(who), "other")
                outcome["code"] = refusal.code
            if (upstream_status := request.get(UPSTREAM_STATUS)) is not None:
                outcome["upstream_status"] = upstream_status
            self._emit(request, route, outcome)
            return response

        return record

    def _emit(self, request: web.Request, route: str, outcome: dict[str, Any]) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        principal = request.get(PRINCIPAL)
        built = request.get(UPSTREAM)
        query = request.get(CLIENT_QUERY)
        shape = query.get("table") if query is not None else None
        record = {
            "time": self._clock(),
            "request_id": request.get(REQUEST_ID),
            "principal": principal.id if principal is not None else None,
            "route": route,
            "method": request.method,
            "shape": shape[:_SHAPE_NAME_LIMIT] if isinstance(shape, str) else None,
            "shape_hash": shape_hash(built.query) if built is not None else None,
            **outcome,
        }
        self.logger.info("%s", json.dumps(record, separators=(",", ":")))
