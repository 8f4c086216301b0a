"""`msgroute demo`: the whole engine on the defaults, a small mixed batch, and what became of it."""
from __future__ import annotations

import asyncio
import sys
import time

import aiohttp

from router.lifecycle import TERMINAL
from router.settings import Settings
from workers.preflight import check_dependencies
from workers.store import open_store
from workers.supervisor import Supervisor

SAMPLE = [
    {"channel": "sms", "to": "+447911123456", "body": "Your code is 123456"},
    {"channel": "sms", "to": "+14155550123", "body": "Hello from msgroute 👋"},
    {"channel": "sms", "to": "+15005550001", "body": "permanent failure at the carrier"},
    {"channel": "sms", "to": "+15005550002", "body": "transient failures: failover, retries, then failed"},
    {"channel": "sms", "to": "+15005550003", "body": "accepted, then an undelivered receipt"},
    {"channel": "email", "to": "alice@example.com", "subject": "Welcome", "body": "Hi Alice"},
    {"channel": "email", "to": "bounce@example.com", "subject": "Bounce", "body": "this one bounces"},
    {"channel": "push", "to": "device-token-0001", "title": "Sale", "body": "50% off today"},
    {"channel": "push", "to": "fail-token-0002", "title": "Bad token", "body": "refused"},
    {"channel": "sms", "to": "+44 not a number", "body": "refused at ingest"},
]


def _final(status: str, receipts_expected: bool = True) -> bool:
    return status in TERMINAL


async def _wait_ready(base: str, deadline: float) -> None:
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{base}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError("the gateway did not become ready")


async def _demo(settings: Settings, supervisor: Supervisor, timeout: float) -> int:
    base = f"http://127.0.0.1:{settings.gateway.port}"
    watcher = asyncio.create_task(_watch(supervisor))
    try:
        await _wait_ready(base, time.monotonic() + 60)
        store = await open_store(settings.store.url)
        account, api_key = await store.create_account("demo")
        await store.close()
        headers = {"Authorization": f"Bearer {api_key}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{base}/v1/messages/batch", json={"messages": SAMPLE}) as resp:
                results = (await resp.json())["results"]
            print(f"sent {len(SAMPLE)} requests as account {account['id']}; waiting for final statuses…",
                  file=sys.stderr)
            outcomes = {}
            deadline = time.monotonic() + timeout
            pending = {r["id"]: r["index"] for r in results if "id" in r}
            while pending and time.monotonic() < deadline:
                for message_id in list(pending):
                    async with http.get(f"{base}/v1/messages/{message_id}") as resp:
                        message = await resp.json()
                    # a receipt-less `sent` is final too, but every demo carrier sends receipts
                    if message["status"] in TERMINAL:
                        outcomes[pending.pop(message_id)] = message
                await asyncio.sleep(0.3)
        _print_summary(results, outcomes)
        return 0 if not pending else 1
    finally:
        watcher.cancel()


async def _watch(supervisor: Supervisor) -> None:
    while True:
        supervisor.watch_once()
        await asyncio.sleep(0.2)


def _print_summary(results: list, outcomes: dict) -> None:
    print(f"{'#':>2}  {'channel':<7} {'to':<20} {'status':<12} {'carrier':<15} {'units':>5} {'price':>9}  detail")
    for result in results:
        index = result["index"]
        request = SAMPLE[index]
        to = request["to"][:20]
        if "error" in result:
            print(f"{index:>2}  {request['channel']:<7} {to:<20} {'refused':<12} {'-':<15} {'-':>5} {'-':>9}  "
                  f"400 {result['error']['code']}")
            continue
        message = outcomes.get(index)
        if message is None:
            print(f"{index:>2}  {request['channel']:<7} {to:<20} {'(pending)':<12}")
            continue
        detail = " → ".join(h["status"] for h in message["status_history"])
        if message["error"]:
            detail += f" ({message['error']['code']})"
        print(f"{index:>2}  {request['channel']:<7} {to:<20} {message['status']:<12} {message['carrier'] or '-':<15} "
              f"{message['units'] if message['units'] is not None else '-':>5} "
              f"{message['price'] or '-':>9}  {detail}")


def run_demo(args, settings: Settings, log_format: str) -> int:
    asyncio.run(check_dependencies(settings))
    supervisor = Supervisor(args.config, 1, log_format)
    supervisor.start()
    try:
        return asyncio.run(_demo(settings, supervisor, args.timeout))
    finally:
        supervisor.stop()
