"""MessageStreamer: the only code that turns a stream of narration into Discord message sends and edits.

It owns edit pacing (per message and per Discord rate-limit bucket, never global), splitting at the 2000-character limit (code fences closed and
reopened), resets before retries, visible failure endings, and the fallback to plain channel messages when the
15-minute interaction token dies. It never imports discord: it talks to a ``MessageSink`` (bot/discord_sink.py).
What it does when Discord says no (retries, rate limits, the token's expiry, a channel it may not post in) is
its mixin ``StreamFaults`` (bot/discord_stream_faults.py); one message's state is a ``_Msg`` (bot/stream_message.py).

Shape: ``feed``/``reset``/``checkpoint`` only change in-memory text and wake one background flusher task. The
flusher owns every Discord call (so one call at a time per streamer) and brings Discord in line with the text:
messages are laid out over the text as ``_Msg`` spans; the first message that differs from what Discord shows
is updated, earlier messages always first, so a message is final before the next one is sent.

Pacing: when Discord has reported the bucket a call falls in (``RateLimitBook``, bot/discord_pacing.py, shared
by every message on that bucket), an edit goes as soon as the bucket allows, its requests spread over its window
with one kept for the final edit, and no message is edited twice within ``min_edit_interval``; the final edit
(the stream has ended) goes at once when the bucket has room, else the moment it has. While nothing is known of
the bucket (no headers yet, or a server that sends none), each message keeps ``edit_interval`` between calls.
"""

from __future__ import annotations

import asyncio
import logging

from bot.discord_pacing import RateLimitBook, Route
from bot.discord_stream_faults import StreamFaults
from bot.message_sink import Clock, MessageSink, MonotonicClock
from bot.message_text import BOUNDARIES, FENCE, safe_cut, scan_fences
from bot.stream_message import CHANNEL, FOLLOWUP, ORIGINAL, _Msg

log = logging.getLogger(__name__)

PLACEHOLDER = "…"  # Discord rejects empty content
_CLOSE_RESERVE = 4  # room kept in every message for an added "\n```"


