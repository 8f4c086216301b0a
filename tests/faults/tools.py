"""Shared helpers for the fault-injection tests: engine set-up, child processes, store counts.

Every fault test starts a real `msgroute run` (tests/engine.py), does something unkind to it
and then checks SPEC §6 against the store: every accepted message ends in exactly one
terminal state, with at most one usage record.
"""
from __future__ import annotations

import asyncio
import contextlib
import collections
import json
import os
import signal
import sqlite3
import time
import uuid
from pathlib import Path

import aiohttp

from tests.engine import Engine

TERMINAL = ("delivered", "undelivered", "failed", "rejected", "expired", "canceled")

UK_REGION = '[[regions]]\nname = "uk-south"\njurisdictions = ["GB"]\n'


def sandbox_carrier(name: str = "sms-uk", receipt_delay_ms: int = 20, extra: str = "") -> str:
    return f"""
[[carriers]]
name = "{name}"
channel = "sms"
adapter = "sandbox"
region = "uk-south"
{extra}
settings = {{ latency_ms = 0, receipt_delay_ms = {receipt_delay_ms} }}
rates = {{ "44" = "0.0300", default = "0.0500", currency = "USD" }}
"""


def twilio_carrier(name: str, base_url: str, extra: str = "") -> str:
    return f"""
[[carriers]]
name = "{name}"
channel = "sms"
adapter = "twilio"
region = "uk-south"
receipts = true
{extra}
settings = {{ base_url = "{base_url}", account_sid = "AC123", auth_token = "token", from = "+447400000001" }}
rates = {{ "44" = "0.0400", currency = "USD" }}
"""


def engine_config(carriers: str, *, broker: str = "", gateway: str = "", routing: dict | None = None) -> str:
    """A whole configuration file: gateway on loopback, private callbacks allowed, abuse rules off
    (these tests send one account's traffic in volume on purpose), no per-account rate limit,
    quick retries and no circuit breaking unless `routing` says otherwise."""
    routing = {"retry_delays": "[1]", "max_attempts": "3", "circuit_failure_threshold": "100000", **(routing or {})}
    return (
        '[gateway]\nhost = "127.0.0.1"\naccount_rate_limit = 1000000.0\n' + gateway + "\n"
        "[callbacks]\nallow_private_networks = true\n\n"
        "[abuse]\nenabled = false\n\n"
        + (f"[broker]\n{broker}\n\n" if broker else "")
        + "[routing]\n" + "".join(f"{k} = {v}\n" for k, v in routing.items()) + "\n"
        + UK_REGION + carriers)


def start_engine(make_engine, store_url: str, config: str, processes: int = 1, env: dict | None = None) -> Engine:
    """make_engine, but with the whole configuration file ours (make_engine writes its own [gateway])."""
    engine = make_engine(store_url, "", processes=processes, start=False, env=env)
    engine.config_path.write_text(config)
    engine.cli("migrate")
    engine.start()
    return engine


def amqp_port(url: str) -> int:
    """The port of an amqp:// URL (the fault proxy's upstream)."""
    from urllib.parse import urlsplit

    return urlsplit(url).port or 5672


def report(title: str, **counts) -> str:
    """Print what a test did and saw (shown with `pytest -s`); returns the line for assertion messages."""
    line = f"[faults] {title}: " + ", ".join(f"{k}={v}" for k, v in counts.items())
    print(line, flush=True)
    return line


# --- child processes of `msgroute run` ---------------------------------------------------

def children(parent: int) -> dict[int, str]:
    """pid -> command line of the direct children of `parent` (a /proc scan)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        out[int(entry)] = cmdline.strip()
    return out


def child_pids(engine: Engine, kind: str) -> list[int]:
    """PIDs of the engine's children whose command ends with `kind` ("gateway", "worker dispatch", ...)."""
    return sorted(pid for pid, cmd in children(engine.proc.pid).items() if cmd.endswith(kind))


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


