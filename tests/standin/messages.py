"""Messages as Discord keeps them: body checks, who gets pinged, edit history, and what a user sees."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import EMPTY_MESSAGE, error, field_errors, invalid_form_body, merge_errors
from .model import MENTION_EVERYONE, World, iso, utcnow

MAX_CONTENT = 2000  # the bot limit; Discord's OpenAPI description says 4000 (its known gap)
MAX_EMBEDS = 10
MAX_EMBED_DESCRIPTION = 4096
MAX_EMBED_TOTAL = 6000

EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_EMBEDS = 1 << 2
SUPPRESS_NOTIFICATIONS = 1 << 12
# Flags a sender may set; anything else in a request is ignored, as Discord does.
SETTABLE_FLAGS = EPHEMERAL | SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | (1 << 15)  # 1<<15: components v2

DEFAULT, CHAT_INPUT_COMMAND = 0, 20

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


def _embed_size(embed: dict[str, Any]) -> int:
    size = len(embed.get("title") or "") + len(embed.get("description") or "")
    size += len((embed.get("footer") or {}).get("text") or "") + len((embed.get("author") or {}).get("name") or "")
    for f in embed.get("fields") or []:
        size += len(f.get("name") or "") + len(f.get("value") or "")
    return size


def check_body(body: dict[str, Any], *, prefix: tuple[str, ...] = ()) -> None:
    """Discord's size limits, answered in Discord's nested ``errors`` shape (code 50035)."""
    errors: dict[str, Any] = {}
    content = body.get("content")
    if isinstance(content, str) and len(content) > MAX_CONTENT:
        merge_errors(errors, field_errors(prefix + ("content",), "BASE_TYPE_MAX_LENGTH",
                                          f"Must be {MAX_CONTENT} or fewer in length."))
    embeds = body.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        merge_errors(errors, field_errors(prefix + ("embeds",), "BASE_TYPE_MAX_LENGTH",
                                          f"Must be {MAX_EMBEDS} or fewer in length."))
    for i, embed in enumerate(embeds):
        if len(embed.get("description") or "") > MAX_EMBED_DESCRIPTION:
            merge_errors(errors, field_errors(prefix + ("embeds", str(i), "description"), "BASE_TYPE_MAX_LENGTH",
                                              f"Must be {MAX_EMBED_DESCRIPTION} or fewer in length."))
    if sum(_embed_size(e) for e in embeds) > MAX_EMBED_TOTAL:
        merge_errors(errors, field_errors(prefix + ("embeds",), "MAX_EMBED_SIZE_EXCEEDED",
                                          "Embed size exceeds maximum size of 6000"))
    if errors:
        raise invalid_form_body(errors)


def is_empty(fields: dict[str, Any]) -> bool:
    content = fields.get("content") or ""
    return not (content.strip() or fields.get("embeds") or fields.get("attachments") or fields.get("components")
                or fields.get("sticker_ids") or fields.get("poll"))


@dataclass(frozen=True)
class Revision:
    at: dt.datetime
    content: str
    embeds: tuple[dict[str, Any], ...] = ()


@dataclass
class StoredMessage:
    id: int
    channel_id: int
    guild_id: int | None
    author_id: int
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    tts: bool = False
    type: int = DEFAULT
    allowed_mentions: dict[str, Any] | None = None
    message_reference: dict[str, Any] | None = None
    nonce: Any = None
    viewer_id: int | None = None  # set for ephemeral messages: only this user sees them
    interaction_id: int | None = None
    webhook_id: int | None = None
    created_at: dt.datetime = field(default_factory=utcnow)
    edited_at: dt.datetime | None = None
    history: list[Revision] = field(default_factory=list)
    deleted_at: dt.datetime | None = None
    pinged_users: tuple[int, ...] = ()
    pinged_roles: tuple[int, ...] = ()
    pinged_everyone: bool = False

    def apply(self, body: dict[str, Any], world: World, *, editing: bool) -> None:
        """Write the fields a create/edit body carries; keep the rest (PATCH semantics)."""
        if "content" in body:
            self.content = body["content"] or ""
        for key in ("embeds", "components", "attachments"):
            if key in body:
                setattr(self, key, list(body[key] or []))
        if "allowed_mentions" in body:
            self.allowed_mentions = body["allowed_mentions"]
        if "flags" in body and body["flags"] is not None:
            keep = self.flags & (EPHEMERAL | LOADING) if editing else 0
            self.flags = keep | (int(body["flags"]) & SETTABLE_FLAGS & ~(EPHEMERAL if editing else 0))
        if editing:
            self.flags &= ~LOADING  # the first edit of a deferred response replaces "thinking…"
            self.edited_at = utcnow()
        else:
            self.tts = bool(body.get("tts") or False)
            self.message_reference = body.get("message_reference")
            self.nonce = body.get("nonce")
        self.history.append(Revision(self.edited_at or self.created_at, self.content, tuple(self.embeds)))
        self._resolve_mentions(world)

    def _resolve_mentions(self, world: World) -> None:
        """Who this message actually pings, after allowed_mentions (absent means Discord's default: all)."""
        allowed = self.allowed_mentions
        parse = set(allowed.get("parse") or []) if allowed is not None else {"users", "roles", "everyone"}
        users = [int(u) for u in _USER_MENTION.findall(self.content)]
        roles = [int(r) for r in _ROLE_MENTION.findall(self.content)]
        explicit_users = {int(u) for u in (allowed or {}).get("users") or []}
        explicit_roles = {int(r) for r in (allowed or {}).get("roles") or []}
        self.pinged_users = tuple(u for u in users if "users" in parse or u in explicit_users)
        self.pinged_roles = tuple(r for r in roles if "roles" in parse or r in explicit_roles)
        may_ping_all = self.guild_id is None or bool(
            world.channel_permissions(self.channel_id, self.author_id) & MENTION_EVERYONE)
        self.pinged_everyone = ("everyone" in parse and may_ping_all
                                and ("@everyone" in self.content or "@here" in self.content))

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    def payload(self, world: World, *, application_id: int) -> dict[str, Any]:
        """A complete message object, as discord.py's Message/WebhookMessage constructors read it."""
        payload: dict[str, Any] = {
            "id": str(self.id), "type": self.type, "channel_id": str(self.channel_id), "content": self.content,
            "author": world.user_payload(self.author_id), "timestamp": iso(self.created_at),
            "edited_timestamp": iso(self.edited_at), "tts": self.tts, "mention_everyone": self.pinged_everyone,
            "mentions": [world.user_payload(u) for u in dict.fromkeys(self.pinged_users)],
            "mention_roles": [str(r) for r in dict.fromkeys(self.pinged_roles)], "mention_channels": [],
            "attachments": self.attachments, "embeds": self.embeds, "components": self.components,
            "reactions": [], "pinned": False, "flags": self.flags, "position": 0,
        }
        if self.nonce is not None:
            payload["nonce"] = self.nonce
        if self.message_reference:
            payload["message_reference"] = {"type": 0, "channel_id": str(self.channel_id),
                                            **self.message_reference}
        if self.webhook_id is not None:
            payload["webhook_id"] = str(self.webhook_id)
            payload["application_id"] = str(application_id)
        if self.interaction_id is not None:
            payload["interaction_metadata"] = {
                "id": str(self.interaction_id), "type": 2, "user": world.user_payload(self.viewer_id or self.author_id),
                "authorizing_integration_owners": {},
            }
        return payload

    def view(self, world: World) -> "MessageView":
        author = world.users.get(self.author_id, {})
        return MessageView(
            id=self.id, channel_id=self.channel_id, author_id=self.author_id,
            author_name=author.get("username", ""), content=self.content,
            embeds=tuple(self.embeds), ephemeral=self.ephemeral, viewer_id=self.viewer_id if self.ephemeral else None,
            loading=self.loading, deleted=self.deleted_at is not None, created_at=self.created_at,
            edited_at=self.edited_at, history=tuple(self.history), flags=self.flags,
            allowed_mentions=self.allowed_mentions, interaction_id=self.interaction_id,
            pinged_users=self.pinged_users, pinged_roles=self.pinged_roles, pinged_everyone=self.pinged_everyone,
            components=tuple(self.components), attachments=tuple(self.attachments),
        )


@dataclass(frozen=True)
class MessageView:
    """A snapshot of one message as a user sees it. ``history`` holds every revision, first one included."""

    id: int
    channel_id: int
    author_id: int
    author_name: str
    content: str
    embeds: tuple[dict[str, Any], ...]
    ephemeral: bool
    viewer_id: int | None
    loading: bool  # the "Bot is thinking…" placeholder of a deferred response
    deleted: bool
    created_at: dt.datetime
    edited_at: dt.datetime | None
    history: tuple[Revision, ...]
    flags: int
    allowed_mentions: dict[str, Any] | None
    interaction_id: int | None
    pinged_users: tuple[int, ...]
    pinged_roles: tuple[int, ...]
    pinged_everyone: bool
    components: tuple[dict[str, Any], ...]
    attachments: tuple[dict[str, Any], ...]

    @property
    def edits(self) -> int:
        return len(self.history) - 1

    @property
    def display(self) -> str:
        """What the Discord client renders in place of the content."""
        return f"{self.author_name} is thinking…" if self.loading else self.content


def require_not_empty(message_fields: dict[str, Any]) -> None:
    if is_empty(message_fields):
        raise error(EMPTY_MESSAGE)
