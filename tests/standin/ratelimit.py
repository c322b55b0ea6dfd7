"""Discord-like rate limits: fixed windows per bucket (opened by the first request), plus a global limit.

Headers follow Discord's: X-RateLimit-Limit/Remaining/Reset/Reset-After/Bucket on answers, and on a 429 also
Retry-After, X-RateLimit-Scope and a ``Via`` header (discord.py treats a 429 without ``Via`` as a Cloudflare
ban and raises instead of retrying).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

# Windows may close up to this much early: an asyncio timer can fire a hair before the reset the client
# was told, and a client that waited exactly Reset-After must not be punished with a second 429.
_TOLERANCE = 0.002


@dataclass
class Limits:
    """(requests, per seconds) for each bucket kind; tests shrink them to stay fast."""

    interaction: tuple[int, float] = (5, 2.0)       # follow-ups and edits, per interaction token
    channel_create: tuple[int, float] = (5, 5.0)    # POST /channels/{id}/messages, per channel
    channel_edit: tuple[int, float] = (5, 5.0)      # PATCH .../messages/{id}, per channel
    channel_delete: tuple[int, float] = (5, 1.0)
    commands: tuple[int, float] = (5, 20.0)         # PUT commands, per scope
    global_: tuple[int, float] = (50, 1.0)          # every bot-authenticated request together

    def for_kind(self, kind: str) -> tuple[int, float]:
        return getattr(self, kind)


@dataclass
class Window:
    limit: int
    period: float
    remaining: int
    reset_at: float = 0.0


@dataclass
class Decision:
    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: float = 0.0
    scope: str = "user"


def _round_up(seconds: float) -> float:
    return max(0.001, math.ceil(seconds * 1000) / 1000)


class RateLimiter:
    def __init__(self, limits: Limits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._windows: dict[tuple[str, str], Window] = {}

    def _window(self, kind: str, key: str) -> Window:
        limit, period = self.limits.for_kind(kind)
        now = self.clock()
        window = self._windows.get((kind, key))
        if window is None or now >= window.reset_at - _TOLERANCE:
            window = Window(limit, period, limit, now + period)
            self._windows[(kind, key)] = window
        return window

    def take(self, kind: str, key: str) -> Decision:
        """Spend one request of bucket ``kind`` for ``key`` (a channel id, a token…), or say how long to wait."""
        window = self._window(kind, key)
        reset_after = _round_up(window.reset_at - self.clock())
        if window.remaining <= 0:
            return Decision(False, self._headers(kind, window, reset_after), reset_after, "user")
        window.remaining -= 1
        return Decision(True, self._headers(kind, window, reset_after))

    def take_global(self) -> Decision:
        window = self._window("global_", "")
        reset_after = _round_up(window.reset_at - self.clock())
        if window.remaining <= 0:
            return Decision(False, {"X-RateLimit-Global": "true"}, reset_after, "global")
        window.remaining -= 1
        return Decision(True)

    @staticmethod
    def bucket_hash(kind: str) -> str:
        # Stable per bucket kind, like Discord's opaque hashes; the major parameter makes it per channel/token.
        return hashlib.sha1(kind.encode()).hexdigest()[:16]

    def _headers(self, kind: str, window: Window, reset_after: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(window.limit),
            "X-RateLimit-Remaining": str(max(window.remaining, 0)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": self.bucket_hash(kind),
        }


def too_many_requests_headers(decision: Decision, *, with_ratelimit_headers: bool) -> dict[str, str]:
    headers = dict(decision.headers) if with_ratelimit_headers or decision.scope == "global" else {}
    headers.update({
        "Retry-After": str(math.ceil(decision.retry_after)),
        "X-RateLimit-Scope": decision.scope,
        "Via": "1.1 google",
    })
    return headers


def too_many_requests_body(decision: Decision) -> dict[str, object]:
    return {"message": "You are being rate limited.", "retry_after": decision.retry_after,
            "global": decision.scope == "global"}
