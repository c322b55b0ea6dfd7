"""The simulated world: guild specs, users, permissions and the JSON payloads discord.py parses.

Specs are deliberately small (a guild is ids, channels, roles, members and overwrites); everything
else Discord would send is filled in here so discord.py's constructors find every key they read.
"""

from __future__ import annotations

import copy
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

DISCORD_EPOCH_MS = 1420070400000

# Permission bits (https://discord.com/developers/docs/topics/permissions), only those the stand-in reasons about.
CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_EXTERNAL_EMOJIS = 1 << 18
CHANGE_NICKNAME = 1 << 26
USE_APPLICATION_COMMANDS = 1 << 31
CREATE_PUBLIC_THREADS = 1 << 35
CREATE_PRIVATE_THREADS = 1 << 36
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 53) - 1

DEFAULT_EVERYONE_PERMISSIONS = (
    CREATE_INSTANT_INVITE | ADD_REACTIONS | VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES
    | READ_MESSAGE_HISTORY | USE_EXTERNAL_EMOJIS | CHANGE_NICKNAME | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS | SEND_MESSAGES_IN_THREADS
)
# What the project's least-privilege invite link grants the bot's managed role.
DEFAULT_BOT_PERMISSIONS = (VIEW_CHANNEL | SEND_MESSAGES | SEND_MESSAGES_IN_THREADS | CREATE_PUBLIC_THREADS | EMBED_LINKS
                           | READ_MESSAGE_HISTORY)

TEXT, DM, PUBLIC_THREAD, PRIVATE_THREAD = 0, 1, 11, 12
_CHANNEL_TYPES = {"text": TEXT, "dm": DM, "thread": PUBLIC_THREAD, "public_thread": PUBLIC_THREAD,
                  "private_thread": PRIVATE_THREAD}
THREAD_TYPES = (PUBLIC_THREAD, PRIVATE_THREAD)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(when: dt.datetime | None) -> str | None:
    return None if when is None else when.isoformat()


class Snowflakes:
    """Real, time-ordered snowflakes: discord.py derives creation times from ids (e.g. for delete buckets)."""

    def __init__(self) -> None:
        self._last_ms = 0
        self._increment = 0

    def next(self) -> int:
        ms = max(int(time.time() * 1000) - DISCORD_EPOCH_MS, self._last_ms)
        if ms == self._last_ms:
            self._increment += 1
            if self._increment > 0xFFF:
                ms, self._increment = ms + 1, 0
        else:
            self._increment = 0
        self._last_ms = ms
        return (ms << 22) | (1 << 17) | self._increment


@dataclass
class Overwrite:
    id: int
    type: str = "role"  # "role" or "member", as in Discord's docs
    allow: int = 0
    deny: int = 0


@dataclass
class ChannelSpec:
    id: int
    name: str = "general"
    type: str | int = "text"  # "text", "thread" (public), "private_thread"
    parent_id: int | None = None  # a thread's text channel
    overwrites: list[Overwrite] = field(default_factory=list)
    position: int = 0
    topic: str | None = None

    @property
    def type_value(self) -> int:
        return self.type if isinstance(self.type, int) else _CHANNEL_TYPES[self.type]


@dataclass
class RoleSpec:
    id: int
    name: str
    permissions: int = 0
    position: int = 1
    managed: bool = False


@dataclass
class MemberSpec:
    id: int
    name: str = ""
    roles: list[int] = field(default_factory=list)
    bot: bool = False
    nick: str | None = None


@dataclass
class GuildSpec:
    id: int
    name: str = "Test Guild"
    channels: list[ChannelSpec] = field(default_factory=list)
    roles: list[RoleSpec] = field(default_factory=list)
    members: list[MemberSpec] = field(default_factory=list)
    owner_id: int | None = None
    everyone_permissions: int = DEFAULT_EVERYONE_PERMISSIONS
    bot_permissions: int = DEFAULT_BOT_PERMISSIONS  # granted through the bot's managed role
    bot_role_id: int | None = None


def _coerce(cls: type, value: Any) -> Any:
    return value if isinstance(value, cls) else cls(**value)


def coerce_guild(spec: GuildSpec | dict[str, Any]) -> GuildSpec:
    """Accept plain dicts (handy in tests and config files) as well as the dataclasses."""
    guild = copy.deepcopy(_coerce(GuildSpec, spec))  # the world adds roles/members: never touch the caller's
    guild.roles = [_coerce(RoleSpec, r) for r in guild.roles]
    guild.members = [_coerce(MemberSpec, m) for m in guild.members]
    guild.channels = [_coerce(ChannelSpec, c) for c in guild.channels]
    for channel in guild.channels:
        channel.overwrites = [_coerce(Overwrite, o) for o in channel.overwrites]
    return guild


