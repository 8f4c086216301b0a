"""Building the configured carriers' adapters (one per [[carriers]] entry)."""
from __future__ import annotations

import contextlib

import aiohttp

from carriers import load_adapter_class
from carriers.base import CarrierConfig, resolve_secret
from router.settings import Settings


def carrier_config(settings: Settings, carrier) -> CarrierConfig:
    resolved = {key: resolve_secret(value) for key, value in carrier.settings.items()}
    return CarrierConfig(name=carrier.name, channel=carrier.channel, settings=resolved,
                         public_url=settings.gateway.public_url)


@contextlib.asynccontextmanager
async def open_adapters(settings: Settings, http: aiohttp.ClientSession, only: set[str] | None = None):
    adapters = {}
    try:
        for carrier in settings.carriers:
            if only is None or carrier.name in only:
                cls = load_adapter_class(carrier.adapter)
                adapters[carrier.name] = cls(carrier_config(settings, carrier), http)
        yield adapters
    finally:
        for adapter in adapters.values():
            with contextlib.suppress(Exception):
                await adapter.aclose()