async def wait_restarted(engine: Engine, kind: str, old: int, timeout: float = 30) -> int:
    """Wait until the supervisor has replaced the killed child `old`; returns the new PID."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in child_pids(engine, kind) if p != old]
        if pids and old not in child_pids(engine, kind):
            return pids[-1]
        await asyncio.sleep(0.2)
    raise AssertionError(f"`{kind}` (pid {old}) was not restarted within {timeout:.0f} s; "
                         f"children: {children(engine.proc.pid)}")


# --- the store (SQLite) -------------------------------------------------------------------

def sqlite_path(store_url: str) -> str:
    return store_url.removeprefix("sqlite:///")


def query(store_url: str, sql: str, params: tuple = ()) -> list[tuple]:
    """A read-only query on the engine's SQLite store (while it runs)."""
    conn = sqlite3.connect(f"file:{sqlite_path(store_url)}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def statuses(store_url: str, ids: list[str] | None = None) -> dict[str, str]:
    rows = query(store_url, "SELECT id, status FROM messages")
    wanted = None if ids is None else set(ids)
    return {i: s for i, s in rows if wanted is None or i in wanted}


async def wait_all_terminal(store_url: str, ids: list[str], timeout: float) -> dict[str, str]:
    """Poll the store until every id is in a terminal status (or the time is up); id -> status."""
    deadline = time.monotonic() + timeout
    while True:
        current = await asyncio.to_thread(statuses, store_url, ids)
        pending = [i for i in ids if current.get(i) not in TERMINAL]
        if not pending or time.monotonic() > deadline:
            return current
        await asyncio.sleep(1)


def invariants(store_url: str, ids: list[str], final: dict[str, str]) -> dict:
    """SPEC §6 over the accepted ids: counts of what is wrong (all should be 0) and the status mix."""
    placeholders = ",".join("?" * len(TERMINAL))
    multi_terminal = query(store_url, f"SELECT message_id, COUNT(*) FROM status_history WHERE status IN "
                                      f"({placeholders}) GROUP BY message_id HAVING COUNT(*) > 1", TERMINAL)
    usage_rows = query(store_url, "SELECT message_id FROM usage_records")
    usage = collections.Counter(m for (m,) in usage_rows)
    wanted = set(ids)
    return {
        "accepted": len(ids),
        "missing": sum(1 for i in ids if i not in final),
        "not_terminal": sum(1 for i in ids if i in final and final[i] not in TERMINAL),
        "more_than_one_terminal": sum(1 for m, _ in multi_terminal if m in wanted),
        "more_than_one_usage": sum(1 for m, n in usage.items() if n > 1 and m in wanted),
        "usage_records": sum(1 for m in usage if m in wanted),
        "statuses": dict(collections.Counter(final.get(i, "missing") for i in ids)),
    }


# --- ingest -------------------------------------------------------------------------------

async def post_batch(http: aiohttp.ClientSession, engine: Engine, key: str, messages: list[dict],
                     idempotency_key: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    async with http.post(f"{engine.base_url}/v1/messages/batch", json={"messages": messages},
                         headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def ingest_batches(http: aiohttp.ClientSession, engine: Engine, key: str, messages: list[dict],
                         batch: int = 500, concurrency: int = 2, on_progress=None) -> list[str]:
    """POST every message in batches, `concurrency` batches at a time; returns the accepted ids in order.

    Each batch carries an Idempotency-Key, so a 503 is retried without risk of a duplicate."""
    chunks = [messages[i:i + batch] for i in range(0, len(messages), batch)]
    prefix = uuid.uuid4().hex[:12]
    results: list[list[str]] = [[] for _ in chunks]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(len(chunks)):
        queue.put_nowait(n)
    done = 0

    async def worker():
        nonlocal done
        while not queue.empty():
            n = queue.get_nowait()
            for _ in range(60):
                status, body = await post_batch(http, engine, key, chunks[n], idempotency_key=f"{prefix}-{n}")
                if status == 202:
                    ids = [r.get("id") for r in body["results"]]
                    errors = [r["error"] for r in body["results"] if "error" in r]
                    if not errors:
                        break
                    # only "unavailable" may be partial: the same key accepts the rest and replays the others
                    assert all(e["code"] == "unavailable" for e in errors), errors[:3]
                else:
                    assert status in (429, 503), (status, body)
                await asyncio.sleep(1)
            else:
                raise AssertionError(f"batch {n} never accepted: {status} {body}")
            results[n] = ids
            done += len(ids)
            if on_progress:
                await on_progress(done)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [i for ids in results for i in ids]


# --- failures with a name of their own (so an xfail can name exactly the known engine bug) ---

class CarrierDuplicates(AssertionError):
    """The carrier took the same message body more than once: a double send."""


class GhostSends(AssertionError):
    """The carrier got a message whose id the client was never given a 202 for."""


class SlowDetection(AssertionError):
    """A dead broker connection was not noticed within two heartbeats."""


def carrier_report(fake, ids: list[str]) -> dict:
    """What a FakeTwilio took, against the ids that got a 202: duplicates by body and sends of ids
    never accepted (the `?ref=` our Twilio adapter puts in StatusCallback names the message)."""
    from urllib.parse import parse_qs, urlsplit

    accepted = set(ids)
    bodies = collections.Counter(a.form["Body"] for a in fake.accepted)
    refs = collections.Counter(parse_qs(urlsplit(a.form.get("StatusCallback", "")).query).get("ref", [""])[0]
                               for a in fake.accepted)
    ghosts = [ref for ref in refs if ref not in accepted]
    return {
        "carrier_requests": len(fake.requests),
        "carrier_accepted": len(fake.accepted),
        "duplicate_bodies": sum(1 for n in bodies.values() if n > 1),
        "extra_sends": sum(n - 1 for n in bodies.values() if n > 1),
        "same_id_sent_twice": sum(1 for ref, n in refs.items() if n > 1 and ref in accepted),
        "ghost_ids_sent": len(ghosts),
        "accepted_ids_never_sent": len(accepted - set(refs)),
    }


def timed_out_despite_receipt(store_url: str) -> int:
    """Messages closed as undelivered(receipt_timeout) although the gateway had received their
    receipt before the timeout fired (the receipt sits in late_receipts with an earlier time)."""
    import orjson

    rows = query(store_url, "SELECT m.late_receipts, h.at FROM messages m JOIN status_history h "
                            "ON h.message_id = m.id AND h.status = 'undelivered' "
                            "WHERE m.error_code = 'receipt_timeout' AND m.late_receipts IS NOT NULL")
    return sum(1 for late, closed_at in rows if any(r["at"] < closed_at for r in orjson.loads(late)))


def logged_ids(engine: Engine, msg: str) -> set[str]:
    """The message ids of the engine's log lines whose message is exactly `msg`."""
    found = set()
    for line in engine.log_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("msg") == msg and record.get("message_id"):
                found.add(record["message_id"])
    return found
