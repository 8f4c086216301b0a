"""Suppression lists: addresses an account must not send to on a channel."""
from __future__ import annotations

from router import clock

REASON_CODES = {"device_unregistered": "device_unregistered"}  # anything else: recipient_opted_out


def refusal_code(reason: str) -> str:
    return REASON_CODES.get(reason, "recipient_opted_out")


async def add(store, entries: list[tuple[str, str, str, str]]) -> None:
    """entries: (account_id, channel, address, reason); adding twice keeps the first reason."""
    now = clock.now_iso()

    def _add(cur) -> None:
        cur.executemany("INSERT INTO suppressions (account_id, channel, address, reason, created_at) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", [(*e, now) for e in entries])
    if entries:
        await store.run(_add)


async def remove(store, account_id: str, channel: str | None, address: str) -> int:
    def _remove(cur) -> int:
        if channel is None:
            return cur.rowcount("DELETE FROM suppressions WHERE account_id = ? AND address = ?", (account_id, address))
        return cur.rowcount("DELETE FROM suppressions WHERE account_id = ? AND channel = ? AND address = ?",
                            (account_id, channel, address))
    return await store.run(_remove)


async def reason_for(store, account_id: str, channel: str, address: str, forms=None) -> str | None:
    found = await reasons_for(store, account_id, [(channel, address)], forms)
    return found.get((channel, address))


async def listing(store, account_id: str) -> list[dict]:
    return await store.run(lambda cur: cur.fetchall(
        "SELECT channel, address, reason, created_at FROM suppressions WHERE account_id = ? "
        "ORDER BY created_at DESC", (account_id,)))


async def reasons_for(store, account_id: str, wanted: list[tuple[str, str]],
                      forms=None) -> dict[tuple[str, str], str]:
    """(channel, address) pairs -> reason, for those suppressed (one query for a whole batch).

    `forms(address)` lists every form the address may be stored under (its erasure pseudonym)."""
    if not wanted:
        return {}
    alias = stored_forms(wanted, forms)
    return await store.run(lambda cur: find(cur, account_id, alias))


def stored_forms(wanted: list[tuple[str, str]], forms=None) -> dict[str, str]:
    """Every form the wanted addresses may be stored under -> the address it stands for."""
    alias = {}
    for _, address in wanted:
        for form in (forms(address) if forms else [address]):
            alias[form] = address
    return alias


def find(cur, account_id: str, alias: dict[str, str]) -> dict[tuple[str, str], str]:
    """`reasons_for` inside a transaction the caller runs: `alias` from `stored_forms`."""
    addresses = sorted(alias)
    found = {}
    for start in range(0, len(addresses), 500):
        chunk = addresses[start:start + 500]
        for row in cur.fetchall("SELECT channel, address, reason FROM suppressions WHERE account_id = ? AND "
                                f"address IN ({', '.join('?' for _ in chunk)})", [account_id, *chunk]):
            found[(row["channel"], alias[row["address"]])] = row["reason"]
    return found
