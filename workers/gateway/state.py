"""What the gateway's handlers share, under one typed app key."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from router.settings import Settings


@dataclass
class GatewayState:
    settings: Settings
    store: Any = None
    writes: Any = None  # GroupCommit over store: the ingest path's transactions
    connection: Any = None
    publisher: Any = None
    ingest_publisher: Any = None  # the same channel; refuses at once while the broker blocks publishers
    accounts: Any = None
    rate_limiter: Any = None
    policy: Any = None
    sender_pools: Any = None
    admission: Any = None
    unconfirmed: Any = None
    adapters: dict[str, Any] = field(default_factory=dict)
    http: Any = None


APP = web.AppKey("msgroute", GatewayState)
