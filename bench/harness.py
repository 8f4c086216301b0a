"""What the throughput and memory benchmarks share: an isolated engine, the request they
send, progress read from the store, process memory, machine load, and table printing.

The engine is started the way the integration tests start it (tests/engine.py): its own
RabbitMQ vhost, its own SQLite file, a free port, all on loopback.
"""
from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.engine import DEFAULT_ROUTING, SANDBOX_CARRIERS, Engine, Vhost, free_port  # noqa: E402

# The per-account rate limit and the abuse rules would (rightly) stop one account sending
# this fast; they stay enabled, so their per-message cost is measured, with limits out of reach.
BENCH_SETTINGS = """
[gateway]
host = "127.0.0.1"
account_rate_limit = 1000000

[abuse]
same_body_max_recipients = 100000000
volume_spike_min_messages = 100000000
"""


def bench_config(carriers: str = SANDBOX_CARRIERS) -> str:
    return BENCH_SETTINGS + carriers + DEFAULT_ROUTING


def send_request(i: int) -> dict:
    """The i-th SMS send request: a distinct UK number and body, delivered by the sandbox."""
    return {"channel": "sms", "to": f"+4479{11000000 + i % 1_000_000:08d}", "body": f"bench message {i}: hello"}


def routed_envelope_size(settings_text: str | None = None) -> int:
    """Bytes of a routed envelope as the engine publishes it to a dispatch queue (the bare chain's size)."""
    import tomllib

    from router import codec, requests, routing, settings
    from workers.ingest import intake
    conf = settings.from_dict(tomllib.loads(settings_text or bench_config()))
    envelope, _ = intake.accept(requests.parse(send_request(12345)), "acc_01HZZZZZZZZZZZZZZZZZZZZZZZ")
    decision = routing.Router(conf).decide("sms", envelope.to, None, None, {}, time.time())
    return len(codec.dumps(dataclasses.replace(envelope, route=decision, candidate=0)))


# --- the engine -----------------------------------------------------------------------------


class BenchEngine:
    """An isolated engine: `start()` runs `msgroute run`; `start_gateway()` runs `msgroute gateway` alone."""

    def __init__(self, workdir: Path, processes: int = 1, config: str | None = None, code: Path = ROOT):
        """`code`: the directory the engine's packages are imported from (another checkout, for A/B runs)."""
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_path = workdir / "msgroute.db"
        for stale in workdir.glob("msgroute.db*"):
            stale.unlink()
        self.vhost = Vhost()
        self.amqp_url = self.vhost.__enter__()
        self.port = free_port()
        config_path = workdir / "msgroute.toml"
        config_path.write_text(config or bench_config())
        env = {**os.environ, "MSGROUTE_AMQP_URL": self.amqp_url, "MSGROUTE_DATABASE_URL": f"sqlite:///{self.db_path}",
               "MSGROUTE_HTTP_PORT": str(self.port), "MSGROUTE_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
               "MSGROUTE_ADMIN_TOKEN": "bench-admin-token", "PYTHONPATH": str(code)}
        self.engine = Engine(workdir=workdir, config_path=config_path, env=env, port=self.port,
                             processes=processes)
        self.gateway: subprocess.Popen | None = None
        try:
            self.engine.cli("migrate")
            account = self.engine.create_account("bench", "--amqp-user", "guest")
        except BaseException:
            self.vhost.__exit__()
            raise
        self.account_id, self.api_key = account["id"], account["api_key"]

    def start(self) -> None:
        self.engine.start()

    def start_gateway(self) -> None:
        """The gateway alone; /healthz (not /readyz: no worker consumes) says when it listens."""
        log = open(self.workdir / "gateway.log", "ab")
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "workers", "--config", str(self.engine.config_path), "gateway"],
            env=self.engine.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(self.port, "/healthz", self.gateway)

    def child_pids(self) -> dict[int, str]:
        """pid -> `gateway` / `worker route` / ... for every process the engine runs."""
        parents = [p.pid for p in (self.engine.proc, self.gateway) if p is not None and p.poll() is None]
        found = {}
        for pid in parents:
            found[pid] = command_name(pid)
            for child in children_of(pid):
                found[child] = command_name(child)
        return found

    def close(self) -> None:
        if self.gateway is not None and self.gateway.poll() is None:
            self.gateway.terminate()
            self.gateway.wait(timeout=30)
        try:
            self.engine.stop(timeout=60)
        finally:
            self.vhost.__exit__()


def wait_http(port: int, path: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    import urllib.request
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"nothing answered 200 on :{port}{path}")


class StoreProgress:
    """Counts read straight from the engine's SQLite file (WAL: readers never block its writers)."""

    def __init__(self, db_path: Path):
        self._conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)

    def counts(self) -> tuple[int, int]:
        """(messages delivered, usage records marked delivered)."""
        delivered = self._conn.execute("SELECT count(*) FROM messages WHERE status = 'delivered'").fetchone()[0]
        usage = self._conn.execute("SELECT count(*) FROM usage_records WHERE status = 'delivered'").fetchone()[0]
        return delivered, usage

    def statuses(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT status, count(*) FROM messages GROUP BY status").fetchall())

    def wait_complete(self, total: int, timeout: float, poll: float = 0.1) -> float:
        """Block until `total` messages are delivered with usage recorded; returns time.monotonic() then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            delivered, usage = self.counts()
            if delivered >= total and usage >= total:
                return time.monotonic()
            time.sleep(poll)
        raise TimeoutError(f"not complete after {timeout:.0f}s: {self.statuses()}, usage={self.counts()[1]}")

    def close(self) -> None:
        self._conn.close()


# --- processes and the machine --------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def command_name(pid: int) -> str:
    """`gateway`, `worker route`, `run`, ... from the msgroute command line."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return "?"
    for i, arg in enumerate(args):
        if arg in ("gateway", "run"):
            return arg
        if arg == "worker":
            return " ".join(args[i:i + 2])
    return Path(args[0]).name


def memory_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS since the process started) in KiB, from /proc."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    except OSError:
        return 0, 0
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pid() -> int | None:
    """The RabbitMQ server's Erlang VM (not a rabbitmqctl run, which is a beam.smp too)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"beam.smp" in cmdline and b"\0rabbit\0boot" in cmdline:
            return int(proc.name)
    return None


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine_line() -> str:
    return f"{os.cpu_count()} cores, load average {load_average()} (1/5/15 min)"


def code_line() -> str:
    """The commit measured, and whether the work tree differed from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
        return done.stdout.rstrip("\n")  # not strip(): porcelain lines start with a space
    changed = [line[3:] for line in git("status", "--porcelain", "--", "router", "workers", "carriers").splitlines()]
    return (f"commit {git('rev-parse', '--short', 'HEAD')}"
            + (f" with uncommitted changes in {', '.join(changed)}" if changed else ""))


# --- output ---------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 10 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def dump_json(path: Path, data) -> None:
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
