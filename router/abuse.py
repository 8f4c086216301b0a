"""Automated abuse rules over one account's stream of send requests (pure: no I/O, no clock).

The gateway feeds every admitted message (`message`) and every request refused at
validation (`refused`) with the current time; a call returns the rules it tripped, each
with the signals that explain it. Rules (`[abuse]` in the configuration):

- `denied_url`: the content links to a host on `denied_url_hosts` (or a subdomain of one).
- `same_body`: one body reached more than `same_body_max_recipients` distinct recipients
  within `window_seconds`.
- `volume_spike`: the messages in the last window reach `volume_spike_min_messages` and
  exceed `volume_spike_factor` times the account's baseline (its average per window over
  the preceding period, which the caller reads from the store).
- `invalid_ratio`: at least `invalid_min_requests` requests in the window, and more than
  `invalid_ratio_max` of them refused for an invalid address.

Only fingerprints of bodies and masked addresses are kept in the signals.

Memory per account is bounded whatever its traffic: volume and invalid ratio are counted
per second over the window (at most `window_seconds` counters), and `same_body` looks at
the account's last `TRACKED_MESSAGES` messages within the window.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from router.clock import format_time
from router.privacy import mask_address

INVALID_ADDRESS_CODES = frozenset({"invalid_phone_number", "invalid_email", "invalid_device_token"})
SAMPLES = 3
# same_body's memory: a body must reach its limit of distinct recipients among this many of the
# account's latest messages (1 % of them at the default limit of 200)
TRACKED_MESSAGES = 20_000

_HOST = re.compile(r"(?<![\w@.-])(?:[a-z][a-z0-9+.-]*://)?((?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+"
                   r"[a-z](?:[a-z0-9-]*[a-z0-9])?)\.?(?![\w-])", re.IGNORECASE)


@dataclass(frozen=True)
class Rules:
    window_seconds: float = 300
    same_body_max_recipients: int = 200
    invalid_ratio_max: float = 0.5
    invalid_min_requests: int = 50
    volume_spike_factor: float = 20
    volume_spike_min_messages: int = 1000
    denied_url_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, abuse) -> Rules:
        return cls(abuse.window_seconds, abuse.same_body_max_recipients, abuse.invalid_ratio_max,
                   abuse.invalid_min_requests, abuse.volume_spike_factor, abuse.volume_spike_min_messages,
                   frozenset(h.lower().strip(".") for h in abuse.denied_url_hosts))


@dataclass(frozen=True)
class Trigger:
    rule: str
    detail: str
    signals: dict


@dataclass
class _Second:
    """One second of an account's requests."""

    second: int
    first_at: float  # the first request in it
    messages: int = 0  # admitted
    requests: int = 0  # admitted or refused
    invalid: int = 0  # refused for an invalid address
    first_message_at: float | None = None


@dataclass
class _Stream:
    """One account's recent traffic: what the rules need, and nothing more."""

    messages: deque = field(default_factory=deque)  # (time, body fingerprint, recipient), the latest only
    recipients: dict = field(default_factory=dict)  # fingerprint -> Counter(recipient -> messages)
    seconds: deque = field(default_factory=deque)  # _Second, oldest first, over the window
    in_window: int = 0  # the sums of `seconds`
    requests: int = 0
    invalid: int = 0

    def this_second(self, now: float) -> _Second:
        second = int(now)
        if self.seconds and self.seconds[-1].second >= second:  # the same second (or a clock step back)
            return self.seconds[-1]
        self.seconds.append(_Second(second, now))
        return self.seconds[-1]


def fingerprint(*parts: str | None) -> str:
    """Bodies compare equal regardless of case and spacing; only this digest is kept."""
    text = "\x1f".join(" ".join((p or "").split()).casefold() for p in parts)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def link_hosts(*texts: str | None) -> set[str]:
    return {m.group(1).lower() for text in texts if text for m in _HOST.finditer(text)}


def denied_entry(host: str, denied: frozenset[str]) -> str | None:
    labels = host.split(".")
    return next((".".join(labels[i:]) for i in range(len(labels)) if ".".join(labels[i:]) in denied), None)


def _iso(seconds: float) -> str:
    return format_time(datetime.fromtimestamp(seconds, UTC))