class World:
    """Users, guilds, channels and the permission arithmetic Discord does for them."""

    def __init__(self, *, bot_user_id: int, bot_name: str, guilds: Iterable[GuildSpec | dict[str, Any]],
                 ids: Snowflakes) -> None:
        self.ids = ids
        self.bot_user_id = bot_user_id
        self.users: dict[int, dict[str, Any]] = {}
        self.guilds: dict[int, GuildSpec] = {}
        self.channels: dict[int, ChannelSpec] = {}
        self.channel_guild: dict[int, int | None] = {}
        self.dm_recipient: dict[int, int] = {}
        self.joined_at = utcnow()
        self.add_user(bot_user_id, bot_name, bot=True)
        for raw in guilds:
            self.add_guild(coerce_guild(raw))

    # -- building ---------------------------------------------------------------------------------
    def add_user(self, user_id: int, name: str = "", *, bot: bool = False) -> dict[str, Any]:
        if user_id not in self.users:
            name = name or f"user{user_id % 10000}"
            self.users[user_id] = {
                "id": str(user_id), "username": name, "global_name": None if bot else name.title(),
                "discriminator": "0", "avatar": None, "bot": bot, "system": False, "public_flags": 0,
                "flags": 0, "banner": None, "accent_color": None, "avatar_decoration_data": None,
            }
        return self.users[user_id]

    def add_guild(self, guild: GuildSpec) -> None:
        if guild.bot_role_id is None:
            guild.bot_role_id = self.ids.next()
        if not any(r.id == guild.id for r in guild.roles):
            guild.roles.insert(0, RoleSpec(guild.id, "@everyone", guild.everyone_permissions, position=0))
        guild.roles.append(RoleSpec(guild.bot_role_id, "Dungeon Master", guild.bot_permissions, managed=True))
        for member in guild.members:
            self.add_user(member.id, member.name, bot=member.bot)
        if not any(m.id == self.bot_user_id for m in guild.members):
            guild.members.append(MemberSpec(self.bot_user_id, self.users[self.bot_user_id]["username"],
                                            [guild.bot_role_id], bot=True))
        if guild.owner_id is None:
            humans = [m.id for m in guild.members if not m.bot]
            guild.owner_id = humans[0] if humans else self.ids.next()
        self.guilds[guild.id] = guild
        for channel in guild.channels:
            self.channels[channel.id] = channel
            self.channel_guild[channel.id] = guild.id

    def ensure_member(self, guild_id: int, user_id: int) -> MemberSpec:
        """Invoking users must be members on Discord; tests may name any id, so make one up."""
        guild = self.guilds[guild_id]
        for member in guild.members:
            if member.id == user_id:
                return member
        member = MemberSpec(user_id, self.add_user(user_id)["username"])
        guild.members.append(member)
        return member

    def ensure_dm(self, user_id: int) -> int:
        for channel_id, recipient in self.dm_recipient.items():
            if recipient == user_id:
                return channel_id
        self.add_user(user_id)
        channel = ChannelSpec(self.ids.next(), name="", type="dm")
        self.channels[channel.id] = channel
        self.channel_guild[channel.id] = None
        self.dm_recipient[channel.id] = user_id
        return channel.id

    # -- permissions (Discord's documented algorithm) ----------------------------------------------
    def base_permissions(self, guild_id: int, user_id: int) -> int:
        guild = self.guilds[guild_id]
        if user_id == guild.owner_id:
            return ALL_PERMISSIONS
        member = self.ensure_member(guild_id, user_id)
        roles = {r.id: r for r in guild.roles}
        perms = roles[guild.id].permissions
        for role_id in member.roles:
            if role_id in roles:
                perms |= roles[role_id].permissions
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms

    def channel_permissions(self, channel_id: int, user_id: int) -> int:
        guild_id = self.channel_guild.get(channel_id)
        if guild_id is None:  # a DM: everything that makes sense in a DM is allowed
            return DEFAULT_EVERYONE_PERMISSIONS
        perms = self.base_permissions(guild_id, user_id)
        if perms & ADMINISTRATOR:
            return ALL_PERMISSIONS
        channel = self.channels[channel_id]
        source = self.channels.get(channel.parent_id, channel) if channel.type_value in THREAD_TYPES else channel
        member = self.ensure_member(guild_id, user_id)
        by_key = {(o.type, o.id): o for o in source.overwrites}
        everyone = by_key.get(("role", guild_id))
        if everyone:
            perms = (perms & ~everyone.deny) | everyone.allow
        allow = deny = 0
        for role_id in member.roles:
            if ow := by_key.get(("role", role_id)):
                allow, deny = allow | ow.allow, deny | ow.deny
        perms = (perms & ~deny) | allow
        if ow := by_key.get(("member", user_id)):
            perms = (perms & ~ow.deny) | ow.allow
        return perms if perms & VIEW_CHANNEL else 0

    # -- payloads ------------------------------------------------------------------------------------
    def user_payload(self, user_id: int) -> dict[str, Any]:
        return dict(self.add_user(user_id))

    def member_payload(self, guild_id: int, user_id: int, *, with_user: bool = True,
                       permissions: int | None = None) -> dict[str, Any]:
        member = self.ensure_member(guild_id, user_id)
        payload: dict[str, Any] = {
            "roles": [str(r) for r in member.roles], "nick": member.nick, "avatar": None, "banner": None,
            "joined_at": iso(self.joined_at), "premium_since": None, "deaf": False, "mute": False, "flags": 0,
            "pending": False, "communication_disabled_until": None,
        }
        if with_user:
            payload["user"] = self.user_payload(user_id)
        if permissions is not None:
            payload["permissions"] = str(permissions)
        return payload

    def role_payload(self, role: RoleSpec) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": str(role.id), "name": role.name, "color": 0, "colors": {"primary_color": 0},
            "hoist": False, "icon": None, "unicode_emoji": None, "position": role.position,
            "permissions": str(role.permissions), "managed": role.managed, "mentionable": False, "flags": 0,
        }
        if role.managed:
            payload["tags"] = {"bot_id": str(self.bot_user_id)}
        return payload

    def channel_payload(self, channel_id: int) -> dict[str, Any]:
        channel = self.channels[channel_id]
        kind = channel.type_value
        if kind == DM:
            return {"id": str(channel.id), "type": DM, "last_message_id": None, "flags": 0,
                    "recipients": [self.user_payload(self.dm_recipient[channel.id])]}
        guild_id = self.channel_guild[channel_id]
        payload: dict[str, Any] = {
            "id": str(channel.id), "type": kind, "guild_id": str(guild_id), "name": channel.name,
            "position": channel.position, "flags": 0, "last_message_id": None, "rate_limit_per_user": 0,
            "nsfw": False, "topic": channel.topic, "parent_id": None if channel.parent_id is None else str(channel.parent_id),
        }
        if kind in THREAD_TYPES:
            payload.update({
                "owner_id": str(self.guilds[guild_id].owner_id), "message_count": 0, "member_count": 1,
                "total_message_sent": 0, "thread_metadata": {
                    "archived": False, "auto_archive_duration": 1440, "locked": False,
                    "archive_timestamp": iso(self.joined_at), "create_timestamp": iso(self.joined_at)},
            })
        else:
            payload["permission_overwrites"] = [
                {"id": str(o.id), "type": 0 if o.type == "role" else 1, "allow": str(o.allow), "deny": str(o.deny)}
                for o in channel.overwrites
            ]
        return payload

    def guild_payload(self, guild_id: int) -> dict[str, Any]:
        """The GUILD_CREATE body: everything Guild._from_data reads, with channels and threads split."""
        guild = self.guilds[guild_id]
        channels = [c for c in guild.channels if c.type_value not in THREAD_TYPES]
        threads = [c for c in guild.channels if c.type_value in THREAD_TYPES]
        return {
            "id": str(guild.id), "name": guild.name, "icon": None, "splash": None, "discovery_splash": None,
            "banner": None, "description": None, "owner_id": str(guild.owner_id), "afk_channel_id": None,
            "afk_timeout": 300, "verification_level": 0, "default_message_notifications": 1,
            "explicit_content_filter": 0, "features": [], "mfa_level": 0, "system_channel_id": None,
            "system_channel_flags": 0, "rules_channel_id": None, "public_updates_channel_id": None,
            "vanity_url_code": None, "premium_tier": 0, "premium_subscription_count": 0, "preferred_locale": "en-US",
            "nsfw_level": 0, "premium_progress_bar_enabled": False, "max_members": 500000,
            "joined_at": iso(self.joined_at), "large": False, "unavailable": False, "lazy": True,
            "member_count": len(guild.members), "application_id": None,
            "roles": [self.role_payload(r) for r in guild.roles],
            "members": [self.member_payload(guild.id, m.id) for m in guild.members],
            "channels": [self.channel_payload(c.id) for c in channels],
            "threads": [self.channel_payload(c.id) for c in threads],
            "emojis": [], "stickers": [], "voice_states": [], "presences": [], "stage_instances": [],
            "guild_scheduled_events": [], "soundboard_sounds": [],
        }
