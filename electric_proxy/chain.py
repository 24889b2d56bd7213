"""The step protocol, the ordered chain, and the per-request state steps share.

A step has aiohttp's middleware shape, ``async (request, handler) -> StreamResponse``, so
anything that works as an aiohttp middleware idea works here. The chain differs from
``web.Application(middlewares=...)`` in two ways that matter for a security proxy: it
wraps one route only (the user's other routes are untouched), and the order is exactly
the configured order.

Most steps only act before the upstream call (check, decide, edit the upstream request) and
after it (adjust headers). A :class:`Step` that writes just those two phases
(:meth:`Step.on_request`, :meth:`Step.on_response`) instead of ``__call__`` is run by the
chain itself, its neighbours of the same kind in one loop: no coroutine of its own stays
alive while the request waits for Electric. Thousands of long-polls are held at once, each
keeping every frame above its upstream call; a run of phased steps keeps one.

Inside the chain, ``handler(request)`` always returns a response: a step that raises
:class:`~electric_proxy.errors.ProxyError` is answered with that error right there, and
the steps outside it still adjust the error response as it unwinds (a browser cannot
read a 401 that lacks CORS headers).
"""

from __future__ import annotations

import abc
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, ClassVar, Literal, cast

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiDict, MultiMapping
from pydantic import BaseModel, ConfigDict

from .errors import DuplicateParameter, answer_for
from .keys import CLIENT_QUERY
from .protocol import PARAMS_PREFIX, PASS_THROUGH_PARAMS, SINGLE_VALUED_PARAMS

