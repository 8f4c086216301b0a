"""Starting the real engine (`msgroute run`) for integration tests, isolated per test:
its own RabbitMQ vhost, its own database (SQLite file or PostgreSQL database), its own port."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
AMQP_BASE = os.environ.get("MSGROUTE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
PG_BASE = os.environ.get("MSGROUTE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")

SANDBOX_CARRIERS = """
[[regions]]
name = "uk-south"
jurisdictions = ["GB"]

[[regions]]
name = "eu-west"
jurisdictions = ["EU"]

[[regions]]
name = "us-east"
jurisdictions = ["US"]

[[carriers]]
name = "sms-uk"
channel = "sms"
adapter = "sandbox"
region = "uk-south"
priority = 1
settings = { latency_ms = 0, receipt_delay_ms = 20 }
rates = { "44" = "0.0300", default = "0.0500", currency = "USD" }

[[carriers]]
name = "sms-us"
channel = "sms"
adapter = "sandbox"
region = "us-east"
priority = 2
settings = { latency_ms = 0, receipt_delay_ms = 20 }
rates = { "1" = "0.0079", currency = "USD" }

[[carriers]]
name = "mail"
channel = "email"
adapter = "sandbox"
region = "eu-west"
settings = { latency_ms = 0, receipt_delay_ms = 20 }
rates = { default = "0.0001", currency = "USD" }

[[carriers]]
name = "push"
channel = "push"
adapter = "sandbox"
region = "eu-west"
settings = { latency_ms = 0, receipt_delay_ms = 20 }
rates = { default = "0.0000", currency = "USD" }
"""

DEFAULT_ROUTING = """
[routing]
retry_delays = [1]
max_attempts = 3
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


class Vhost:
    """A RabbitMQ vhost of our own, deleted afterwards."""

    def __init__(self):
        self.name = f"msgroute-test-{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> str:
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return AMQP_BASE.rstrip("/") + "/" + self.name

    def __exit__(self, *exc) -> None:
        subprocess.run(["rabbitmqctl", "delete_vhost", self.name], capture_output=True, timeout=60)


class PgDatabase:
    def __init__(self):
        self.name = f"msgroute_test_{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> str:
        import psycopg
        with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return f"{PG_BASE}/{self.name}"

    def __exit__(self, *exc) -> None:
        import psycopg
        url = f"{PG_BASE}/{self.name}"
        # fixtures may be torn down in either order: an engine still using the database stops
        # first, or its workers would spend the drain timeout failing on a dropped database
        for engine in [e for e in RUNNING if e.store_url == url]:
            engine.stop()
        with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


RUNNING: list["Engine"] = []  # engines started and not yet stopped


@dataclass
class Engine:
    """A running `msgroute run` plus helpers to talk to it."""

    workdir: Path
    config_path: Path
    env: dict
    port: int
    processes: int = 1
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def amqp_url(self) -> str:
        return self.env["MSGROUTE_AMQP_URL"]

    @property
    def store_url(self) -> str:
        return self.env["MSGROUTE_DATABASE_URL"]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "workers", "--config", str(self.config_path), *args],
                                env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"msgroute {' '.join(args)} failed: {result.stderr}")
        return result

    def create_account(self, name: str = "test", *extra: str) -> dict:
        return orjson.loads(self.cli("accounts", "create", name, *extra).stdout)

    def start(self) -> None:
        self.log_path = self.workdir / "engine.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers", "--config", str(self.config_path), "run",
             "--processes", str(self.processes)],
            env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        RUNNING.append(self)
        self.wait_ready()

    def wait_ready(self, timeout: float = 120) -> None:
        import urllib.request
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"engine exited early: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"engine not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self, timeout: float = 60) -> int:
        if self in RUNNING:
            RUNNING.remove(self)
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError("engine did not stop within the drain timeout")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


def write_config(path: Path, body: str) -> None:
    path.write_text(f'[gateway]\nhost = "127.0.0.1"\n\n[callbacks]\nallow_private_networks = true\n\n{body}')


async def wait_terminal(http: aiohttp.ClientSession, base: str, key: str, ids: list[str], timeout: float = 120,
                        terminal=frozenset({"delivered", "undelivered", "failed", "rejected", "expired",
                                           "canceled"})) -> dict[str, dict]:
    """Poll GET /v1/messages/{id} until every message is final; returns id -> resource."""
    headers = {"Authorization": f"Bearer {key}"}
    done: dict[str, dict] = {}
    pending = list(ids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        still = []
        for chunk_start in range(0, len(pending), 50):
            chunk = pending[chunk_start:chunk_start + 50]
            results = await asyncio.gather(*(_get(http, f"{base}/v1/messages/{i}", headers) for i in chunk))
            for message_id, message in zip(chunk, results):
                if message.get("status") in terminal:
                    done[message_id] = message
                else:
                    still.append(message_id)
        pending = still
        if pending:
            await asyncio.sleep(0.5)
    return done


async def _get(http, url, headers) -> dict:
    async with http.get(url, headers=headers) as resp:
        return await resp.json()
