"""The policy explainer: what the configured proxy would do with one request, and why.

``electric-proxy explain`` and :func:`explain` answer "may this user sync this shape, and
what exactly goes to Electric?" without a token or a running Electric, so a team can read
its rules' effect and pin it in golden tests.

The explanation must not drift from what ``serve`` does, so nothing here re-implements a
decision: the shape endpoint is assembled by :func:`~electric_proxy.server.build_shapes`
from the same config, served on a loopback port and sent the request over HTTP, like any
client's. Only two things differ, both at the edges of the chain:

* the authenticators (steps whose ``authenticates`` is true) are replaced by one step that
  sets the given :class:`~electric_proxy.Principal` (or none, for an anonymous request),
  unless ``authenticate`` asks for them to check the request's own token;
* the forwarder records the built :class:`~electric_proxy.UpstreamRequest` and its URL
  instead of sending it, and answers an empty 200 (with ``sync``, it sends it as well, and
  Electric's answer comes back through the chain as in ``serve``).

Secrets in the recorded URL (``secret``, ``api_secret``, ``source_secret``, and any value
of a step's secret option) are masked before the :class:`Decision` holds them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from multidict import MultiDict
from pydantic import BaseModel, SecretStr
from yarl import URL

from .chain import Handler, Middleware, Principal, Step, UpstreamRequest
from .config import ConfigError, ProxyConfig
from .endpoint import Endpoint
from .forward import Forwarder
from .keys import PRINCIPAL, REFUSAL, UPSTREAM
from .labels import step_labels
from .server import build_shapes

__all__ = ["MASK", "Decision", "explain", "explain_async"]

#: What a secret looks like in an explained URL.
MASK = "**********"
#: Query parameters that carry Electric's credentials, masked whatever step set them.
_SECRET_PARAMS = frozenset({"secret", "api_secret", "source_secret"})
#: Characters of a request target kept as typed: printable ASCII that RFC 3986 allows, '%'
#: included, so percent-escapes reach the endpoint exactly as a client would send them.
_TARGET_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"<>\\^`{|}')


@dataclass(frozen=True, slots=True)
class Decision:
    """What the proxy decided for one request.

    Allowed: ``status`` is 200 and ``upstream_url`` (secrets masked), ``where`` and
    ``params`` (``$1``, ``$2``, ... in order) are what Electric would be sent. Refused:
    ``status``, ``code`` and ``reason`` are the client's error answer, and ``step`` names
    the step that refused (its metrics label, e.g. ``ShapePolicy``), or ``endpoint`` when
    the endpoint itself did (an unknown path, a method).
    """

    allowed: bool
    status: int
    code: str | None = None
    step: str | None = None
    reason: str | None = None
    upstream_url: str | None = None
    where: str | None = None
    params: tuple[str, ...] = ()
    #: With ``sync``: the row values of Electric's first answer; ``None`` without.
    rows: tuple[Mapping[str, Any], ...] | None = None


class _AsPrincipal(Step):
    """Stands in for the authenticators: the principal being explained, or nobody."""

    principal: Principal | None = None

    async def on_request(self, request: web.Request) -> None:
        if self.principal is not None:
            request[PRINCIPAL] = self.principal


class _Recording(Forwarder):
    """The forwarder, recording what goes upstream; with ``send`` false, sending nothing."""

    def __init__(self, forwarder: Forwarder, *, send: bool) -> None:
        super().__init__(forwarder.settings)
        self.send = send
        self.built: UpstreamRequest | None = None
        self.sent_url = self.url

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.built = request[UPSTREAM]
        self.sent_url = self.upstream_url(self.built)
        if self.send:
            return await super().__call__(request)
        return web.Response(status=200, body=b"[]", content_type="application/json")


class _Refusals:
    """An endpoint observer that keeps the refusing step's label, seen only server-side."""

    def __init__(self) -> None:
        self.step: str | None = None

    def observe(self, endpoint: Endpoint) -> Middleware:
        labels = step_labels(endpoint.steps)

        async def watch(request: web.Request, handler: Handler) -> web.StreamResponse:
            response = await handler(request)
            refusal = response.get(REFUSAL)
            if refusal is not None:
                who = refusal.step
                self.step = "endpoint" if who is None else labels.get(id(who), "other")
            return response

        return watch


