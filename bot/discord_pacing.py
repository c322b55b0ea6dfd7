"""Discord's rate-limit buckets as Discord reports them, shared by every streamed message on a bucket.

Why this exists: discord.py reads ``X-RateLimit-Remaining`` / ``-Reset-After`` / ``-Bucket`` only to sleep
once a bucket is empty (the webhook adapter, which carries interaction edits and follow-ups, even sleeps inside
the call that emptied it). It never tells its caller how much room is left, so a streamer that wants to edit as
often as a bucket allows, spread over its window, and keep room for the last words, must read the headers
itself. ``RateLimitBook`` does that from an aiohttp ``TraceConfig`` on discord.py's own session (the
``http_trace`` option of ``discord.Client``): it sees every answer of every REST and webhook call.

A bucket is what Discord says it is: the ``X-RateLimit-Bucket`` hash of a route plus the route's major parameter
(the webhook id and token, the channel id, the guild id). Until a route has answered with a hash, a webhook
route borrows the hash another route of the same token reported (an interaction token's follow-ups and edits
share one bucket); other routes count as their own bucket.

How the streamer uses it (``ready_at``): an edit goes at once when the bucket is fresh; otherwise the requests
left are spread evenly over what is left of the window, always keeping one request for the final edit, which
takes it at once (or, if even that is used, goes the moment the window resets). No bucket known: ``None``, and
the streamer falls back to its configured per-message interval.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
import aiohttp

RESERVE = 1  # requests of a bucket that intermediate edits leave for the final edit
_SWEEP_AT = 2048  # buckets kept before idle ones are dropped (tokens live 15 minutes, channels forever)
_IDLE = 60.0  # seconds after its window ended with nothing in flight that a bucket is forgotten
_MAJOR = {"channels", "guilds"}
_ROOTS = {"webhooks", "channels", "guilds", "interactions", "applications", "users", "gateway", "oauth2"}

Route = tuple[str, str]  # (HTTP method, URL path), e.g. ("PATCH", "/api/v10/webhooks/1/tok/messages/@original")


@dataclass
class Bucket:
    limit: int
    remaining: int  # as Discord last said, minus the calls we started since
    reset_at: float  # clock time at which the window ends (remaining is back to limit)
    period: float  # the longest Reset-After seen: how long a fresh window lasts
    in_flight: int = 0
    last_start: float = -math.inf  # when the last paced call on this bucket started

    def refresh(self, now: float) -> None:
        if now >= self.reset_at and self.remaining < self.limit:
            self.remaining = self.limit  # the window ended: a new one opens with the next request


def parse_route(method: str, path: str) -> tuple[str, str, str | None]:
    """(route key, major parameter, family) of a request path. The route key is the method and the path with
    its ids templated, the way Discord groups routes into buckets; the family says which routes may share a
    bucket before they have reported their hash ("webhooks": everything under one token)."""
    parts = path.strip("/").split("/")
    start = next((i for i, p in enumerate(parts) if p in _ROOTS), len(parts))
    parts = parts[start:]
    if not parts:
        return f"{method} {path}", "", None
    root, major, family, rest = parts[0], "", None, parts[1:]
    if root == "webhooks" and len(parts) >= 3:
        major, family, rest = f"{parts[1]}/{parts[2]}", "webhooks", parts[3:]
        template = ["webhooks", "{webhook_id}", "{webhook_token}"]
    elif root in _MAJOR and len(parts) >= 2:
        major, rest = parts[1], parts[2:]
        template = [root, "{id}"]
    else:
        template = [root]
    template += ["{id}" if p.isdigit() else p for p in rest]
    return f"{method} /{'/'.join(template)}", major, family


class RateLimitBook:
    """The rate-limit state of every bucket this process has heard of, fed by discord.py's answers."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hashes: dict[str, str] = {}  # route key -> Discord's bucket hash
        self._family: dict[str, str] = {}  # family -> the hash one of its routes reported
        self._buckets: dict[str, Bucket] = {}
        self.observed = 0  # answers that carried rate-limit headers (for logs and tests)

    # -- identity ------------------------------------------------------------------------------------------
    def bucket_id(self, route: Route) -> str:
        key, major, family = parse_route(*route)
        digest = self._hashes.get(key) or (self._family.get(family) if family else None) or key
        return f"{digest}:{major}"

    def bucket(self, route: Route) -> Bucket | None:
        bucket = self._buckets.get(self.bucket_id(route))
        if bucket is not None:
            bucket.refresh(self._clock())
        return bucket

    # -- what the streamer asks ----------------------------------------------------------------------------
    def ready_at(self, route: Route, *, final: bool) -> float | None:
        """Earliest clock time for a call on ``route``; None when Discord has told us nothing about its bucket.
        ``final``: the last edit of an answer, which may take the request kept in reserve."""
        bucket = self.bucket(route)
        if bucket is None:
            return None
        now = self._clock()
        left = bucket.remaining
        if final:
            return now if left >= 1 else bucket.reset_at
        if left <= RESERVE:
            return bucket.reset_at
        if now >= bucket.reset_at or bucket.last_start == -math.inf:
            return now  # a fresh window: its first request opens it
        # Spread what is left (minus the reserve) evenly over the rest of the window.
        return bucket.last_start + (bucket.reset_at - bucket.last_start) / (left - RESERVE + 1)

    def started(self, route: Route) -> None:
        bucket = self.bucket(route)
        if bucket is None:
            return
        now = self._clock()
        if now >= bucket.reset_at:  # this call opens a new window; its answer will say when it ends
            bucket.reset_at = now + bucket.period
        bucket.remaining -= 1
        bucket.in_flight += 1
        bucket.last_start = now

    def ended(self, route: Route) -> None:
        bucket = self.bucket(route)
        if bucket is not None and bucket.in_flight > 0:
            bucket.in_flight -= 1

    # -- what Discord says ---------------------------------------------------------------------------------
    def observe(self, method: str, path: str, status: int, headers: Mapping[str, str]) -> None:
        """One answer. Headers are read case-insensitively by aiohttp's CIMultiDict; plain dicts in tests use
        Discord's spelling."""
        remaining, limit = headers.get("X-RateLimit-Remaining"), headers.get("X-RateLimit-Limit")
        if remaining is None:
            if status == 429 and headers.get("X-RateLimit-Scope") != "global":
                self._limited(method, path, headers)
            return
        try:
            left, cap, after = int(remaining), int(limit or remaining), _reset_after(headers)
        except (TypeError, ValueError):
            return
        key, major, family = parse_route(method, path)
        digest = headers.get("X-RateLimit-Bucket")
        if digest:
            self._hashes[key] = digest
            if family:
                self._family.setdefault(family, digest)
        bucket_id = f"{digest or key}:{major}"
        now = self._clock()
        reset_at = now + after
        bucket = self._buckets.get(bucket_id)
        self.observed += 1
        if bucket is None:
            if len(self._buckets) >= _SWEEP_AT:
                self._sweep(now)
            # The call that brought the first news started about now: pace the next one from it.
            self._buckets[bucket_id] = Bucket(cap, left, reset_at, after, last_start=now)
            return
        bucket.limit, bucket.period = cap, max(bucket.period, after)
        if now < bucket.reset_at and abs(reset_at - bucket.reset_at) < 0.25 * max(bucket.period, 0.1):
            bucket.remaining = min(bucket.remaining, left)  # same window: our own later calls are not in it yet
        else:  # a new window: calls still in flight (other than this one) will be counted in it
            bucket.remaining = left - max(0, bucket.in_flight - 1)
        bucket.reset_at = max(reset_at, bucket.reset_at) if now < bucket.reset_at else reset_at

    def _limited(self, method: str, path: str, headers: Mapping[str, str]) -> None:
        """A 429 without bucket headers: whatever its bucket is, it is empty until Retry-After."""
        try:
            retry = float(headers.get("Retry-After", "1"))
        except ValueError:
            retry = 1.0
        bucket = self._buckets.get(self.bucket_id((method, path)))
        if bucket is not None:
            bucket.remaining, bucket.reset_at = 0, max(bucket.reset_at, self._clock() + retry)

    def _sweep(self, now: float) -> None:
        idle = [k for k, b in self._buckets.items() if b.in_flight == 0 and now > b.reset_at + _IDLE]
        for k in idle:
            del self._buckets[k]

    # -- wiring --------------------------------------------------------------------------------------------
    def trace_config(self) -> aiohttp.TraceConfig:
        """For ``discord.Client(http_trace=...)``: every answer discord.py receives passes through ``observe``."""
        trace = aiohttp.TraceConfig()

        async def on_request_end(_session: aiohttp.ClientSession, _ctx: SimpleNamespace,
                                 params: aiohttp.TraceRequestEndParams) -> None:
            self.observe(params.method, params.url.path, params.response.status, params.response.headers)

        trace.on_request_end.append(on_request_end)
        return trace


def _reset_after(headers: Mapping[str, str]) -> float:
    after = headers.get("X-RateLimit-Reset-After")
    if after is not None:
        return max(0.0, float(after))
    reset = headers.get("X-RateLimit-Reset")  # epoch seconds: only as good as the clocks agree
    return max(0.0, float(reset) - time.time()) if reset is not None else 0.0
