"""A publish waiting for its confirm when the connection is found dead (a black hole: TCP stays up,
nothing arrives) fails as PublishUncertain or PublishFailed, so a caller answers 503 or requeues:
aiormq cancels those confirms, and a bare CancelledError would abort an HTTP request unanswered."""
import asyncio
import time

from router.settings import from_dict
from tests.faults import tools
from tests.faults.proxy import FaultProxy
from workers import amqp

HEARTBEAT = 2


async def test_pending_publishes_fail_cleanly_when_the_connection_dies(vhost):
    with FaultProxy(tools.amqp_port(vhost)) as proxy:
        settings = from_dict({"broker": {"url": proxy.url(vhost), "heartbeat_seconds": HEARTBEAT}})
        connection = await amqp.connect(settings, "publish-connection-lost")
        try:
            channel = await amqp.open_channel(connection)
            await amqp.declare_topology(channel, settings)
            publisher = amqp.Publisher(channel, timeout=30)  # longer than detection: the connection dies first
            outcomes: list[str] = []

            async def publish_one() -> None:
                started = time.monotonic()
                try:
                    await publisher.publish("", "msgroute.route", b"{}")
                    outcomes.append("confirmed")
                except amqp.PublishFailed as exc:
                    outcomes.append(f"{type(exc).__name__} after {time.monotonic() - started:.1f} s")

            proxy.set_mode("blackhole")
            pending = [asyncio.create_task(publish_one()) for _ in range(10)]
            done, _ = await asyncio.wait(pending, timeout=4 * HEARTBEAT + 5)
        finally:
            proxy.set_mode("pass")
            await connection.close()

    assert len(done) == len(pending), outcomes  # none hung
    for task in done:
        assert task.exception() is None, repr(task.exception())  # no CancelledError escaped
    assert len(outcomes) == 10 and all(o.startswith("PublishUncertain") for o in outcomes), outcomes
