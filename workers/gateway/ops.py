"""Operations endpoints: /healthz, /readyz, /metrics (no auth; serve on a trusted network).

GET /openapi.json is served by workers.gateway.openapi."""
from __future__ import annotations

import asyncio

from aiohttp import web

from workers import metrics
from workers.gateway import queues
from workers.gateway.errors import json_response
from workers.gateway.state import APP

READY_TIMEOUT_SECONDS = 2.0


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when the broker and the store answer and every work queue has a consumer; else 503."""
    state = request.app[APP]
    checks = {"broker": "ok", "store": "ok", "consumers": "ok"}
    connection = state.connection
    broker_up = not (connection is None or connection.is_closed or connection.transport is None)
    monitor = request.app.get(queues.MONITOR)
    store_ok, snapshot = await asyncio.gather(_store_ok(state.store), _queues(monitor if broker_up else None))
    if not store_ok:
        checks["store"] = "unreachable"
    if not broker_up:
        checks["broker"] = "unreachable"
        checks["consumers"] = "unknown"
    elif snapshot is not None:
        if snapshot.error:
            checks["broker"] = "not answering"
            checks["consumers"] = "unknown"
        else:
            missing = monitor.missing_consumers(snapshot)
            if missing:
                checks["consumers"] = "none on " + ", ".join(missing)
    ok = all(v == "ok" for v in checks.values())
    return json_response({"status": "ready" if ok else "not_ready", "checks": checks}, 200 if ok else 503)


async def _store_ok(store) -> bool:
    if store is None:
        return False
    try:
        await asyncio.wait_for(store.ping(), READY_TIMEOUT_SECONDS)
    except Exception:  # noqa: BLE001 — any failure means not ready
        return False
    return True


async def _queues(monitor: queues.QueueMonitor | None) -> queues.Snapshot | None:
    if monitor is None or monitor.connection is None:
        return None
    try:
        return await asyncio.wait_for(monitor.fresh(), READY_TIMEOUT_SECONDS + 1)
    except TimeoutError:
        return queues.Snapshot(0.0, {}, {}, error="queue poll timed out")


async def metrics_endpoint(request: web.Request) -> web.Response:
    return web.Response(body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
