"""RabbitMQ names: exchanges, queues and routing keys (SPEC §5 and the internal hops)."""
from __future__ import annotations

INGEST_EXCHANGE = "msgroute.ingest"  # public, topic: send.<channel>
EVENTS_EXCHANGE = "msgroute.events"  # public, topic: status.*, usage.*, account.*, inbound.*
DISPATCH_EXCHANGE = "msgroute.dispatch"  # direct, key = carrier name
DEAD_EXCHANGE = "msgroute.dead"  # fanout to the dead-letter queue

AMQP_INGEST_QUEUE = "msgroute.ingest.amqp"  # bound to msgroute.ingest send.*
ROUTE_QUEUE = "msgroute.route"  # envelopes accepted by the gateway
STATUS_QUEUE = "msgroute.status"  # transitions proposed by workers
RECEIPTS_QUEUE = "msgroute.receipts"  # raw, signature-checked carrier receipts
CALLBACKS_QUEUE = "msgroute.callbacks"  # customer status callbacks to deliver
HEALTH_QUEUE_PREFIX = "msgroute.health."  # per-process, exclusive: carrier health broadcasts
REJECTED_QUEUE = "msgroute.rejected"  # AMQP ingest messages that failed validation
DEAD_QUEUE = "msgroute.dead"  # poison messages, reason in x-death-reason


def dispatch_queue(carrier: str) -> str:
    return f"msgroute.dispatch.{carrier}"


# A jittered retry goes through one of a tier's lanes, each a queue with its own fixed TTL from
# (1 - RETRY_JITTER) × delay up to the delay. Fixed per-queue TTLs, not per-message ones: a queue
# expires only its head, so random per-message TTLs in one queue would come back as one burst.
RETRY_JITTER = 0.2
JITTER_LANES = 5


def retry_queue(seconds: float, lane: int = 0) -> str:
    return f"msgroute.retry.{seconds:g}s" + (f".{lane}" if lane else "")


def retry_lane_ttl(seconds: float, lane: int) -> float:
    """Lane 0 is the tier itself (the full delay); the last lane waits (1 - RETRY_JITTER) × delay."""
    return seconds * (1 - RETRY_JITTER * lane / (JITTER_LANES - 1))


def status_key(channel: str, status: str) -> str:
    return f"status.{channel}.{status}"


def usage_key(channel: str) -> str:
    return f"usage.{channel}"


HEALTH_KEY = "health.carrier"  # internal broadcast on the events exchange
