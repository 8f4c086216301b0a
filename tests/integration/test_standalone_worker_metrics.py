"""Separate roles: `msgroute gateway` and `msgroute worker route --metrics-port` as their own
processes. The standalone worker serves its own /metrics, and it counts what it routed."""
import subprocess
import sys
import time
import urllib.request

import aiohttp

from tests.engine import free_port


def _start(engine, *args: str) -> subprocess.Popen:
    log = open(engine.workdir / f"{args[0]}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "workers", "--config", str(engine.config_path), *args],
                            env=engine.env, cwd=engine.workdir, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _routed(text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("msgroute_messages_routed_total{"))


def _scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read().decode()
    except OSError:
        return None


async def test_a_standalone_worker_serves_its_own_metrics(make_engine, sqlite_url):
    engine = make_engine(sqlite_url, start=False)
    engine.cli("migrate")
    key = engine.create_account("roles")["api_key"]
    metrics_port = free_port()
    processes = [_start(engine, "gateway"), _start(engine, "worker", "route", "--metrics-port", str(metrics_port))]
    try:
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        deadline = time.monotonic() + 60
        while _scrape(metrics_url) is None or _scrape(f"{engine.base_url}/healthz") is None:
            assert time.monotonic() < deadline, "gateway or worker metrics did not come up"
            time.sleep(0.3)
        async with aiohttp.ClientSession() as http:
            for n in range(3):
                async with http.post(f"{engine.base_url}/v1/messages", headers={"Authorization": f"Bearer {key}"},
                                     json={"channel": "sms", "to": "+447911123456", "body": f"hi {n}"}) as resp:
                    assert resp.status == 202, await resp.text()
        deadline = time.monotonic() + 30
        while _routed(_scrape(metrics_url) or "") < 3:
            assert time.monotonic() < deadline, _scrape(metrics_url)
            time.sleep(0.3)
        assert _routed(_scrape(metrics_url)) == 3
    finally:
        for proc in processes:
            proc.terminate()
        for proc in processes:
            proc.wait(timeout=30)


def test_a_metrics_port_in_use_is_one_line(make_engine, sqlite_url):
    engine = make_engine(sqlite_url, start=False)
    busy = _start(engine, "worker", "status", "--metrics-port", str(port := free_port()))
    try:
        deadline = time.monotonic() + 30
        while _scrape(f"http://127.0.0.1:{port}/metrics") is None:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        result = engine.cli("worker", "route", "--metrics-port", str(port), check=False)
    finally:
        busy.terminate()
        busy.wait(timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("msgroute: cannot serve metrics on 127.0.0.1:") and "Traceback" not in result.stderr