__all__ = [
    "Handler",
    "Middleware",
    "Principal",
    "Route",
    "Step",
    "StepMetric",
    "UpstreamRequest",
    "client_query",
    "compose",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: an identity plus the claims that policies bind into `where` params."""

    id: str
    claims: Mapping[str, Any] = field(default_factory=dict)

    def claim(self, path: str) -> Any:
        """Look up a claim by dotted path (``org.id``); KeyError when any part is missing."""
        value: Any = self.claims
        for part in path.split("."):
            if not isinstance(value, Mapping):
                raise KeyError(path)
            value = value[part]
        return value


@dataclass(slots=True)
class UpstreamRequest:
    """The request the chain is building for the upstream: the one object policies decide on.

    The endpoint parses the client's target once into this object before any step runs;
    steps read and edit it; the forwarder serialises exactly it. Nothing is re-derived from
    the client's raw request after a policy has looked, so what is checked is what is sent.

    ``path`` holds decoded segments appended to the upstream URL (each percent-encoded on
    the way out, so a segment can never turn into two). ``query`` starts with the client's
    protocol parameters only; steps add the server-decided ones (shape, credentials).
    """

    method: str
    path: tuple[str, ...] = ()
    query: MultiDict[str] = field(default_factory=MultiDict)
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    body: bytes | AsyncIterable[bytes] | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """What the endpoint serving a request accepts, for steps that answer on its behalf.

    A CORS preflight, for one, must allow exactly the methods and request headers of the
    endpoint it is about, and expose the response headers that endpoint's clients read.
    """

    methods: frozenset[str]
    request_headers: frozenset[str]
    exposed_headers: tuple[str, ...]
    #: ``methods`` as one header value (``Allow``, ``Access-Control-Allow-Methods``), written
    #: once so the endpoint's 405 and a CORS preflight can never list different methods.
    allow: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow", ", ".join(sorted(self.methods)))


def client_query(request: web.Request) -> MultiMapping[str]:
    """The client's query string, refused if it repeats a key the proxy reads.

    Electric keeps the *last* value of a repeated key; a check that reads the first one
    could be bypassed, so a repeat is an error rather than a choice.
    """
    if CLIENT_QUERY in request:
        return request[CLIENT_QUERY]
    query: MultiMapping[str] = request.query
    seen: set[str] = set()
    for key, _ in query.items():  # keys() would hide the repeats
        if key in seen and (key in SINGLE_VALUED_PARAMS or key.startswith(PARAMS_PREFIX)):
            raise DuplicateParameter(
                f"query parameter {key!r} is given more than once", details={"parameter": key}
            )
        seen.add(key)
    request[CLIENT_QUERY] = query
    return query


def pass_through_params(request: web.Request) -> MultiDict[str]:
    """The client's protocol parameters: the only part of its query sent as it came."""
    query = client_query(request)
    return MultiDict([(k, v) for k, v in query.items() if k in PASS_THROUGH_PARAMS])


@dataclass(frozen=True, slots=True)
class StepMetric:
    """One number a step reports when metrics are scraped (see :meth:`Step.metrics`).

    ``name`` is the full metric name (a counter's ``_total`` is added by the exposition);
    ``labels`` are the step's own, beside the ``route`` and ``step`` labels the proxy adds.
    Keep label values bounded and free of user data.
    """

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


class Step(BaseModel, abc.ABC):
    """Base class for configurable steps (built-in and plugins alike).

    Options are the model's fields, validated once when the step is built, from code or
    from the config file, so a bad option fails start-up and never a request. Precompute
    in ``model_post_init`` into private attributes; the per-request path should only read.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    async def on_request(self, request: web.Request) -> web.StreamResponse | None:
        """Before the rest of the chain: check the request, edit ``request[UPSTREAM]``, or
        answer it (return a response, or raise a ``ProxyError``); ``None`` continues."""
        return None

    def on_response(self, request: web.Request, response: web.StreamResponse) -> None:
        """As the answer unwinds (the upstream's, or one a later step made): adjust its
        headers. It runs when :meth:`on_request` returned ``None`` and before the body
        exists, so it must not block."""

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The step as a middleware: call ``await handler(request)`` to continue down the
        chain. Override it (instead of the two phases) for a step that must be around the
        rest of the chain: one that times it, holds a resource across it, or retries."""
        answer = await self.on_request(request)
        if answer is not None:
            return answer
        response = await handler(request)
        self.on_response(request, response)
        return response

    @classmethod
    def phased(cls) -> bool:
        """Whether the step is its two phases alone (the chain then runs them inline)."""
        return cls.__call__ is Step.__call__

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """Hold app-lifetime resources (an HTTP session, a cache): set up, yield, tear down.

        Registered in the host app's ``cleanup_ctx`` only when a step overrides it.
        """
        yield

    def upstream_trace_configs(self) -> Sequence[aiohttp.TraceConfig]:
        """Client tracing hooks for the upstream session (spans, latency metrics).

        Steps only see the request and the response; a tracing plugin also needs the
        upstream call itself, and aiohttp's ``TraceConfig`` is the place it is observable.
        """
        return ()

    async def ready(self) -> str | None:
        """Why this step cannot serve requests right now (for ``/readyz``), or ``None``.

        Say what is wrong in words safe to show anyone: no secret, token or internal URL.
        """
        return None

    #: Whether this step authenticates (metrics count its refusals as auth failures).
    authenticates: ClassVar[bool] = False

    def metrics(self) -> Iterable[StepMetric]:
        """Numbers the step keeps (fetches, refusals, backend errors), read at scrape time.

        Beside :meth:`ready`: how a built-in or third-party step reaches ``/metrics``
        without the metrics module knowing its class.
        """
        return ()

    def identity_headers(self) -> Sequence[str] | None:
        """The request headers this step tells users apart by, or ``None`` if unknown.

        The endpoint marks every response ``Vary`` on the union of these (so a shared cache
        keeps one entry per user), or ``private`` when any step identifies users by means it
        does not name. Steps that identify nobody return ``()``, the default here;
        :class:`~electric_proxy.Authenticator` defaults to ``None``.
        """
        return ()

    @classmethod
    def holds_resources(cls) -> bool:
        return cls.cleanup_ctx is not Step.cleanup_ctx


def _guarded(step: Middleware, inner: Handler) -> Handler:
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await step(request, inner)
        except Exception as exc:  # a step's bug must not skip the outer steps
            return answer_for(exc, step)

    return run


def _guarded_endpoint(endpoint: Handler) -> Handler:
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await endpoint(request)
        except Exception as exc:
            return answer_for(exc)

    return run


def _in_phases(steps: Sequence[Step], inner: Handler) -> Handler:
    """Run consecutive phased ``steps`` around ``inner`` in one frame, with the guarantees
    of :func:`_guarded` for each: a step that raises is answered right there, and only the
    steps before it see that answer on its way out."""
    ordered = tuple(steps)

    async def run(request: web.Request) -> web.StreamResponse:
        passed = 0  # the steps whose on_request let the request through
        response: web.StreamResponse | None = None
        for step in ordered:
            try:
                response = await step.on_request(request)
            except Exception as exc:
                response = answer_for(exc, step)
            if response is not None:
                break
            passed += 1
        if response is None:
            try:
                response = await inner(request)
            except Exception as exc:  # only the endpoint raises: guarded steps answer
                response = answer_for(exc)
        for step in reversed(ordered[:passed]):
            try:
                step.on_response(request, response)
            except Exception as exc:
                response = answer_for(exc, step)
        return response

    return run


def compose(steps: Sequence[Middleware], endpoint: Handler) -> Handler:
    """Wrap ``endpoint`` so that ``steps[0]`` runs first and sees the response last.

    Each run of consecutive phased steps becomes one handler; any other step wraps what
    follows it as a middleware.
    """

    def phased(step: Middleware) -> bool:
        return isinstance(step, Step) and step.phased()

    handler = endpoint
    for in_phases, group in reversed([(k, list(g)) for k, g in groupby(steps, key=phased)]):
        if in_phases:
            handler = _in_phases(cast(list[Step], group), handler)  # answers what it wraps
            continue
        for step in reversed(group):
            if handler is endpoint:  # a middleware is always handed a response
                handler = _guarded_endpoint(endpoint)
            handler = _guarded(step, handler)
    return _guarded_endpoint(endpoint) if handler is endpoint else handler
