"""Pacing from Discord's rate-limit buckets: the streamer against a fake sink that enforces a Discord-like bucket
(fixed windows opened by the first request, as the stand-in and Discord do) and reports it in Discord's headers
to a RateLimitBook, all on the virtual clock of test_streamer."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from bot.discord_pacing import RateLimitBook, parse_route
from bot.discord_stream import MessageStreamer
from bot.message_sink import RateLimitedError
from tests.unit.test_streamer import CURSOR, T0, FakeClock, FakeSink, check_final, stream

HOOK = "/api/v10/webhooks/11/tok"


@dataclass
class Window:
    limit: int
    period: float
    opened: float = float("-inf")
    used: int = 0


@dataclass
class BucketSink(FakeSink):
    """FakeSink behind one Discord-like bucket per interaction token (follow-ups and edits share it) and one per
    channel; every answer's headers go to ``book`` (unless ``headers`` is off). Over the limit: a 429."""

    book: RateLimitBook | None = None
    headers: bool = True
    limit_per_window: tuple[int, float] = (5, 2.0)
    windows: dict[str, Window] = field(default_factory=dict)
    refused: int = 0

    def route(self, op: str, kind: str, ref: int | None) -> tuple[str, str]:
        method = {"send": "POST", "edit": "PATCH", "delete": "DELETE"}[op]
        if kind == "channel" or (ref is not None and not self.msgs[ref].webhook):
            return method, "/api/v10/channels/5/messages" + (f"/{ref}" if ref is not None else "")
        if ref is None:
            return (method, HOOK) if op == "send" else (method, f"{HOOK}/messages/@original")
        return method, f"{HOOK}/messages/{ref}"

    async def _enter(self, op: str, ref: int | None, content: str | None, webhook: bool) -> None:
        await super()._enter(op, ref, content, webhook)
        key = "token" if webhook else "channel"
        w = self.windows.setdefault(key, Window(*self.limit_per_window))
        now = self.clock.now()
        if now >= w.opened + w.period:
            w.opened, w.used = now, 0
        reset_after = f"{w.opened + w.period - now:.3f}"
        if w.used >= w.limit:
            self.refused += 1
            self.violations.append(f"429 on {op} at {now - T0:.3f}")
            raise RateLimitedError("429", retry_after=w.opened + w.period - now)
        w.used += 1
        if self.book is not None and self.headers:
            method, path = self.route(_op(op), "channel" if not webhook else "followup", _ref(op, ref))
            self.book.observe(method, path, 200, {
                "X-RateLimit-Limit": str(w.limit), "X-RateLimit-Remaining": str(w.limit - w.used),
                "X-RateLimit-Reset-After": reset_after, "X-RateLimit-Bucket": f"hash-{key}"})


def _op(op: str) -> str:
    return "send" if op.startswith("send") else "delete" if op == "delete" else "edit"


def _ref(op: str, ref: int | None) -> int | None:
    return None if op in ("edit_original", "send_followup", "send_channel") else ref


def make(*, headers: bool = True, edit_interval: float = 1.0, latency: float = 0.0,
         limit_per_window: tuple[int, float] = (5, 2.0), **kw):
    clock = FakeClock()
    book = RateLimitBook(clock=clock.now)
    sink = BucketSink(clock, latency=latency, book=book, headers=headers, limit_per_window=limit_per_window)
    s = MessageStreamer(sink, clock=clock, cursor=CURSOR, edit_interval=edit_interval, pacer=book, **kw)
    return clock, book, sink, s


def staleness(sink: FakeSink, fed: list[tuple[float, int]]) -> float:
    """The longest a fed piece of text waited before an edit showed it."""
    shown = [(c.t, len(c.content.removesuffix(CURSOR))) for c in sink.calls if c.content]
    worst = 0.0
    for t, chars in fed:
        when = next(st for st, n in shown if st >= t and n >= chars)
        worst = max(worst, when - t)
    return worst


async def feed_timed(clock: FakeClock, s: MessageStreamer, deltas: list[str], every: float,
                     fed: list[tuple[float, int]]) -> None:
    for d in deltas:
        s.feed(d)
        fed.append((clock.now(), len(s.text.strip())))
        await clock.sleep(every)


async def test_edits_follow_the_bucket_never_over_it() -> None:
    clock, book, sink, s = make()
    deltas = ["ab "] * 600  # 30 s, one delta every 50 ms (1800 characters: one message)
    fed: list[tuple[float, int]] = []

    async def scenario() -> None:
        await feed_timed(clock, s, deltas, 0.05, fed)
        await s.finish()

    await clock.run(scenario())
    assert sink.violations == [] and sink.refused == 0
    edits = sink.edits_of(0)
    # 5 per 2 s with one kept for the final edit: 4 per window, evenly spread (the fixed 1 s interval gave 30)
    assert 55 <= len(edits) <= 62
    assert max(b.t - a.t for a, b in itertools.pairwise(edits[:-1])) <= 0.5 + 1e-6
    assert staleness(sink, fed) <= 0.5 + 1e-6
    check_final(sink, "".join(deltas), 2000)


async def test_the_last_words_go_at_once_when_the_bucket_has_room() -> None:
    for stop_after in (1.03, 1.51, 2.26, 3.97):  # anywhere in a window, right after an edit or not
        clock, book, sink, s = make()
        deltas = [f"w{i} " for i in range(int(stop_after / 0.01))]

        async def scenario() -> None:
            await stream(clock, s, deltas, 0.01)
            await s.finish()

        await clock.run(scenario())
        final = sink.calls[-1]
        assert final.content == "".join(deltas).strip()
        assert abs(final.t - (T0 + len(deltas) * 0.01)) < 1e-6, stop_after  # not a moment later
        assert sink.refused == 0


