"""Server admins' side of the DM service: per-server settings (/config) and this month's spending (/usage).

``DMService`` owns one ``ServerAdmin`` (``service.admin``) and asks it for a server's system prompt and a new
adventure's budget; the caps (monthly per server, daily per player) read ``settings()``. Every public call
that changes or shows a server's data checks Manage Server itself: Discord's ``default_permissions`` only
hides a command, and a server's owner can give it back to anyone.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bot.config import Config
from bot.dm.prompts import system_prompt
from bot.dm.settings import CachedGuild, GuildSettings, SettingError, SettingsCache, checked_changes
from bot.store.admin_queries import AdminStore, SpendLine
from bot.store.base import Player

NOT_ADMIN = "Only members with the Manage Server permission can {what}."
TOP = 10  # channels and players /usage lists


@dataclass(frozen=True, slots=True)
class MonthWindow:
    """A calendar month in UTC, from its first second to ``now`` (what /usage and the monthly cap count)."""

    start: float
    end: float  # the first second of the next month
    now: float
    days_in_month: int
    today: int  # 1-based day of the month

    @classmethod
    def of(cls, now: float) -> MonthWindow:
        moment = datetime.fromtimestamp(now, timezone.utc)
        first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        days = calendar.monthrange(moment.year, moment.month)[1]
        nxt = first.replace(year=first.year + (first.month == 12), month=first.month % 12 + 1)
        return cls(first.timestamp(), nxt.timestamp(), now, days, moment.day)

    @property
    def label(self) -> str:
        return datetime.fromtimestamp(self.start, timezone.utc).strftime("%B %Y")


@dataclass(frozen=True, slots=True)
class ServerUsage:
    """/usage: the server's month so far. ``daily[i]`` is day i+1's tokens, one entry per day up to today."""

    month: MonthWindow
    total: SpendLine
    by_channel: list[SpendLine]
    by_player: list[SpendLine]
    daily: list[int]
    settings: GuildSettings


def _cap(tokens: int) -> str:
    return "no cap" if tokens == 0 else f"{tokens:,} tokens"


class ServerAdmin:
    def __init__(self, config: Config, store: AdminStore, *, tools: bool, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.tools = tools
        self.clock = clock
        self.defaults = GuildSettings.defaults(config)
        self.default_system = system_prompt(config.dm, tools=tools)
        self._cache = SettingsCache()

    # -- what the DM service reads --------------------------------------------------------------------------

    async def _guild(self, guild_id: str | None) -> CachedGuild:
        if guild_id is None:  # the terminal face, or a DM: config.toml as is
            return CachedGuild({}, self.defaults, self.default_system)
        cached = self._cache.get(guild_id)
        if cached is None:
            overrides = await self.store.guild_settings(guild_id)
            settings = self.defaults.with_overrides(overrides)
            system = self.default_system
            if "persona" in overrides or "content_rating" in overrides:
                system = system_prompt(self.config.dm, tools=self.tools, persona=settings.persona,
                                       content_rating=settings.content_rating)
            cached = CachedGuild(overrides, settings, system)
            self._cache.put(guild_id, cached)
        return cached

    async def settings(self, guild_id: str | None) -> GuildSettings:
        """A server's effective settings: what it set with /config, else config.toml's defaults."""
        return (await self._guild(guild_id)).settings

    async def system_prompt(self, guild_id: str | None) -> str:
        return (await self._guild(guild_id)).system

    async def adventure_limit(self, guild_id: str | None) -> int | None:
        """The token budget a new adventure gets when the server set one (None: the configured default)."""
        return (await self._guild(guild_id)).overrides.get("adventure_budget")

    # -- /config ----------------------------------------------------------------------------------------------

    async def configure(self, guild_id: str | None, by: Player, changes: dict[str, Any], *,
                        can_manage_server: bool) -> tuple[bool, str]:
        """Show the server's settings (no changes) or set the given ones; Manage Server only."""
        if guild_id is None:
            return False, "Settings belong to a server; use /config in one."
        if not can_manage_server:
            return False, NOT_ADMIN.format(what="see or change this server's settings")
        try:
            checked = checked_changes(changes)
        except SettingError as error:
            return False, str(error)
        if checked:
            await self.store.set_guild_settings(guild_id, checked, by.id)
            self._cache.drop(guild_id)
        cached = await self._guild(guild_id)
        head = ("**Saved.** " + ", ".join(f"`{name}`" for name in checked) + " changed. New adventures and the "
                "next turns use them.\n\n") if checked else ""
        return True, head + self.describe(cached)

    def describe(self, cached: CachedGuild) -> str:
        s, own = cached.settings, cached.overrides

        def mark(name: str) -> str:
            return "set here" if name in own else "default"

        persona = s.persona if len(s.persona) <= 300 else s.persona[:299] + "…"
        lines = [
            "**This server's DM settings**",
            f"• `persona` ({mark('persona')}): {persona}",
            f"• `content_rating` ({mark('content_rating')}): {s.content_rating}",
            f"• `adventure_budget` ({mark('adventure_budget')}): {s.adventure_budget:,} tokens per new adventure",
            f"• `monthly_budget` ({mark('monthly_budget')}): {_cap(s.monthly_budget)} per month (UTC) for the "
            "whole server",
            f"• `player_daily_budget` ({mark('player_daily_budget')}): {_cap(s.player_daily_budget)} per player "
            "per day (UTC)",
            "Change one with `/config <setting>:<value>`; 0 means no cap.",
        ]
        return "\n".join(lines)

    # -- /usage -----------------------------------------------------------------------------------------------

    async def usage(self, guild_id: str | None, *, can_manage_server: bool) -> ServerUsage | str:
        """This month's tokens and estimated cost for the server, or a refusal to show."""
        if guild_id is None:
            return "Usage is counted per server; use /usage in one."
        if not can_manage_server:
            return NOT_ADMIN.format(what="see this server's usage")
        month = MonthWindow.of(self.clock())
        args = (guild_id, month.start, month.end)
        total = await self.store.guild_usage_total(*args)
        by_channel = await self.store.guild_usage_by_channel(*args, limit=TOP)
        by_player = await self.store.guild_usage_by_player(*args, limit=TOP)
        per_day = await self.store.guild_usage_daily(*args)
        daily = [per_day.get(day, 0) for day in range(month.today)]
        return ServerUsage(month, total, by_channel, by_player, daily, await self.settings(guild_id))


