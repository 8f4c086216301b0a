"""The `msgroute` command."""
from __future__ import annotations

import argparse
import asyncio
import sys

import carriers
from router import settings as settings_module
from router.errors import ConfigError, UnavailableError, ValidationError

EXIT_UNAVAILABLE, EXIT_USAGE = 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="msgroute", description="Asynchronous message-routing engine.")
    p.add_argument("--config", help="configuration file (default: $MSGROUTE_CONFIG or config/msgroute.toml)")
    p.add_argument("--log-format", choices=("json", "text"), default=None, help="log line format")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="gateway and all workers, supervised")
    run.add_argument("--processes", type=int, default=1, help="workers of each kind (default 1)")
    sub.add_parser("gateway", help="the HTTP gateway alone")
    worker = sub.add_parser("worker", help="one kind of worker alone")
    worker.add_argument("kind", choices=("route", "dispatch", "status"))
    worker.add_argument("--carrier", action="append", help="dispatch: only these carriers (repeatable)")
    worker.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve this worker's Prometheus metrics on http://HOST:PORT/metrics")
    worker.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                        help="address for --metrics-port (default 127.0.0.1)")
    demo = sub.add_parser("demo", help="run the engine on the defaults and send a sample batch")
    demo.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for final statuses")
    sub.add_parser("migrate", help="create or upgrade the store schema")

    accounts = sub.add_parser("accounts", help="account administration")
    acc = accounts.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = acc.add_parser("create")
    create.add_argument("name")
    create.add_argument("--regions", help="comma-separated regions this account may use")
    create.add_argument("--callback-url")
    create.add_argument("--amqp-user")
    lst = acc.add_parser("list")
    lst.add_argument("--format", choices=("table", "json"), default="table")
    for action in ("show", "suspend", "reinstate", "confirm-suspension", "rotate-key"):
        a = acc.add_parser(action)
        a.add_argument("account_id")
        a.add_argument("--format", choices=("table", "json"), default="table")
        if action == "suspend":
            a.add_argument("--reason", default="suspended by an operator")
        if action == "rotate-key":
            a.add_argument("--grace", type=float, default=86400.0, help="seconds the old key keeps working")

    senders = sub.add_parser("senders", help="an account's sender pool")
    sn = senders.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sn.add_parser("add", help="add a sender (number, short code, alphanumeric id or email) to the pool")
    add.add_argument("address")
    add.add_argument("--account", required=True, help="account id")
    add.add_argument("--channel", choices=("sms", "email", "push"),
                     help="default: email for an address with '@', else sms")
    add.add_argument("--country", help="ISO country the sender is registered for (SMS), e.g. GB")
    add.add_argument("--rate-limit", help="messages per second this sender may send, e.g. 1 for a long code")
    add.add_argument("--format", choices=("table", "json"), default="table")
    lst = sn.add_parser("list", help="the account's senders")
    lst.add_argument("--account", required=True, help="account id")
    lst.add_argument("--channel", choices=("sms", "email", "push"))
    lst.add_argument("--format", choices=("table", "json"), default="table")
    remove = sn.add_parser("remove", help="take a sender out of the pool")
    remove.add_argument("sender", help="the sender's id (snd_...) or its address")
    remove.add_argument("--account", required=True, help="account id")
    remove.add_argument("--channel", choices=("sms", "email", "push"), help="when the address is in several pools")

    privacy = sub.add_parser("privacy", help="data-subject requests")
    pv = privacy.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("export", "everything the account holds about an address, as JSON"),
                         ("erase", "remove content and pseudonymise an address in the account's data")):
        a = pv.add_parser(action, help=text)
        a.add_argument("--account", required=True, help="account id")
        a.add_argument("--to", required=True, help="the address: E.164 number, email address or device token")
        if action == "erase":
            a.add_argument("--format", choices=("table", "json"), default="table")

    usage = sub.add_parser("usage", help="the usage ledger")
    us = usage.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = us.add_parser("export")
    export.add_argument("--since")
    export.add_argument("--until")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")

    reconcile = sub.add_parser("reconcile", help="reconcile a carrier invoice against the ledger")
    reconcile.add_argument("--carrier", required=True)
    reconcile.add_argument("--invoice", required=True)
    reconcile.add_argument("--format", choices=("table", "json", "csv"), default="table")
    reconcile.add_argument("--tolerance", default="0.0001")

    routes = sub.add_parser("routes", help="routing tools")
    rt = routes.add_subparsers(dest="action", required=True, metavar="ACTION")
    explain = rt.add_parser("explain", help="print the route decision without sending")
    explain.add_argument("--account", required=True)
    explain.add_argument("--channel", required=True, choices=("sms", "email", "push"))
    explain.add_argument("--to", required=True)
    explain.add_argument("--platform", choices=("fcm", "apns"))
    explain.add_argument("--format", choices=("table", "json"), default="table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = settings_module.load(args.config, known_adapters=set(carriers.available()))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"msgroute: {problem}", file=sys.stderr)
        return EXIT_USAGE
    log_format = args.log_format or settings.logging.format
    try:
        return _dispatch(args, settings, log_format)
    except UnavailableError as exc:
        print(f"msgroute: {exc}", file=sys.stderr)
        # reconcile's exit 1 means "discrepancies": a report that could not be made is 2
        return EXIT_USAGE if args.command == "reconcile" else EXIT_UNAVAILABLE
    except BrokenPipeError:  # e.g. `msgroute usage export | head`
        sys.stderr.close()
        return 0
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"msgroute: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as exc:
        print(f"msgroute: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _serve_metrics(host: str, port: int) -> None:
    """A standalone worker has no gateway to add its samples up: it serves its own /metrics."""
    import prometheus_client

    try:
        prometheus_client.start_http_server(port, addr=host)
    except OSError as exc:
        raise ValidationError("invalid_request", f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") \
            from None


def _dispatch(args, settings, log_format: str) -> int:
    from workers import logs, runtime

    command = args.command
    if command in ("run", "gateway", "worker", "demo"):
        name = "msgroute " + (f"worker {args.kind}" if command == "worker" else command)
        logs.setup(name, log_format, settings.logging.level)
    if command == "run":
        from workers.preflight import check_dependencies
        asyncio.run(check_dependencies(settings))
        from workers.supervisor import Supervisor
        return Supervisor(args.config, max(1, args.processes), log_format).run_forever()
    if command == "gateway":
        from workers.gateway.server import main as gateway_main
        return runtime.run(lambda stop: gateway_main(settings, stop))
    if command == "worker":
        if args.metrics_port is not None:
            _serve_metrics(args.metrics_host, args.metrics_port)
        if args.kind == "route":
            from workers.route import main as worker_main
            return runtime.run(lambda stop: worker_main(settings, stop))
        if args.kind == "dispatch":
            from workers.dispatch import main as dispatch_main
            unknown = [c for c in args.carrier or () if settings.carrier(c) is None]
            if unknown:
                print(f"msgroute: unknown carrier {unknown[0]!r} (configured: "
                      f"{', '.join(c.name for c in settings.carriers)})", file=sys.stderr)
                return EXIT_USAGE
            return runtime.run(lambda stop: dispatch_main(settings, stop, args.carrier))
        from workers.status import main as status_main
        return runtime.run(lambda stop: status_main(settings, stop))
    if command == "demo":
        from workers.demo import run_demo
        return run_demo(args, settings, log_format)
    from workers import admin_cli
    return asyncio.run(admin_cli.run(args, settings))


if __name__ == "__main__":
    raise SystemExit(main())