class MessageStreamer(StreamFaults):
    def __init__(self, sink: MessageSink, *, edit_interval: float = 1.0, clock: Clock | None = None,
                 token_expires_at: float | None = None, limit: int = 2000, cursor: str = " ▌",
                 blocked_note: str | None = None, min_edit_interval: float = 0.25,
                 pacer: RateLimitBook | None = None) -> None:
        if limit < len(cursor) + _CLOSE_RESERVE + 24 + 16:  # 24 = longest reopened fence line
            raise ValueError("limit too small for the cursor and fence markers")
        self._sink, self._interval, self._clock = sink, edit_interval, clock or MonotonicClock()
        self._floor = min(min_edit_interval, edit_interval)  # never edit one message more often than this
        self._pacer = pacer if pacer is not None and hasattr(sink, "route") else None
        self._hurry = asyncio.Event()  # finish()/fail(): the final edit need not wait out the pacing
        self._deadline, self._limit, self._cursor = token_expires_at, limit, cursor
        self._blocked_note = blocked_note  # told privately to the user when the channel refuses our messages
        self._token_dead = False  # Discord said the token is invalid (not merely past our own, earlier deadline)
        self._text = ""
        self._status: str | None = None  # status(): a transient line shown under the text while writing
        self._text_shown = False  # some narration reached Discord (then a failure ends it in public)
        self._checkpoint = 0
        self._note_at: int | None = None  # fail(): where our interruption note begins (not part of .text)
        self._low = 0  # lowest text length since the current call started (a reset may cut during a call)
        self._msgs: list[_Msg] = [_Msg(ORIGINAL, 0, created=True)]
        self._deletes: list[_Msg] = []
        self._closing = False
        self._settled = False  # settle(): the model stopped writing; what is there is shown as final
        self._refusal: str | None = None
        self._expired = False
        self._given_up = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # What callers, tests and benchmarks read.
        self.blocked_reason: str | None = None
        self.blocked_told = False  # the user got blocked_note
        self.edit_count = self.send_count = self.delete_count = self.error_count = 0
        self.first_edit_at: float | None = None  # clock time when the first text reached Discord

    # ----- the caller's side: synchronous and cheap -----
    @property
    def text(self) -> str:
        return self._text if self._note_at is None else self._text[: self._note_at]

    @property
    def expired(self) -> bool:
        return self._expired

    @property
    def messages_used(self) -> int:
        return sum(1 for m in self._msgs if m.created and (m.shown is not None or m.kind != ORIGINAL))

    def feed(self, text: str) -> None:
        if self._closing:
            log.warning("feed() after finish()/fail() ignored")
            return
        self._text += text
        self._status = None  # new text is the news: the notice has done its job
        self._settled = False
        self._poke()

    def status(self, note: str | None) -> None:
        """A transient small line under the text while writing (e.g. "trying again…" during a retry), so a wait
        is never unexplained. The next ``feed`` or the end of the answer removes it."""
        self._status = f"-# {note}" if note else None
        self._settled = self._settled and note is None
        self._poke()

    def settle(self) -> None:
        """The model's stream has ended: show all its text now, with the final edit's priority, not once the turn
        has been stored. The cursor stays until finish(): an answer shown as finished is always a stored one (a
        crash in between must not leave players believing in a turn the story does not have)."""
        if self._closing:
            return
        self._settled = True
        self._hurry.set()
        self._poke()

    def checkpoint(self) -> None:
        self._checkpoint = len(self._text)

    def reset(self) -> None:
        if self._closing or len(self._text) == self._checkpoint:
            return
        cut = self._checkpoint
        self._settled = False
        self._text = self._text[:cut]
        self._low = min(self._low, cut)
        keep: list[_Msg] = []
        for i, m in enumerate(self._msgs):
            if i > 0 and not self._text[m.start:].strip():  # holds only dropped text
                m.dropped = True
                if m.frozen:
                    log.warning("reset: a message the token no longer lets us edit keeps dropped text")
                elif m.created:
                    self._deletes.append(m)
                continue
            m.shown_end = min(m.shown_end, cut)
            keep.append(m)
        self._msgs = keep
        last = keep[-1]
        if last.frozen:
            last.end = min(last.end or 0, cut)
            self._append_after(last, last.end)
        else:
            last.end = None  # reopened: edited back to the kept text, may grow again
        self._poke()

    async def finish(self) -> None:
        self._closing = True
        self._hurry.set()
        await self._drain()

    async def fail(self, message: str) -> None:
        if not self._closing:
            if self._text.strip() or self._text_shown:  # a status note alone is not an answer to end
                last = self._msgs[-1]
                open_fence = scan_fences(self._text, last.start, len(self._text), last.inside, last.lang)[0]
                self._note_at = len(self._text)
                self._text += ("\n" + FENCE if open_fence else "") + f"\n\n*⚠️ The DM was interrupted: {message}*"
            else:
                self._refusal = message  # nothing public to end: remove "thinking…", tell the user privately
        self._closing = True
        self._hurry.set()
        await self._drain()

    def cancel(self) -> None:
        """Stop the flusher without final edits (the caller is shutting down)."""
        if self._task is not None:
            self._task.cancel()

    def _poke(self) -> None:
        self._wake.set()
        if self._task is None:
            try:
                self._task = asyncio.get_running_loop().create_task(self._run())
            except RuntimeError:  # fed outside a running loop: finish() starts the flusher
                pass

    async def _drain(self) -> None:
        if self._task is not None and self._task.done():
            self._task = None  # a flusher that was stopped: a new one brings Discord in line with the text
        self._poke()
        # Shielded: a stop that cancels the caller (the bot shutting down during the last paced edits) must not
        # cancel the flusher too, or the message would keep its cursor and lose its last words.
        await asyncio.shield(self._task)  # type: ignore[arg-type]  # inside a running loop, _poke starts it

    # ----- layout: where the messages' spans lie over the text -----
    def _eff_start(self, m: _Msg) -> int:
        # Discord trims leading whitespace; inside a reopened fence it is content, kept after the fence line.
        i = m.start
        if not m.inside:
            while i < len(self._text) and self._text[i].isspace():
                i += 1
        return i

    def _budget(self, m: _Msg) -> int:
        return self._limit - len(self._cursor) - len(m.prefix) - _CLOSE_RESERVE

    def _relayout(self) -> None:
        """Split the open message while its text exceeds what fits. A cut depends only on the text inside the
        message's window, so once made it never moves (except by reset)."""
        while True:
            m = self._msgs[-1]
            s, budget = self._eff_start(m), self._budget(m)
            if m.frozen or len(self._text) - s <= budget:
                return
            hi = s + budget
            zones = scan_fences(self._text, s, min(len(self._text), hi + 3), m.inside, m.lang)[2]
            cut = None
            for rx, fill in BOUNDARIES:
                ends = [x.end() for x in rx.finditer(self._text, s + int(budget * fill), hi)]
                cut = next((p for p in reversed(ends) if p > s and self._cut_ok(p, zones)), None)
                if cut is not None:
                    break
            if cut is None:  # no boundary at all: hard cut, but never inside a fence marker
                cut = self._safe_cut(m, hi, floor=s + 1)
            m.end = cut
            self._append_after(m, cut)

    def _append_after(self, m: _Msg, at: int) -> None:
        inside, lang, _ = scan_fences(self._text, m.start, at, m.inside, m.lang)
        self._msgs.append(_Msg(CHANNEL if self._expired else FOLLOWUP, at, inside, lang))

    def _content(self, m: _Msg, end: int, final: bool, closes: bool, status: str | None = None) -> str:
        body = m.prefix + self._text[self._eff_start(m):end]
        open_fence = scan_fences(self._text, m.start, end, m.inside, m.lang)[0]
        if not final:  # while writing: cursor, and the fence closed for now so code renders as code
            if status and not open_fence and len(body) + len(status) + len(self._cursor) + 1 <= self._limit:
                body += f"\n{status}"  # under the text, the cursor still last: the answer is being written
            return body + self._cursor + ("\n" + FENCE if open_fence else "")
        if open_fence and closes:  # the text continues in the next message, which reopens the fence
            body += FENCE if body.endswith("\n") else "\n" + FENCE
        return body.strip() or PLACEHOLDER

    # ----- the flusher: the only place that calls the sink -----
    async def _run(self) -> None:
        try:
            while True:
                self._wake.clear()
                self._relayout()
                if self.blocked_reason is None:
                    if self._deadline is not None and not self._expired and self._clock.now() >= self._deadline:
                        await self._expire(can_edit=True)
                        continue
                    if self._refusal is not None:
                        await self._refuse(self._refusal)
                        return
                    step = self._next_step()
                    if step is not None:
                        wait = self._ready_at(step[0], step[1]) - self._clock.now()
                        if wait > 0:
                            await self._pace(wait)  # the text keeps growing meanwhile
                        else:
                            await self._apply(*step)
                        continue
                if self._closing:
                    return
                await self._idle()
        except Exception:
            log.exception("message streamer stopped")
            self.blocked_reason = self.blocked_reason or "internal error"

    def _route(self, m: _Msg, op: str) -> Route | None:
        return self._sink.route(op, m.kind, m.ref) if self._pacer is not None else None  # type: ignore[attr-defined]

    def _ready_at(self, m: _Msg, op: str) -> float:
        """When the next call for ``m`` may go: the bucket's pace if Discord told us about it, else the configured
        interval; the final edit of the answer without the floor (at once when the bucket has room)."""
        final = (self._closing or self._settled) and op != "delete" and m is self._msgs[-1]
        route = self._route(m, op)
        at = self._pacer.ready_at(route, final=final) if route is not None else None  # type: ignore[union-attr]
        if at is None:  # nothing known of the bucket: the pace of the configuration
            at = m.last_start + (self._floor if final else self._interval)
        elif not final:
            at = max(at, m.last_start + self._floor)
        return max(at, m.hold_until)

    async def _pace(self, wait: float) -> None:
        """Sleep until the next call may go, but wake at once when the stream ends (its final edit may go now)."""
        if self._closing or self._settled:
            await self._clock.sleep(wait)
            return
        self._hurry.clear()
        waits = [asyncio.ensure_future(self._hurry.wait()), asyncio.ensure_future(self._clock.sleep(wait))]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _idle(self) -> None:
        if self._deadline is None or self._expired or self.blocked_reason:
            await self._wake.wait()
            return
        # Also wake at the token deadline, so the last webhook message loses its cursor while we still may edit.
        waits = [asyncio.ensure_future(self._wake.wait()),
                 asyncio.ensure_future(self._clock.sleep(self._deadline - self._clock.now()))]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def _next_step(self) -> tuple[_Msg, str, str, int] | None:
        if self._deletes:
            return self._deletes[0], "delete", "", 0
        for i, m in enumerate(self._msgs):
            if m.frozen:
                continue
            last = i == len(self._msgs) - 1
            final = self._closing or not last
            # While writing, hold back a fence marker still arriving ("``", "```py"), so what is shown always
            # ends where a cut is safe: a token that dies right then leaves no broken fence behind.
            end = m.end if m.end is not None else len(self._text) if final or self._settled else self._safe_cut(m)
            status = self._status if last and not final and (m.created or m.kind == ORIGINAL) else None
            if last and m.shown is None and not self._text[self._eff_start(m):end].strip():
                if not (self._closing and m.kind == ORIGINAL) and status is None:
                    return None  # nothing to show yet; never send an empty message
            content = self._content(m, end, final=final, closes=not last, status=status)
            if content != m.shown:
                return m, ("edit" if m.created else "send"), content, end
        return None

    async def _call(self, m: _Msg, op: str, content: str) -> None:
        if op == "delete":
            await self._sink.delete(m.ref)
            self.delete_count += 1
        elif op == "send":
            m.ref = await (self._sink.send_channel if m.kind == CHANNEL else self._sink.send_followup)(content)
            m.created = True
            self.send_count += 1
        else:
            await (self._sink.edit_original(content) if m.kind == ORIGINAL else self._sink.edit(m.ref, content))
            self.edit_count += 1

    async def _apply(self, m: _Msg, op: str, content: str, end: int) -> None:
        m.last_start = self._clock.now()  # pacing counts from the start of the previous call
        self._low = len(self._text)
        route = self._route(m, op)
        if route is not None:
            self._pacer.started(route)  # type: ignore[union-attr]
        try:
            await self._call(m, op, content)
        except Exception as e:  # noqa: BLE001 - a sink bug must not stop the answer; logged below
            await self._on_error(m, op, e)
            return
        finally:
            if route is not None:
                self._pacer.ended(route)  # type: ignore[union-attr]
        m.failures = m.limited = 0
        if op == "delete":
            self._deletes.remove(m)
            return
        m.shown, m.shown_end = content, min(end, self._low)
        self._text_shown = self._text_shown or bool(self._text[self._eff_start(m):m.shown_end].strip())
        if self.first_edit_at is None:
            self.first_edit_at = self._clock.now()
        if m.dropped and op == "send":  # reset() dropped it while the send was in flight
            self._deletes.append(m)

    def _freeze(self, m: _Msg, at: int) -> None:
        """m keeps what it shows; the text from `at` on continues in a new message."""
        at = min(at, len(self._text))
        m.end, m.frozen = at, True
        if m.dropped:  # reset() removed it during the failed call: nothing continues from it
            return
        i = self._msgs.index(m)
        del self._msgs[i + 1:]  # not yet sent (earlier messages always go first): relayout recreates them
        self._append_after(m, at)

    def _cut_ok(self, p: int, zones: list[tuple[int, int]]) -> bool:
        # A backtick right before p with fewer than 2 characters after it may still become a ``` across p.
        return safe_cut(p, zones) and not (p + 2 > len(self._text) and self._text[p - 1:p] == "`")

    def _safe_cut(self, m: _Msg, pos: int | None = None, floor: int | None = None) -> int:
        """The last position <= pos (default: all text) where m's text may end without breaking a fence marker."""
        cut = len(self._text) if pos is None else pos
        floor = m.start if floor is None else floor
        zones = scan_fences(self._text, m.start, min(len(self._text), cut + 3), m.inside, m.lang)[2]
        while cut > floor and not self._cut_ok(cut, zones):
            cut -= 1
        return cut
