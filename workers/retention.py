"""Content retention: message content (body, subject, push title and data) older than
`[retention] content_days` is removed by a periodic sweep; the message's metadata stays."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from router import clock
from router.errors import UnavailableError
from router.settings import Settings
from workers.store.privacy import remove_expired_content

log = logging.getLogger("msgroute.retention")


async def sweep_once(settings: Settings, store) -> int:
    cutoff = clock.format_time(clock.now() - timedelta(days=settings.retention.content_days))
    removed = await remove_expired_content(store, cutoff)
    if removed:
        log.info("retention removed message content", extra={"messages": removed, "created_before": cutoff})
    return removed


async def sweep_loop(settings: Settings, store, stop: asyncio.Event) -> None:
    """Sweep now and every `sweep_interval_seconds` until `stop` is set."""
    while not stop.is_set():
        try:
            await sweep_once(settings, store)
        except UnavailableError as exc:
            log.warning("retention sweep skipped: store unavailable", extra={"error": str(exc)})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.retention.sweep_interval_seconds)
