"""One-shot commands: migrate, accounts, senders, privacy, usage export, reconcile, routes explain."""
from __future__ import annotations

import sys
import time

import orjson

from router import routing
from router.errors import ValidationError
from router.settings import Settings
from workers.account_view import public_account as _public
from workers.store import open_store


def _print(data, fmt: str) -> None:
    if fmt == "json":
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    rows = data if isinstance(data, list) else [data]
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items() if v is not None))


async def run(args, settings: Settings) -> int:
    command = args.command
    store = await open_store(settings.store.url, migrate=True if command == "migrate" else None)
    try:
        if command == "migrate":
            version = await store.migrate()
            print(f"store {store.kind} at schema version {version}")
            return 0
        if command == "accounts":
            return await _accounts(args, settings, store)
        if command == "senders":
            return await _senders(args, store)
        if command == "privacy":
            return await _privacy(args, settings, store)
        if command == "usage":
            from workers.usage_export import export_usage
            export_usage(settings.store.url, args.since, args.until, args.format, sys.stdout)
            return 0
        if command == "reconcile":
            return _reconcile(args, settings)
        if command == "routes":
            return await _explain(args, settings, store)
    finally:
        await store.close()
    return 2


async def _accounts(args, settings: Settings, store) -> int:
    action = args.action
    if action == "create":
        regions = [r.strip() for r in args.regions.split(",") if r.strip()] if args.regions else None
        known = {r.name for r in settings.regions}
        unknown = [r for r in regions or () if known and r not in known]
        if unknown:
            raise ValidationError("invalid_request", f"unknown region {unknown[0]!r} (configured: "
                                  f"{', '.join(sorted(known))})")
        if args.callback_url:
            from router.urls import parse_callback_url
            parse_callback_url(args.callback_url)
        if args.amqp_user and await store.account_by_amqp_user(args.amqp_user):
            raise ValidationError("invalid_request", f"AMQP user {args.amqp_user!r} already belongs to an account")
        account, api_key = await store.create_account(args.name, regions, args.callback_url, args.amqp_user)
        print(orjson.dumps({"id": account["id"], "name": account["name"], "api_key": api_key,
                            "webhook_secret": account["webhook_secret"], "regions": regions,
                            "amqp_user": args.amqp_user}, option=orjson.OPT_INDENT_2).decode())
        return 0
    if action == "list":
        _print([_public(a) for a in await store.list_accounts()], args.format)
        return 0
    account = await store.get_account(args.account_id)
    if account is None:
        raise ValidationError("not_found", f"no account {args.account_id!r}")
    if action == "show":
        _print(_public(account), args.format)
        return 0
    if action == "rotate-key":
        api_key = await store.rotate_key(args.account_id, args.grace)
        print(orjson.dumps({"id": args.account_id, "api_key": api_key, "old_key_valid_for_seconds": args.grace},
                           option=orjson.OPT_INDENT_2).decode())
        return 0
    from workers import suspensions
    if action == "suspend":
        updated = await suspensions.suspend(store, settings, account, [{"rule": "operator", "detail": args.reason}],
                                            automated=False)
    elif action == "reinstate":
        updated = await suspensions.reinstate(store, settings, account, by="cli")
    else:
        updated = await suspensions.confirm(store, settings, account, by="cli")
    _print(_public(updated), args.format)
    return 0


SENDER_FIELDS = ("id", "channel", "address", "country", "rate_limit", "created_at")