async def test_a_full_bucket_holds_the_final_edit_until_it_resets() -> None:
    clock, book, sink, s = make()

    async def scenario() -> None:
        s.feed("The door")
        await clock.sleep(0.1)
        # something else on this token (another call of ours) used the rest of the window
        w = sink.windows["token"]
        w.used = w.limit
        book.observe("POST", HOOK, 200, {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                                         "X-RateLimit-Reset-After": f"{w.opened + w.period - clock.now():.3f}",
                                         "X-RateLimit-Bucket": "hash-token"})
        s.feed(" opens.")
        await s.finish()

    await clock.run(scenario())
    assert sink.refused == 0
    assert [(round(c.t - T0, 3), c.content) for c in sink.calls] == [(0.0, "The door" + CURSOR),
                                                                    (2.0, "The door opens.")]


async def test_follow_ups_and_edits_share_the_token_bucket() -> None:
    clock, book, sink, s = make()
    deltas = [f"word{i} " for i in range(1500)]  # 10,000+ characters: six messages, sent and edited

    async def scenario() -> None:
        await stream(clock, s, deltas, 0.004)
        await s.finish()

    await clock.run(scenario())
    assert sink.violations == [] and sink.refused == 0
    assert len([c for c in sink.calls if c.op == "send_followup"]) >= 5
    check_final(sink, "".join(deltas), 2000)


async def test_no_message_edited_faster_than_the_floor() -> None:
    clock, book, sink, s = make(limit_per_window=(50, 1.0), min_edit_interval=0.25)  # a roomy bucket
    deltas = ["ab "] * 200

    async def scenario() -> None:
        await stream(clock, s, deltas, 0.02)
        await s.finish()

    await clock.run(scenario())
    edits = sink.edits_of(0)
    assert min(b.t - a.t for a, b in itertools.pairwise(edits[:-1])) >= 0.25 - 1e-9
    assert 15 <= len(edits) <= 18  # 4 s of text at one edit per 0.25 s


async def test_without_headers_the_configured_interval_paces() -> None:
    clock, book, sink, s = make(headers=False, edit_interval=1.0)
    deltas = ["ab "] * 200  # 10 s

    async def scenario() -> None:
        await stream(clock, s, deltas, 0.05)
        await s.finish()

    await clock.run(scenario())
    edits = sink.edits_of(0)
    assert all(b.t - a.t >= 1.0 - 1e-9 for a, b in itertools.pairwise(edits[:-1]))
    assert 10 <= len(edits) <= 12 and sink.refused == 0
    assert abs(edits[-1].t - T0 - 10.0) < 1e-6  # the final edit at once all the same (the floor is 0.25 s)


async def test_slow_answers_still_never_meet_a_429() -> None:
    clock, book, sink, s = make(latency=0.3)  # each call takes 0.3 s: headers arrive late
    deltas = [f"w{i} " for i in range(400)]

    async def scenario() -> None:
        await stream(clock, s, deltas, 0.02)
        await s.finish()

    await clock.run(scenario())
    assert sink.refused == 0
    check_final(sink, "".join(deltas), 2000)


def test_routes_group_like_discord_buckets() -> None:
    assert parse_route("PATCH", "/api/v10/webhooks/11/tok/messages/@original") == \
        ("PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original", "11/tok", "webhooks")
    assert parse_route("PATCH", "/api/v10/webhooks/11/tok/messages/123") == \
        ("PATCH /webhooks/{webhook_id}/{webhook_token}/messages/{id}", "11/tok", "webhooks")
    assert parse_route("POST", "/api/v10/channels/5/messages") == ("POST /channels/{id}/messages", "5", None)
    book = RateLimitBook(clock=lambda: 0.0)
    book.observe("PATCH", f"{HOOK}/messages/@original", 200, {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "3",
                                                               "X-RateLimit-Reset-After": "1.5",
                                                               "X-RateLimit-Bucket": "h1"})
    # a follow-up of the same token that has not answered yet is paced by that bucket; another token is not
    assert book.bucket(("POST", HOOK)).remaining == 3
    assert book.bucket(("POST", "/api/v10/webhooks/11/other")) is None


async def test_settle_shows_the_last_words_before_the_turn_is_stored() -> None:
    clock, book, sink, s = make()

    async def scenario() -> None:
        await stream(clock, s, [f"w{i} " for i in range(130)], 0.01)  # 1.3 s
        s.settle()  # the model's stream ended; the service now stores the turn (slow under load)
        await clock.sleep(2.0)
        s.feed("\n\nRoll: 17.")  # a tool round after all: more text
        await clock.sleep(0.1)
        s.settle()
        await clock.sleep(1.0)
        await s.finish()  # the turn is stored: now the cursor goes

    await clock.run(scenario())
    text = "".join(f"w{i} " for i in range(130))
    whole = [(round(c.t - T0, 3), c.content) for c in sink.calls
             if c.content.removesuffix(CURSOR).strip() in (text.strip(), text + "\n\nRoll: 17.")]
    assert whole == [(1.3, text + CURSOR), (3.3, text + "\n\nRoll: 17." + CURSOR),
                     (4.4, text + "\n\nRoll: 17.")]  # at once each time, the cursor only after finish()
    assert sink.refused == 0
