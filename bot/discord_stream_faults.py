"""What the MessageStreamer does when Discord says no (a mixin of ``MessageStreamer``, bot/discord_stream.py, whose
attributes it uses): retries with backoff for transient errors, waiting out rate limits, giving a message up and
continuing in a fresh one, the interaction token's expiry (webhook messages frozen, the rest in channel
messages), a channel the bot may not post in, and the private refusal when there is nothing public to end."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bot.message_sink import MissingAccess, RateLimitedError, TokenExpired
from bot.stream_message import CHANNEL, ORIGINAL, _Msg

log = logging.getLogger("bot.discord_stream")

MAX_ATTEMPTS = 4  # one call plus three retries for transient errors (5xx, network)
MAX_RATE_LIMITED = 20  # consecutive RateLimitedErrors on one message before we stop waiting for it
MAX_GIVE_UPS = 3  # messages abandoned after errors before the streamer stops calling Discord at all


class StreamFaults:
    if TYPE_CHECKING:  # the streamer's own, for type checkers
        def __getattr__(self, name: str) -> Any: ...

    async def _on_error(self, m: _Msg, op: str, e: Exception) -> None:
        self.error_count += 1
        now = self._clock.now()
        if isinstance(e, TokenExpired) and m.kind != CHANNEL:
            self._token_dead = True
            if op == "delete":
                self._deletes.remove(m)
                log.warning("token expired: a dropped follow-up stays visible")
            await self._expire(can_edit=False)
        elif isinstance(e, MissingAccess) and m.kind == CHANNEL:
            self.blocked_reason = f"missing access: {e}"  # looping would only earn invalid-request strikes
            log.warning("cannot post in this channel: %s", e)
            await self._tell_blocked()
        elif isinstance(e, RateLimitedError):
            m.limited += 1
            m.hold_until = max(m.hold_until, now + e.retry_after)  # the retry then carries the latest text
            if m.limited > MAX_RATE_LIMITED:
                self._give_up(m, op, e)
        elif getattr(e, "retryable", True) and m.failures + 1 < MAX_ATTEMPTS:
            m.failures += 1
            m.hold_until = max(m.hold_until, now + 0.5 * 2 ** (m.failures - 1))
            log.info("discord call failed (%s), retrying", e)
        else:
            self._give_up(m, op, e)

    def _give_up(self, m: _Msg, op: str, e: Exception) -> None:
        log.error("giving up on a message after errors: %r", e)
        if op == "delete":
            self._deletes.remove(m)
            return
        self._given_up += 1
        if self._given_up >= MAX_GIVE_UPS:
            self.blocked_reason = f"discord errors: {e}"
        elif m.created:
            self._freeze(m, m.shown_end)  # the rest continues in a fresh message
        else:
            m.failures = m.limited = 0

    async def _expire(self, *, can_edit: bool) -> None:
        """The interaction token is (about to be) dead: webhook messages are frozen, the rest goes to the channel."""
        self._expired = True
        log.info("interaction token expired; continuing in channel messages")
        for m in self._msgs:
            if not m.created:
                m.kind = CHANNEL
        hooks = self._live_hooks()
        if hooks and can_edit:  # the caller's safety margin leaves time for one closing edit (cursor off)
            m = hooks[-1]  # earlier ones are final already: a message is finished before the next is sent
            cut = m.end if m.end is not None else self._safe_cut(m)
            self._low = len(self._text)
            try:
                if self._text[self._eff_start(m):cut].strip() or m.inside:
                    content = self._content(m, cut, final=True, closes=True)
                    if content != m.shown:
                        await self._call(m, "edit", content)
                        m.shown, m.shown_end = content, min(cut, self._low)
                elif m.kind == ORIGINAL and m.shown is None:
                    await self._sink.delete(None)  # nothing to show: don't leave "thinking…" forever
                    self.delete_count += 1
            except Exception as e:  # noqa: BLE001 - best effort; the continuation covers what it missed
                self.error_count += 1
                self._token_dead = self._token_dead or isinstance(e, TokenExpired)
                log.warning("closing edit before token expiry failed: %r", e)
            hooks = self._live_hooks()  # reset() may have run during the edit
        for h in hooks:
            h.frozen = True
        if hooks:
            self._freeze(hooks[-1], hooks[-1].shown_end)

    def _live_hooks(self) -> list[_Msg]:
        return [m for m in self._msgs if m.created and not m.frozen and m.kind != CHANNEL]

    async def _refuse(self, message: str) -> None:
        # Delete first: after a deferral Discord turns the first follow-up into the original response (public).
        # Once the token is dead there is no private way left: say it in public rather than not at all.
        calls = (lambda: self._sink.delete(None), lambda: self._sink.send_ephemeral(message))
        for call in calls if not self._expired else ():
            try:
                await call()
            except TokenExpired:
                self._expired = self._token_dead = True
                break
            except Exception as e:  # noqa: BLE001 - a refusal is best effort
                self.error_count += 1
                log.warning("refusal call failed: %r", e)
        if not self._expired:
            return
        try:
            await self._sink.send_channel(message)
        except MissingAccess as e:
            self.blocked_reason = f"missing access: {e}"
            await self._tell_blocked()
        except Exception as e:  # noqa: BLE001
            log.warning("refusal message could not be posted: %r", e)

    async def _tell_blocked(self) -> None:
        """The channel refuses our messages. We give the token up before it dies (a margin), so it may still
        carry one private note to the user saying what is missing; once Discord says it is dead, only the
        operator's log can."""
        if self._blocked_note is None or self._token_dead or self.blocked_told:
            return
        try:
            await self._sink.send_ephemeral(self._blocked_note)
            self.blocked_told = True
        except Exception as e:  # noqa: BLE001 - best effort
            self.error_count += 1
            log.warning("could not tell the user that the bot may not post here: %r", e)
