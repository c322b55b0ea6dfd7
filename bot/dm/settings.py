"""Per-server settings (/config): what an admin may change, how it is checked, and the effective values.

A server's stored override wins; a setting it never set falls back to config.toml. The persona is admin text that
the model reads inside the system prompt, so it is folded to one line and stripped of markup that could pose as
an engine line ("[dice] …"), a heading or a new instruction block.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, fields
from typing import Any

from bot.config import Config

MAX_PERSONA_CHARS = 500
CONTENT_RATINGS = ("family", "teen", "mature")
MIN_ADVENTURE_BUDGET, MAX_TOKENS = 1_000, 100_000_000  # as /budget
SETTING_NAMES = ("persona", "content_rating", "adventure_budget", "monthly_budget", "player_daily_budget")


class SettingError(ValueError):
    """A short, user-facing reason a value was refused."""


@dataclass(frozen=True, slots=True)
class GuildSettings:
    """One server's effective settings. 0 for a monthly or daily budget means no cap."""

    persona: str
    content_rating: str
    adventure_budget: int
    monthly_budget: int
    player_daily_budget: int

    @classmethod
    def defaults(cls, config: Config) -> GuildSettings:
        return cls(
            persona=config.dm.persona,
            content_rating=config.dm.content_rating,
            adventure_budget=config.limits.tokens_per_session,
            monthly_budget=config.limits.monthly_tokens_per_server,
            player_daily_budget=config.limits.daily_tokens_per_player,
        )

    def with_overrides(self, overrides: dict[str, Any]) -> GuildSettings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({k: v for k, v in overrides.items() if k in values and v is not None})
        return GuildSettings(**values)


def clean_persona(text: str) -> str:
    """One line of plain words: newlines folded, markup and control characters dropped, at most 500 chars.

    Why: the persona completes "You are …" in the system prompt. A newline could start a line that poses as an
    engine line or a new rule, brackets could fake a ``[dice]`` line, and ``<|…|>`` or ``</…>`` could pose as a
    chat template's markers."""
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = re.sub(r"<\|?/?[^>]{0,40}\|?>", " ", text)  # <|im_start|>, </system>, <rules>
    text = re.sub(r"[\[\]{}<>`#*_|~\\]", " ", text)
    text = " ".join(text.split()).strip(" -:;,.")
    return text[:MAX_PERSONA_CHARS].rstrip()


def checked_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Validate /config's options (``None`` = not given). Raises ``SettingError`` naming the option."""
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if value is None:
            continue
        if name not in SETTING_NAMES:
            raise SettingError(f"There is no setting named {name!r}.")
        if name == "persona":
            if len(value) > MAX_PERSONA_CHARS:
                raise SettingError(f"The persona is too long ({len(value):,} characters; the limit is "
                                   f"{MAX_PERSONA_CHARS}).")
            value = clean_persona(value)
            if not value:
                raise SettingError("The persona is empty once markup is removed; describe the DM in plain words.")
        elif name == "content_rating":
            if value not in CONTENT_RATINGS:
                raise SettingError(f"The content rating must be one of: {', '.join(CONTENT_RATINGS)}.")
        elif name == "adventure_budget":
            if isinstance(value, bool) or not MIN_ADVENTURE_BUDGET <= value <= MAX_TOKENS:
                raise SettingError(f"adventure_budget must be between {MIN_ADVENTURE_BUDGET:,} and "
                                   f"{MAX_TOKENS:,} tokens.")
        elif isinstance(value, bool) or not 0 <= value <= MAX_TOKENS * 100:
            raise SettingError(f"{name} must be between 0 (no cap) and {MAX_TOKENS * 100:,} tokens.")
        out[name] = value
    return out


@dataclass(frozen=True, slots=True)
class CachedGuild:
    overrides: dict[str, Any]  # what the server set itself
    settings: GuildSettings  # overrides, else config.toml
    system: str  # the DM's system prompt in this server


class SettingsCache:
    """Effective settings per server, cached for ``ttl`` seconds (a change made by this process clears its entry
    at once; the TTL bounds how long another process sharing the database may show the old values)."""

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, CachedGuild]] = {}

    def get(self, guild_id: str) -> CachedGuild | None:
        entry = self._entries.get(guild_id)
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            return None
        return entry[1]

    def put(self, guild_id: str, cached: CachedGuild) -> None:
        if len(self._entries) > 10_000:  # a bot in very many servers: start over rather than grow without end
            self._entries.clear()
        self._entries[guild_id] = (time.monotonic(), cached)

    def drop(self, guild_id: str) -> None:
        self._entries.pop(guild_id, None)
