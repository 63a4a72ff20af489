"""Wires the operations pieces into the app: /metrics, /dashboard, webhooks, drain, request logs.

``create_app`` calls :func:`install_operations` once, before it registers its own lifecycle, so the
webhook workers outlive the room shutdown and can still send ``room_ended``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.config import GatewayConfig
from gateway.dashboard import install_dashboard
from gateway.drain import install_drain
from gateway.logs import REQUEST_ID
from gateway.metrics import ObservedDelaySampler, Operations
from gateway.webhooks import WebhookEmitter, install_webhooks
from signaling.context import CONTEXT, client_of
from signaling.errors import ERROR_CODE
from signaling.errors import REQUEST_ID as REQUEST_KEY

log = logging.getLogger("cherry.gateway.http")

OPERATIONS = web.AppKey("operations", Operations)
WEBHOOKS = web.AppKey("webhooks", WebhookEmitter)
# Prometheus text format 0.0.4, which every scraper reads.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Paths polled all the time: their request lines are debug, not info.
QUIET_PREFIXES = ("/metrics", "/dashboard", "/healthz", "/readyz", "/static/", "/rooms")
# Start time of each request (for the request log line).
_STARTED: Any = (web.RequestKey("cherry_request_started", float) if hasattr(web, "RequestKey")
                 else "cherry_request_started")


def install_operations(app: web.Application, config: GatewayConfig) -> Operations:
    ctx = app[CONTEXT]
    webhooks = install_webhooks(app, config.webhooks, ctx.rooms)
    app[WEBHOOKS] = webhooks
    ops = Operations(ctx, config.metrics.top_rooms, extra=lambda: _webhook_metrics(webhooks))
    # Publications created from now on feed the forwarding-delay histogram too.
    ctx.relay.hooks.forwarding_delay = ObservedDelaySampler(ops.forwarding_delay.observe)
    app[OPERATIONS] = ops
    install_drain(app, config.drain)
    app.middlewares.append(_request_context)
    app.on_response_prepare.append(_on_response)
    if config.metrics.enabled:
        app.router.add_get("/metrics", _metrics)
    if config.metrics.dashboard:
        install_dashboard(app, ops, config.metrics)
    return ops


async def _metrics(request: web.Request) -> web.Response:
    return metrics_response(request.app[OPERATIONS])


def metrics_response(ops: Operations) -> web.Response:
    """The Prometheus exposition, labelled with node and worker in a cluster (``Operations.label_all``)."""
    return web.Response(body=generate_latest(ops.exported), headers={"Content-Type": METRICS_CONTENT_TYPE})


def _webhook_metrics(emitter: WebhookEmitter) -> Iterator[Metric]:
    events = CounterMetricFamily("cherry_webhook_events", "Webhook events by outcome (retries: extra attempts)",
                                 labels=["result"])
    for result in ("emitted", "delivered", "failed", "dropped", "retries"):
        events.add_metric([result], emitter.stats[result])
    yield events
    yield GaugeMetricFamily("cherry_webhook_queue_depth", "Webhook events waiting, all receivers",
                            value=sum(q.qsize() for q in emitter._queues.values()))


@web.middleware
async def _request_context(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Tags every log line written while handling this request (and tasks it starts) with its id."""
    token = REQUEST_ID.set(request.get(REQUEST_KEY))
    request[_STARTED] = time.monotonic()
    try:
        return await handler(request)
    finally:
        REQUEST_ID.reset(token)


async def _on_response(request: web.Request, response: web.StreamResponse) -> None:
    ops = request.app.get(OPERATIONS)
    if ops is not None:
        ops.record_response(request.method, request.path, response.status, response.get(ERROR_CODE))
    started = request.get(_STARTED)
    elapsed_ms = (time.monotonic() - started) * 1000 if started is not None else 0.0
    level = logging.DEBUG if request.path.startswith(QUIET_PREFIXES) else logging.INFO
    if log.isEnabledFor(level):
        log.log(level, "request=%s %s %s -> %d in %.1f ms (client %s)", request.get(REQUEST_KEY, "-"),
                request.method, request.path, response.status, elapsed_ms, client_of(request))