class Detector:
    def __init__(self, rules: Rules):
        self.rules = rules
        self._streams: dict[str, _Stream] = {}
        self._last_prune = 0.0

    def reset(self, account_id: str) -> None:
        """Forget the account's window (after a suspension)."""
        self._streams.pop(account_id, None)

    def tracked(self) -> int:
        return len(self._streams)

    def check_content(self, texts: tuple[str | None, ...]) -> list[Trigger]:
        out = []
        for host in sorted(link_hosts(*texts)):
            entry = denied_entry(host, self.rules.denied_url_hosts)
            if entry is not None:
                out.append(Trigger("denied_url", f"links to {host}, which is on the deny list ({entry})",
                                   {"host": host, "denied_entry": entry}))
        return out

    def message(self, account_id: str, now: float, to: str, texts: tuple[str | None, ...],
                baseline: float | None = None) -> list[Trigger]:
        """A message about to be accepted: content, one body to many, volume.

        `baseline`: the account's messages per window before this one (None: not known yet).
        """
        triggers = self.check_content(texts)
        stream = self._advance(account_id, now)
        body = fingerprint(*texts)
        if len(stream.messages) >= TRACKED_MESSAGES:
            _forget_oldest(stream)
        stream.messages.append((now, body, to))
        second = stream.this_second(now)
        if second.first_message_at is None:
            second.first_message_at = now
        second.messages += 1
        second.requests += 1
        stream.in_window += 1
        stream.requests += 1
        seen = stream.recipients.setdefault(body, Counter())
        seen[to] += 1
        rules = self.rules
        if len(seen) > rules.same_body_max_recipients:
            first = next(t for t, b, _ in stream.messages if b == body)
            triggers.append(Trigger(
                "same_body", f"one body went to {len(seen)} distinct recipients within {rules.window_seconds:g} s "
                f"(limit {rules.same_body_max_recipients})",
                {"body_fingerprint": body, "distinct_recipients": len(seen), "messages": sum(seen.values()),
                 "limit": rules.same_body_max_recipients, "window_seconds": rules.window_seconds,
                 "first_at": _iso(first), "last_at": _iso(now),
                 "sample_recipients": [mask_address(r) for r in list(seen)[:SAMPLES]]}))
        volume = stream.in_window
        if baseline is not None and volume >= rules.volume_spike_min_messages \
                and volume > rules.volume_spike_factor * baseline:
            triggers.append(Trigger(
                "volume_spike", f"{volume} messages within {rules.window_seconds:g} s against a baseline of "
                f"{baseline:.1f} per window (factor {rules.volume_spike_factor:g})",
                {"messages_in_window": volume, "baseline_per_window": round(baseline, 2),
                 "factor": rules.volume_spike_factor, "min_messages": rules.volume_spike_min_messages,
                 "window_seconds": rules.window_seconds,
                 "first_at": _iso(next(s.first_message_at for s in stream.seconds if s.messages)),
                 "last_at": _iso(now)}))
        return triggers

    def refused(self, account_id: str, now: float, code: str) -> list[Trigger]:
        """A request refused at validation; an invalid address counts towards the ratio."""
        stream = self._advance(account_id, now)
        invalid = code in INVALID_ADDRESS_CODES
        second = stream.this_second(now)
        second.requests += 1
        second.invalid += invalid
        stream.requests += 1
        stream.invalid += invalid
        total, rules = stream.requests, self.rules
        if invalid and total >= rules.invalid_min_requests and stream.invalid / total > rules.invalid_ratio_max:
            ratio = stream.invalid / total
            return [Trigger(
                "invalid_ratio", f"{stream.invalid} of {total} requests within {rules.window_seconds:g} s had an "
                f"invalid address ({ratio:.0%}, limit {rules.invalid_ratio_max:.0%})",
                {"invalid_requests": stream.invalid, "requests": total, "ratio": round(ratio, 3),
                 "limit": rules.invalid_ratio_max, "min_requests": rules.invalid_min_requests,
                 "window_seconds": rules.window_seconds, "first_at": _iso(stream.seconds[0].first_at),
                 "last_at": _iso(now)})]
        return []

    def _advance(self, account_id: str, now: float) -> _Stream:
        """Drop what fell out of the window (and, once per window, idle accounts)."""
        cutoff = now - self.rules.window_seconds
        if now - self._last_prune > self.rules.window_seconds:
            self._last_prune = now
            for other in list(self._streams):
                if other != account_id:
                    _expire(self._streams[other], cutoff)
                    if not self._streams[other].seconds:
                        del self._streams[other]
        stream = self._streams.get(account_id)
        if stream is None:
            stream = self._streams[account_id] = _Stream()
        _expire(stream, cutoff)
        return stream


def _expire(stream: _Stream, cutoff: float) -> None:
    while stream.messages and stream.messages[0][0] <= cutoff:
        _forget_oldest(stream)
    # a second leaves the window once all of it has (the counts lag by under a second)
    while stream.seconds and stream.seconds[0].second + 1 <= cutoff:
        gone = stream.seconds.popleft()
        stream.in_window -= gone.messages
        stream.requests -= gone.requests
        stream.invalid -= gone.invalid


def _forget_oldest(stream: _Stream) -> None:
    _, body, to = stream.messages.popleft()
    seen = stream.recipients[body]
    seen[to] -= 1
    if seen[to] <= 0:
        del seen[to]
        if not seen:
            del stream.recipients[body]
