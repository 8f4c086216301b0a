"""/readyz follows the broker: 200 while it is up, 503 once it stops, 200 again when it returns,
without restarting msgroute. Uses a throwaway RabbitMQ node; the shared one is left alone."""
import time
import urllib.error
import urllib.request

import orjson
import pytest

from tests import broker as broker_module
from tests.broker import ThrowawayBroker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


@pytest.fixture
def throwaway_broker(tmp_path):
    if not broker_module.available():
        pytest.fail("rabbitmq-server is required for this test (Debian: apt-get install rabbitmq-server)")
    with ThrowawayBroker(tmp_path / "broker") as node:
        yield node


def readyz(base: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())
    except OSError as exc:
        return 0, {"error": str(exc)}


def wait_for_status(base: str, want: int, timeout: float) -> tuple[float, dict]:
    started = time.monotonic()
    status, body = readyz(base)
    while status != want and time.monotonic() - started < timeout:
        time.sleep(0.25)
        status, body = readyz(base)
    assert status == want, f"/readyz stayed {status} {body} for {timeout}s, expected {want}"
    return time.monotonic() - started, body


def test_readyz_follows_the_broker(throwaway_broker, make_engine, sqlite_url):  # broker outlives the engine
    engine = make_engine(sqlite_url, start=False, env={"MSGROUTE_AMQP_URL": throwaway_broker.url})
    engine.cli("migrate")
    engine.start()
    pid = engine.proc.pid

    _, body = wait_for_status(engine.base_url, 200, 30)
    assert body == {"status": "ready", "checks": {"broker": "ok", "store": "ok", "consumers": "ok"}}
    with urllib.request.urlopen(f"{engine.base_url}/healthz", timeout=5) as resp:
        assert resp.status == 200

    throwaway_broker.stop()
    took, body = wait_for_status(engine.base_url, 503, 10)
    print(f"/readyz 503 {took:.1f}s after the broker stopped: {body}")
    assert body["checks"]["broker"] != "ok" and body["checks"]["store"] == "ok"
    with urllib.request.urlopen(f"{engine.base_url}/healthz", timeout=5) as resp:
        assert resp.status == 200  # alive, just not ready

    throwaway_broker.start()
    took, body = wait_for_status(engine.base_url, 200, 60)
    print(f"/readyz 200 {took:.1f}s after the broker came back")
    assert body["checks"] == {"broker": "ok", "store": "ok", "consumers": "ok"}
    assert engine.proc.poll() is None and engine.proc.pid == pid  # the same msgroute run throughout
