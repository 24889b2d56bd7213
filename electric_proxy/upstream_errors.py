"""Upstream errors reach the client only in the proxy's own words.

An upstream error body is text the proxy did not write: a 500 that quotes the request URL
carries the injected ``secret`` and ``source_id``, the server-decided ``where`` and the
claims bound into it; Electric's 400 ``unknown reference deleted_at`` shows a piece of the
server's own policy. So an error body is never passed on. The client gets a JSON error with
the upstream's status and a stable code; Electric's message only when it holds none of the
values the proxy injected or decided; and, for a 400 about a parameter the proxy decided,
the name of that parameter and no text. The upstream body goes to the log, with every value
the request carried masked.

Not replaced: 2xx and 304 (the data), and what an endpoint passes on itself (the shape
endpoint's 409 must-refetch control message, which the client needs).
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final
from urllib.parse import quote, quote_plus

from aiohttp import hdrs, web
from yarl import URL

from .chain import UpstreamRequest
from .errors import error_response

__all__ = ["ERROR_BODY_LIMIT", "UpstreamErrorCleaner", "error_body", "passes_must_refetch"]

log = logging.getLogger("electric_proxy.upstream")

#: Bytes of an upstream error body read (for the log); the rest is dropped with the connection.
ERROR_BODY_LIMIT: Final = 16 * 1024
_LOGGED_CHARS: Final = 1000

_CODES: Final = {
    400: "bad_request",
    401: "upstream_unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    412: "precondition_failed",
    413: "payload_too_large",
    414: "uri_too_long",
    429: "rate_limited",
    500: "upstream_error",
    501: "not_implemented",
    502: "upstream_unavailable",
    503: "service_unavailable",
    504: "upstream_timeout",
}
#: Response headers of an upstream error that clients act on (retry timing, stream state).
_KEPT_PREFIXES: Final = ("electric-", "stream-", "producer-")
_KEPT_HEADERS: Final = frozenset({"retry-after"})
_UPSTREAM_CODE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Values shorter than this are too common to be recognised in text, or to reveal anything.
_SHORTEST_MASKED: Final = 3
_QUERY_FORM: Final = URL("http://h/")


def error_body(response: web.Response) -> bytes:
    """An upstream error's body as text bytes: decompressed (bounded), or empty if unknown.

    Bodies pass the proxy compressed as Electric sent them; an error the proxy reads must be
    decoded first, and the client then gets a body with no ``Content-Encoding``.
    """
    raw = response.body
    encoding = response.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    for name in (hdrs.CONTENT_ENCODING, hdrs.CONTENT_LENGTH):
        response.headers.popall(name, None)
    if not isinstance(raw, bytes | bytearray):
        return b""
    if encoding == "identity":
        return bytes(raw[:ERROR_BODY_LIMIT])
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return b""
    window = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
    try:
        return zlib.decompressobj(window).decompress(bytes(raw), ERROR_BODY_LIMIT)
    except zlib.error:
        return b""


def _forms(value: str) -> Iterator[str]:
    """A value as it may appear in an upstream's text: as is, and percent-encoded the ways
    URLs are written (the forwarder's own query encoding among them)."""
    yield value
    yield quote(value, safe="")
    yield quote_plus(value, safe="")
    yield _QUERY_FORM.with_query({"v": value}).raw_query_string[2:]


class UpstreamErrorCleaner:
    """Turns one upstream error into the proxy's JSON error, and logs the original masked.

    ``fixed`` holds values the request always carries that the client must not see (the
    upstream's host and base path, which may name an Electric Cloud service).
    """

    def __init__(self, fixed: Iterable[str] = ()) -> None:
        self.fixed = tuple(v for v in fixed if len(v) >= _SHORTEST_MASKED)

    def __call__(
        self,
        request: web.Request,
        built: UpstreamRequest,
        upstream: web.StreamResponse,
        body: bytes,
    ) -> web.Response:
        client = set(request.query.items())
        decided_keys = {k for k, v in built.query.items() if (k, v) not in client}
        injected = [v for k, v in built.query.items() if k in decided_keys]
        injected += [v for k, v in built.headers.items() if request.headers.get(k) != v]
        secret = [v for v in (*injected, *self.fixed) if len(v) >= _SHORTEST_MASKED]
        every_value = [*secret, *(v for _, v in client if len(v) >= _SHORTEST_MASKED)]
        log.warning(
            "upstream answered %d to %s; its body (values masked): %s",
            upstream.status,
            built.method,
            _masked(body, every_value),
        )
        status = upstream.status
        code = _CODES.get(status, "upstream_error" if status >= 500 else "upstream_rejected")
        payload = _payload(body, secret, decided_keys, status)
        kept = {
            k: v
            for k, v in upstream.headers.items()
            if (lower := k.lower()) in _KEPT_HEADERS or lower.startswith(_KEPT_PREFIXES)
        }
        return error_response(status, code, {"error": code, **payload}, headers=kept, refusal=False)


def _masked(body: bytes, values: Iterable[str]) -> str:
    text = body.decode("utf-8", "replace")
    # Longest first, so a value that contains another is masked whole.
    for value in sorted({f for v in values for f in _forms(v)}, key=len, reverse=True):
        text = text.replace(value, "***")
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= _LOGGED_CHARS else text[:_LOGGED_CHARS] + "..."


def _clean(text: Any, secret: Iterable[str]) -> str | None:
    """``text`` when it is a string holding none of ``secret`` in any form, else None."""
    if not isinstance(text, str) or len(text) > 500:
        return None
    if any(form in text for value in secret for form in _forms(value)):
        return None
    return text if text.isprintable() else None


def _fields(errors: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Electric's ``{"errors": {"where": [...], "subset": {"where": [...]}}}``, flattened."""
    if not isinstance(errors, Mapping):
        return
    for key, value in errors.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _fields(value, f"{name}__")
        else:
            yield name, value


def _payload(body: bytes, secret: list[str], decided: set[str], status: int) -> dict[str, Any]:
    try:
        parsed = json.loads(body) if body else None
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, Mapping):
        parsed = {}
    message = _clean(parsed.get("message"), secret) or _clean(parsed.get("error"), secret)
    payload: dict[str, Any] = {"message": message or f"the upstream answered {status}"}
    upstream_code = parsed.get("code")
    if isinstance(upstream_code, str) and _UPSTREAM_CODE.fullmatch(upstream_code):
        payload["upstream_code"] = upstream_code
    fields: dict[str, list[str]] = {}
    refused: list[str] = []
    for name, messages in _fields(parsed.get("errors")):
        if name in decided or name.split("[", 1)[0] in {d.split("[", 1)[0] for d in decided}:
            refused.append(name)
            continue
        items = messages if isinstance(messages, list) else [messages]
        clean = [c for m in items if (c := _clean(m, secret)) is not None]
        if clean:
            fields[name] = clean
    if fields:
        payload["fields"] = fields
    if refused:
        payload["refused_parameters"] = sorted(refused)
        payload["message"] = (
            "the upstream refused parameters the proxy decided for this shape: "
            + ", ".join(sorted(refused))
        )
    return payload


def passes_must_refetch(body: bytes) -> bool:
    """Whether a 409 body is only Electric's control messages (``[{"headers": {...}}]``)."""
    try:
        messages = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return (
        isinstance(messages, list)
        and bool(messages)
        and all(
            isinstance(m, dict)
            and set(m) == {"headers"}
            and isinstance(m["headers"], dict)
            and all(isinstance(v, str) and len(v) <= 64 for v in m["headers"].values())
            for m in messages
        )
    )
