"""``/healthz`` and ``/readyz``: is the process up, and can it serve requests right now.

``/healthz`` answers ``200 {"status": "ok"}`` while the event loop runs (liveness).

``/readyz`` answers ``200 {"status": "ready", "checks": {...}}`` only when every check
passes, otherwise ``503 {"status": "unavailable", "checks": {...}}`` with each failed
check's problem in words:

* each endpoint's upstream answers through the proxy's own pooled session within
  ``timeout``. For shapes that is Electric's ``GET /v1/health`` (beside the shape path, at
  the upstream origin), which must be exactly ``200``: Electric says ``202`` while it starts
  or waits for its replication lock. Durable Streams servers have no health route, so a
  streams upstream counts as up when its base URL answers ``HEAD`` with any status below 500;
* every step's :meth:`~electric_proxy.Step.ready` hook (a JWT step with a ``jwks_url`` is
  not ready until its keys are loaded; the check fetches them);
* the endpoint is not shutting down.

``check_upstream = false`` leaves the upstream probes out (the shutdown check stays, under
``serving <route>``). Whether to ask Electric is a real choice: every replica asks the same
Electric, so when it is down they all go unready together, and a load balancer with no
ready backend answers with its own error page instead of the proxy's JSON ``502`` that
Electric's client understands and retries. Leave it on when there is another place to send
traffic (another region, another Electric); turn it off when there is not.

Once the process has been told to stop (:meth:`Health.stop`, which ``serve`` calls on
SIGTERM before a ``[server] drain_delay``), ``/readyz`` answers ``503`` at once without
running any check, so load balancers stop sending requests while the proxy still serves.

``/readyz`` is reachable by anyone who reaches the proxy, so it is cheap to hit: concurrent
probes share one run of the checks, and a result is reused for ``cache`` seconds (at most
one upstream request per endpoint per second by default). Bodies never carry the upstream
URL, a secret or an exception's text: problems are the fixed phrases below or what a step's
``ready()`` returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import aiohttp
from aiohttp import hdrs, web
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .chain import Step
from .endpoint import Endpoint
from .labels import step_labels

__all__ = [
    "HEALTH",
    "PROBE",
    "Health",
    "HealthSettings",
    "path_conflict",
]

log = logging.getLogger("electric_proxy.health")

#: ``trace_request_ctx`` of readiness probes, so upstream tracing can tell them from traffic.
PROBE: Mapping[str, Any] = MappingProxyType({"electric_proxy": "readiness probe"})

_NO_STORE = {hdrs.CACHE_CONTROL: "no-store"}


def path_conflict(path: str, shape_paths: Sequence[str], stream_paths: Sequence[str]) -> bool:
    """Whether ``path`` would shadow, or be shadowed by, a proxied route."""
    return path in shape_paths or any(
        path == prefix or path.startswith(prefix + "/") for prefix in stream_paths
    )


class HealthSettings(BaseModel):
    """The ``[health]`` section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="Serve /healthz and /readyz on the proxy's listener")
    healthz: str = Field("/healthz", description="Liveness path")
    readyz: str = Field("/readyz", description="Readiness path")
    timeout: float = Field(2.0, gt=0, le=30, description="Seconds each readiness check may take")
    cache: float = Field(1.0, ge=0, le=60, description="Seconds a readiness answer is reused")
    check_upstream: bool = Field(
        True,
        description="Whether /readyz asks each upstream (Electric's /v1/health); false keeps "
        "replicas ready while Electric is down, so clients get the proxy's 502, not the "
        "load balancer's",
    )

    @field_validator("healthz", "readyz")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or value == "/":
            raise ValueError("expected a path like /healthz")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> HealthSettings:
        if self.healthz == self.readyz:
            raise ValueError("healthz and readyz must be different paths")
        return self


