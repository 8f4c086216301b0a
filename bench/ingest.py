"""Ingest alone: POST /v1/messages on the gateway next to a bare aiohttp endpoint, same run.

Each repeat starts, side by side, the bare endpoint (bench/bare_endpoint.py: parse the
JSON, publish it with a confirm, answer 202) and the gateway alone (`msgroute gateway`:
authentication, validation, abuse rules, the store insert, the confirmed publish), each
with its own vhost, then measures with the same client (bench/loadgen.py):

1. peak requests/s: `--requests` POSTs over `--concurrency` keep-alive connections, as
   fast as answers come back (closed loop), bare first, then the gateway;
2. accept latency at half of the gateway's peak: requests offered at that fixed rate for
   `--seconds` (open loop, latency counted from each request's scheduled time), on the
   gateway and, for reference, on the bare endpoint.

With `--compare-code DIR` a second gateway, imported from DIR (another checkout), is
measured the same way after the first, for before/after comparisons in one run.

Nothing consumes the queues they publish to, so only ingest is measured.

    python bench/ingest.py [--requests 10000] [--concurrency 32] [--seconds 10] [--repeats 3] [--compare-code DIR]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import uvloop

import loadgen
from harness import (ROOT, BenchEngine, Vhost, broker_pid, code_line, cpu_seconds, dump_json, free_port,
                     machine_line, send_request, table, wait_http)

WARMUP = 500
DISTINCT = 2000  # distinct request bodies, cycled


class BareEndpoint:
    def __init__(self):
        self.vhost = Vhost()
        url = self.vhost.__enter__()
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bare_endpoint.py")),
                                      "--url", url, "--port", str(self.port)])
        wait_http(self.port, "/healthz", self.proc)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.vhost.__exit__()


def requests_for(port: int, api_key: str | None) -> list[bytes]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return [loadgen.post("/v1/messages", send_request(i), port, headers) for i in range(DISTINCT)]


def peak(port: int, pid: int, requests: list[bytes], count: int, concurrency: int) -> dict:
    uvloop.run(loadgen.closed_loop(port, requests[:WARMUP], concurrency))
    broker = broker_pid()
    before = cpu_seconds(pid), cpu_seconds(broker)
    result = uvloop.run(loadgen.closed_loop(port, [requests[i % len(requests)] for i in range(count)],
                                            concurrency))
    assert set(result.statuses) == {202}, result.statuses
    return {"rate": result.rate, "p99_ms": 1000 * result.percentile(99),
            "server_cpu_ms": 1000 * (cpu_seconds(pid) - before[0]) / count,
            "broker_cpu_ms": 1000 * (cpu_seconds(broker) - before[1]) / count}


def latency(port: int, requests: list[bytes], rate: float, seconds: float) -> dict:
    result = uvloop.run(loadgen.open_loop(port, requests, rate, seconds))
    assert set(result.statuses) == {202}, result.statuses
    return {"offered": rate, "achieved": result.rate, **{f"p{p}_ms": 1000 * result.percentile(p)
                                                         for p in (50, 90, 99)},
            "max_ms": 1000 * max(result.latencies)}


def one_repeat(args, workdir: Path, codes: dict[str, Path]) -> dict:
    """Peak of the bare endpoint, then for each gateway its peak and its latency at half that peak."""
    bare = BareEndpoint()
    bare_requests = requests_for(bare.port, None)
    try:
        out = {"bare": peak(bare.port, bare.proc.pid, bare_requests, args.requests, args.concurrency), "gateways": {}}
        for name, code in codes.items():
            engine = BenchEngine(workdir / f"engine{len(out['gateways'])}", code=code)
            try:
                engine.start_gateway()
                engine_requests = requests_for(engine.port, engine.api_key)
                result = peak(engine.port, engine.gateway.pid, engine_requests, args.requests, args.concurrency)
                result["latency"] = latency(engine.port, engine_requests, result["rate"] / 2, args.seconds)
                out["gateways"][name] = result
            finally:
                engine.close()
        out["bare_latency"] = latency(bare.port, bare_requests, next(iter(out["gateways"].values()))["rate"] / 2,
                                      args.seconds)
        return out
    finally:
        bare.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--code", type=Path, default=ROOT, metavar="DIR",
                        help="import the engine from DIR instead of this checkout")
    parser.add_argument("--compare-code", type=Path, metavar="DIR", action="append", default=[],
                        help="also measure the gateway imported from DIR (another checkout); repeatable")
    args = parser.parse_args()
    codes = {"msgroute gateway" + ("" if args.code == ROOT else f" [{args.code.name}]"): args.code.resolve()}
    for other in args.compare_code:
        codes[f"msgroute gateway [{other.name}]"] = other.resolve()
    print(f"{args.requests} requests per peak measurement over {args.concurrency} connections; {code_line()}; "
          f"{machine_line()}")
    if args.code != ROOT or args.compare_code:
        print("gateway code: " + ", ".join(f"{name} from {code}" for name, code in codes.items()))
    runs = []
    for repeat in range(1, args.repeats + 1):
        with tempfile.TemporaryDirectory(prefix="msgroute-bench-") as tmp:
            run = one_repeat(args, Path(tmp), codes)
        runs.append(run)
        bare_rate = run["bare"]["rate"]
        peaks = [("bare aiohttp + confirm", run["bare"]), *run["gateways"].items()]
        print(f"\nrepeat {repeat} (load average after: {machine_line()})")
        print(table(["peak, closed loop", "req/s", "ratio", "p99 ms", "server CPU ms/req", "broker CPU ms/req"],
                    [[name, r["rate"], r["rate"] / bare_rate, r["p99_ms"], r["server_cpu_ms"], r["broker_cpu_ms"]]
                     for name, r in peaks]))
        latencies = [(name, r["latency"]) for name, r in run["gateways"].items()]
        latencies.append(("bare aiohttp + confirm", run["bare_latency"]))
        print(table(["at half the gateway's peak", "offered/s", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "max ms"],
                    [[name, r["offered"], r["achieved"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"]]
                     for name, r in latencies]))
    print("\nover the repeats")
    rows = []
    for name in codes:
        ratios = [r["gateways"][name]["rate"] / r["bare"]["rate"] for r in runs]
        p99s = [r["gateways"][name]["latency"]["p99_ms"] for r in runs]
        rows += [[f"{name}: req/s / bare", ">= 0.6", statistics.median(ratios), min(ratios), max(ratios)],
                 [f"{name}: p99 ms at half its peak", "< 25", statistics.median(p99s), min(p99s), max(p99s)]]
    print(table(["figure", "target", "median", "min", "max"], rows))
    if args.json:
        dump_json(args.json, runs)


if __name__ == "__main__":
    main()
