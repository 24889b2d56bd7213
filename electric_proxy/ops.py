"""The operations side of a configured proxy: health routes and metrics, added to its app.

:func:`electric_proxy.server.build_app` (behind ``ProxyConfig.app()``) calls
:func:`add_operations` after the endpoints are set up; embedding code does the same with
:class:`~electric_proxy.Health` and :class:`~electric_proxy.Metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from .app import Endpoint
from .health import Health, HealthSettings
from .metrics import Metrics, MetricsSettings

__all__ = ["add_operations"]


def add_operations(
    app: web.Application,
    endpoints: Sequence[Endpoint],
    *,
    health: HealthSettings,
    metrics: MetricsSettings | None,
    worker: int = 0,
) -> Metrics | None:
    """Health routes (unless disabled) and, when configured, metrics with their listener.

    Worker ``i`` of ``serve --workers N`` serves its metrics on ``port + i``: each worker
    counts only its own requests, so each is a scrape target of its own.
    """
    if health.enabled:
        Health.from_settings(endpoints, health).setup(app)
    if metrics is None:
        return None
    collected = Metrics(endpoints)
    collected.setup(app, path=metrics.main_path)
    if metrics.listener:
        port = metrics.port + worker if metrics.port else 0
        app.cleanup_ctx.append(collected.listener(metrics.host, port, metrics.path))
    return collected