async def _senders(args, store) -> int:
    """`msgroute senders add|list|remove --account ID`: the same pool as /v1/senders."""
    from router.senders import normalise_address, validate_sender
    from workers.store import senders
    if await store.get_account(args.account) is None:
        raise ValidationError("not_found", f"no account {args.account!r}")
    if args.action == "list":
        rows = [{k: s[k] for k in SENDER_FIELDS} for s in await senders.listing(store, args.account, args.channel)]
        if rows or args.format == "json":
            _print(rows, args.format)
        else:
            print(f"no senders in the pool of {args.account}", file=sys.stderr)
        return 0
    if args.action == "add":
        channel = args.channel or ("email" if "@" in args.address else "sms")
        rate = None
        if args.rate_limit is not None:
            try:
                rate = float(args.rate_limit)
            except ValueError:
                rate = args.rate_limit  # validate_sender names the problem
        try:
            channel, address, country, rate = validate_sender(channel, args.address, args.country, rate)
        except ValidationError as exc:
            what = {"address": f"sender {args.address!r}", "country": f"--country {args.country!r}",
                    "rate_limit": f"--rate-limit {args.rate_limit!r}"}.get(exc.field or "", "sender")
            message = exc.message.removeprefix(f"{exc.field}: ").removeprefix(f"{exc.field} ").removeprefix("is ")
            raise ValidationError(exc.code, f"invalid {what}: {message}", exc.field) from None
        existing = next((s for s in await senders.listing(store, args.account, channel) if s["address"] == address),
                        None)
        if existing is not None:
            raise ValidationError("duplicate", f"{address} is already in the {channel} pool of {args.account} "
                                  f"(as {existing['id']})")
        sender = await senders.add(store, args.account, channel, address, country, rate)
        _print({k: sender[k] for k in SENDER_FIELDS}, args.format)
        return 0
    pool = await senders.listing(store, args.account, args.channel)
    matches = [s for s in pool if s["id"] == args.sender]
    if not matches:
        wanted = args.sender.strip()
        matches = [s for s in pool if s["address"] == wanted]
        if not matches and wanted.startswith("+"):  # the number as the user typed it, e.g. with spaces
            try:
                wanted = normalise_address("sms", wanted)
            except ValidationError:
                pass
            matches = [s for s in pool if s["address"] == wanted]
    if not matches:
        raise ValidationError("not_found", f"no sender {args.sender!r} in the pool of {args.account}")
    if len(matches) > 1:
        raise ValidationError("invalid_request", f"{args.sender!r} is in several pools of {args.account} ("
                              f"{', '.join(sorted(s['channel'] for s in matches))}); add --channel")
    await senders.remove(store, args.account, matches[0]["id"])
    print(f"removed {matches[0]['id']} ({matches[0]['channel']} {matches[0]['address']}) from {args.account}")
    return 0


async def _privacy(args, settings: Settings, store) -> int:
    from router.privacy import mask_address
    from workers import privacy
    if await store.get_account(args.account) is None:
        raise ValidationError("not_found", f"no account {args.account!r}")
    if args.action == "export":
        print(orjson.dumps(await privacy.export(store, args.account, args.to), option=orjson.OPT_INDENT_2).decode())
        return 0
    result = await privacy.erase(store, settings, args.account, args.to)
    if args.format == "json":
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"erased {mask_address(args.to.strip())} for {args.account}: {result['messages_erased']} messages "
              f"changed; the address is now {result['pseudonym']}")
    return 0


def _reconcile(args, settings: Settings) -> int:
    from decimal import Decimal, InvalidOperation

    from workers import reconcile_job
    carrier = settings.carrier(args.carrier)
    if carrier is None:
        print(f"msgroute: unknown carrier {args.carrier!r}", file=sys.stderr)
        return 2
    try:
        tolerance = Decimal(args.tolerance)
    except InvalidOperation:
        print(f"msgroute: --tolerance must be a decimal, got {args.tolerance!r}", file=sys.stderr)
        return 2
    return reconcile_job.main(settings.store.url, carrier, args.invoice, tolerance, args.format)


async def _explain(args, settings: Settings, store) -> int:
    from router.requests import normalise_email, normalise_phone
    from workers.route import allowed_regions
    account = await store.get_account(args.account)
    if account is None:
        raise ValidationError("not_found", f"no account {args.account!r}")
    to = args.to
    if args.channel == "sms":
        to = normalise_phone(to, "--to")
    elif args.channel == "email":
        to = normalise_email(to, "--to", "invalid_email")
    decision = routing.Router(settings).decide(args.channel, to, args.platform, allowed_regions(account), {},
                                               time.time())
    if args.format == "json":
        print(orjson.dumps(routing.decision_to_json(decision), option=orjson.OPT_INDENT_2).decode())
    else:
        print(routing.format_decision(decision))
    return 0
