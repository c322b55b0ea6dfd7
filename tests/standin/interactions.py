"""One interaction as the stand-in tracks it, and the handle tests hold to look at its outcome."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Callable

from .messages import MessageView

if TYPE_CHECKING:
    from .state import StandInState

PONG, CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE = 1, 4, 5, 6, 7
MODAL = 9
APPLICATION_COMMAND, MESSAGE_COMPONENT = 2, 3
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024


def new_token() -> str:
    # Real tokens are long, URL-safe and start with base64("interaction:"); discord.py quotes them into paths.
    return "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(64)


class InteractionHandle:
    """What a test holds after ``invoke``: the response Discord recorded and the messages a user sees."""

    def __init__(self, state: "StandInState", *, id: int, token: str, kind: int, name: str, guild_id: int | None,
                 channel_id: int, user_id: int, payload: dict[str, Any], dispatched_at: float,
                 expires_at: float, message_id: int | None = None) -> None:
        self._state = state
        self.id = id
        self.token = token
        self.kind = kind
        self.name = name
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.user_id = user_id
        self.payload = payload  # the INTERACTION_CREATE body as dispatched
        self.dispatched_at = dispatched_at
        self.expires_at = expires_at
        self.message_id = message_id  # the message a component interaction came from
        self.response_type: int | None = None
        self.response_flags = 0
        self.responded_at: float | None = None
        self.original_id: int | None = None
        self.followup_ids: list[int] = []
        self.modal: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return (f"<InteractionHandle /{self.name} id={self.id} response_type={self.response_type} "
                f"followups={len(self.followup_ids)}>")

    @property
    def acknowledged(self) -> bool:
        return self.response_type is not None

    @property
    def deferred(self) -> bool:
        return self.response_type in (DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE)

    @property
    def ephemeral(self) -> bool:
        """Whether the response (the original message) is only visible to the invoking user."""
        return bool(self.response_flags & 64)

    @property
    def expired(self) -> bool:
        return self._state.clock() >= self.expires_at

    @property
    def ack_latency(self) -> float | None:
        """Seconds from dispatch to the callback (Discord allows 3)."""
        return None if self.responded_at is None else self.responded_at - self.dispatched_at

    @property
    def original(self) -> MessageView | None:
        if self.original_id is None:
            return None
        return self._state.messages[self.original_id].view(self._state.world)

    @property
    def followups(self) -> list[MessageView]:
        return [self._state.messages[i].view(self._state.world) for i in self.followup_ids]

    async def wait_acknowledged(self, timeout: float = 5.0) -> "InteractionHandle":
        await self._state.wait_for(lambda: self.acknowledged, timeout)
        return self

    async def wait_until(self, predicate: Callable[["InteractionHandle"], Any], timeout: float = 5.0) -> Any:
        return await self._state.wait_for(lambda: predicate(self), timeout)