def _secret_values(value: Any, found: set[str]) -> set[str]:
    """Every secret option's value in ``value`` (steps, their nested options), so it is
    masked wherever a step puts it, whatever the parameter is called."""
    if isinstance(value, SecretStr):
        if secret := value.get_secret_value():
            found.add(secret)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _secret_values(getattr(value, name), found)
    elif isinstance(value, Mapping):
        for item in value.values():
            _secret_values(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _secret_values(item, found)
    return found


def _masked(url: URL, secrets: set[str]) -> str:
    query = MultiDict(
        (k, MASK if k in _SECRET_PARAMS or v in secrets else v) for k, v in url.query.items()
    )
    return str(url.with_query(query)) if query else str(url)


def _rows(text: str) -> tuple[Mapping[str, Any], ...]:
    """The row values in a shape log response (its data messages; control ones skipped)."""
    try:
        messages = json.loads(text)
    except ValueError:
        return ()
    if isinstance(messages, dict):  # a subset snapshot: {"metadata": ..., "data": [...]}
        messages = messages.get("data", [])
    if not isinstance(messages, list):
        return ()
    return tuple(
        m["value"] for m in messages if isinstance(m, dict) and isinstance(m.get("value"), dict)
    )


def _params(query: Mapping[str, str]) -> tuple[str, ...]:
    values: list[str] = []
    while (value := query.get(f"params[{len(values) + 1}]")) is not None:
        values.append(value)
    return tuple(values)


async def explain_async(
    config: ProxyConfig,
    principal: Principal | None,
    request: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    sync: bool = False,
    authenticate: bool = False,
) -> Decision:
    """:func:`explain` for code already on an event loop (an async test)."""
    if config.upstream is None:
        raise ConfigError(["upstream: no shape endpoint is configured to explain"])
    if authenticate and principal is not None:
        raise ValueError("authenticate=True reads the principal from the request: pass None")
    # Sent as typed (a client's `%73` stays `%73`), only what no request line may hold encoded.
    target = URL(quote(request, safe=_TARGET_SAFE), encoded=True)
    if target.is_absolute():
        target = target.relative()
    steps = config.steps
    if not authenticate:
        steps = (
            ("explain", _AsPrincipal(principal=principal)),
            *((n, s) for n, s in config.steps if not s.authenticates),
        )
    recorder = _Refusals()
    endpoint = build_shapes(dataclasses.replace(config, steps=steps), [recorder])
    recording = _Recording(endpoint.forwarder, send=sync)
    endpoint.forwarder = recording
    runner = web.AppRunner(endpoint.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        origin = URL(f"http://127.0.0.1:{runner.addresses[0][1]}")
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method, origin.join(target), headers=headers, data=body, allow_redirects=False
            ) as response,
        ):
            status = response.status
            text = await response.text()
    finally:
        await runner.cleanup()
    built = recording.built
    if built is not None and status < 400:
        return Decision(
            allowed=True,
            status=status,
            upstream_url=_masked(recording.sent_url, _secret_values(config.steps, set())),
            where=built.query.get("where"),
            params=_params(built.query),
            rows=_rows(text) if sync else None,
        )
    code = reason = None
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if isinstance(answer, dict):
        code = answer.get("error") if isinstance(answer.get("error"), str) else None
        reason = answer.get("message") if isinstance(answer.get("message"), str) else None
    # No refusal observed: Electric's error (only with sync), or the router's answer before
    # the endpoint (a path it does not serve).
    step = recorder.step or ("upstream" if built is not None else "endpoint")
    return Decision(allowed=False, status=status, code=code, step=step, reason=reason)


def explain(
    config: ProxyConfig,
    principal: Principal | None,
    request: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    sync: bool = False,
    authenticate: bool = False,
) -> Decision:
    """What ``config``'s shape endpoint decides for ``principal`` asking for ``request``.

    ``request`` is the client's target, ``/v1/shape?table=todos&where=...`` (spaces and the
    like may be written plainly); ``principal`` ``None`` asks anonymously. The configured
    chain runs as ``serve`` runs it, the authenticators replaced by ``principal``, and the
    upstream request is recorded instead of sent (see the module docstring). With ``sync``
    it is sent to the configured Electric as well, and the decision holds the rows of its
    answer. With ``authenticate`` the authenticators stay and read the request's own
    credentials (``headers={"Authorization": "Bearer <token>"}``, a gatekeeper token whose
    grant is the shape); ``principal`` must then be ``None``. From a coroutine, await
    :func:`explain_async` instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("explain() needs its own event loop; await explain_async() here")
    return asyncio.run(
        explain_async(
            config,
            principal,
            request,
            method=method,
            headers=headers,
            body=body,
            sync=sync,
            authenticate=authenticate,
        )
    )
