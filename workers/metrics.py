"""Prometheus metrics (SPEC §11). Under `msgroute run` every child writes to the shared
PROMETHEUS_MULTIPROC_DIR and the gateway's /metrics aggregates them all."""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

P = "msgroute_"
CARRIER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
END_TO_END_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

messages_accepted = Counter(P + "messages_accepted_total", "Messages accepted at ingest", ["channel"])
messages_rejected = Counter(P + "messages_rejected_total", "Messages rejected", ["channel", "reason"])
messages_routed = Counter(P + "messages_routed_total", "Route decisions made", ["channel", "carrier", "region"])
dispatch_total = Counter(P + "dispatch_total", "Carrier send attempts by outcome", ["carrier", "outcome"])
dispatch_seconds = Histogram(P + "dispatch_seconds", "Carrier send latency", ["carrier"], buckets=CARRIER_BUCKETS)
receipts_total = Counter(P + "receipts_total", "Delivery receipts received", ["carrier", "status"])
accept_to_sent = Histogram(P + "accept_to_sent_seconds", "Time from acceptance to carrier acceptance",
                           ["channel"], buckets=END_TO_END_BUCKETS)
accept_to_delivered = Histogram(P + "accept_to_delivered_seconds", "Time from acceptance to delivery receipt",
                                ["channel"], buckets=END_TO_END_BUCKETS)
retries_total = Counter(P + "retries_total", "Send attempts scheduled for retry", ["carrier"])
failovers_total = Counter(P + "failovers_total", "Failovers to another carrier", ["from_carrier"])
circuit_open = Gauge(P + "carrier_circuit_open", "1 while the carrier's circuit is open or half-open",
                     ["carrier"], multiprocess_mode="max")
usage_records = Counter(P + "usage_records_total", "Usage records created", ["channel"])
accounts_suspended = Counter(P + "accounts_suspended_total", "Accounts suspended by abuse control")
dead_letters = Counter(P + "dead_letters_total", "Messages sent to the dead-letter queue", ["queue"])
unknown_receipts = Counter(P + "receipts_unknown_total", "Receipts for carrier ids we do not know", ["carrier"])
inbound_total = Counter(P + "inbound_total", "Inbound messages by what they did", ["channel", "action"])
callbacks_total = Counter(P + "callbacks_total", "Customer status callbacks by outcome", ["outcome"])
queue_depth = Gauge(P + "queue_depth", "Messages waiting in an engine queue", ["queue"],
                    multiprocess_mode="livemax")
queue_consumers = Gauge(P + "queue_consumers", "Consumers attached to an engine queue", ["queue"],
                        multiprocess_mode="livemax")


def render() -> bytes:
    """The text exposition: every process of a `msgroute run` when in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


def mark_process_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