class Health:
    """Liveness and readiness routes for some endpoints, on the app that serves them."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        healthz: str = "/healthz",
        readyz: str = "/readyz",
        timeout: float = 2.0,
        cache: float = 1.0,
        check_upstream: bool = True,
    ) -> None:
        self.settings = HealthSettings(
            healthz=healthz,
            readyz=readyz,
            timeout=timeout,
            cache=cache,
            check_upstream=check_upstream,
        )
        #: Set by :meth:`stop`: readiness is refused from then on, whatever the checks say.
        self.stopping = False
        self.endpoints = tuple(endpoints)
        for path in (healthz, readyz):
            if any(endpoint.serves(path) for endpoint in self.endpoints):
                raise ValueError(f"{path} is a proxied route; choose another health path")
        self._answer: tuple[float, dict[str, str]] | None = None
        self._running: asyncio.Task[dict[str, str]] | None = None

    @classmethod
    def from_settings(cls, endpoints: Sequence[Endpoint], settings: HealthSettings) -> Health:
        return cls(
            endpoints,
            healthz=settings.healthz,
            readyz=settings.readyz,
            timeout=settings.timeout,
            cache=settings.cache,
            check_upstream=settings.check_upstream,
        )

    def stop(self) -> None:
        """Answer ``/readyz`` with ``503`` from now on: the process is about to stop."""
        self.stopping = True

    def setup(self, app: web.Application) -> None:
        """Add the two routes to ``app``, the app the endpoints' upstream sessions live in."""
        app[HEALTH] = self
        app.router.add_get(self.settings.healthz, self.healthz)
        app.router.add_get(self.settings.readyz, self.readyz)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, headers=_NO_STORE)

    async def readyz(self, request: web.Request) -> web.Response:
        if self.stopping:
            # Not cached, not probed: a balancer must see this on its very next probe.
            checks = {"process": "shutting down"}
        else:
            checks = await self.check(request)
        ready = all(problem == "ok" for problem in checks.values())
        body = {"status": "ready" if ready else "unavailable", "checks": checks}
        return web.json_response(body, status=200 if ready else 503, headers=_NO_STORE)

    async def check(self, request: web.Request) -> dict[str, str]:
        """Every check's outcome, ``"ok"`` or its problem: shared and briefly reused."""
        loop = asyncio.get_running_loop()
        answer = self._answer
        if answer is not None and loop.time() - answer[0] < self.settings.cache:
            return answer[1]
        if self._running is None:
            sessions = {id(e): self._session(request, e) for e in self.endpoints}
            self._running = loop.create_task(self._run(sessions))
            self._running.add_done_callback(self._finished)
        # Shielded: a prober that hangs up must not cancel the check the others wait on.
        return await asyncio.shield(self._running)

    def _finished(self, task: asyncio.Task[dict[str, str]]) -> None:
        self._running = None
        if not task.cancelled() and task.exception() is None:
            self._answer = (asyncio.get_running_loop().time(), task.result())

    @staticmethod
    def _session(request: web.Request, endpoint: Endpoint) -> aiohttp.ClientSession | None:
        try:
            return endpoint.forwarder.session(request)
        except KeyError:
            return None

    async def _run(self, sessions: Mapping[int, aiohttp.ClientSession | None]) -> dict[str, str]:
        names: list[str] = []
        probes = []
        for endpoint in self.endpoints:
            route = endpoint.route_label
            if self.settings.check_upstream:
                names.append(f"upstream {route}")
                probes.append(self._upstream(endpoint, sessions[id(endpoint)]))
            else:
                names.append(f"serving {route}")
                probes.append(self._serving(endpoint))
            labels = step_labels(endpoint.steps)
            for step in endpoint.steps:
                if isinstance(step, Step) and type(step).ready is not Step.ready:
                    names.append(f"{labels[id(step)]} {route}")
                    probes.append(self._step(step))
        outcomes = await asyncio.gather(*probes)
        return {name: problem or "ok" for name, problem in zip(names, outcomes, strict=True)}

    @staticmethod
    async def _serving(endpoint: Endpoint) -> str | None:
        return "shutting down" if endpoint.inflight.draining else None

    async def _upstream(
        self, endpoint: Endpoint, session: aiohttp.ClientSession | None
    ) -> str | None:
        if endpoint.inflight.draining:
            return "shutting down"
        if session is None or session.closed:
            return "the upstream session is not open"
        method, url = endpoint.upstream_probe()
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        try:
            async with session.request(
                method, url, timeout=timeout, allow_redirects=False, trace_request_ctx=PROBE
            ) as response:
                status = response.status
        except TimeoutError:
            return "the upstream did not answer in time"
        except (aiohttp.ClientError, OSError) as exc:
            return f"the upstream cannot be reached ({type(exc).__name__})"
        return endpoint.upstream_problem(status)

    async def _step(self, step: Step) -> str | None:
        try:
            async with asyncio.timeout(self.settings.timeout):
                return await step.ready()
        except TimeoutError:
            return "did not answer in time"
        except Exception as exc:
            log.warning("readiness check of %s failed", type(step).__name__, exc_info=exc)
            return f"the check failed ({type(exc).__name__})"


#: The :class:`Health` set up on an app, for whoever must tell it the process is stopping.
HEALTH = web.AppKey("electric_proxy.health", Health)
