"""DiscordStandIn: the public face of the local Discord stand-in (REST API v10 + gateway on one port)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

from aiohttp import web

from .gateway import Gateway
from .interactions import InteractionHandle
from .messages import MessageView
from .model import TEXT, GuildSpec
from .ratelimit import Limits, RateLimiter
from .rest import RequestRecord, RestApi
from .routes import build_routes
from .state import StandInState
from .validation import SpecValidator

_DEFAULT: Any = object()  # "not given", as distinct from an explicit None (which means a DM for guild_id)


class DiscordStandIn:
    def __init__(self, *, application_id: int, bot_user_id: int, bot_token: str,
                 guilds: Iterable[GuildSpec | dict[str, Any]] = (), token_lifetime: float = 900.0,
                 validate: bool = True, ratelimit_headers: bool = True, limits: Limits | None = None,
                 ack_deadline: float = 3.0, reject_invalid: bool = True, spec_path: str | None = None,
                 bot_name: str = "Dungeon Master", app_name: str = "Dungeon Master", owner_id: int | None = None,
                 application_flags: int = 0, heartbeat_interval: float = 41.25, host: str = "127.0.0.1",
                 port: int = 0, clock: Callable[[], float] = time.monotonic,
                 recommended_shards: int | None = None, interaction_delivery: str = "newest") -> None:
        self.host, self._port = host, port
        self.bot_token = bot_token
        self.limits = limits or Limits()
        self._state = StandInState(application_id=application_id, bot_user_id=bot_user_id, bot_name=bot_name,
                                   guilds=list(guilds), clock=clock, token_lifetime=token_lifetime,
                                   ack_deadline=ack_deadline)
        world = self._state.world
        owner_id = owner_id or next((g.owner_id for g in world.guilds.values()), None) or self._state.ids.next()
        world.add_user(owner_id, "owner")
        self._validator = SpecValidator(Path(spec_path) if spec_path else None, enabled=validate)
        self._gateway = Gateway(self._state, bot_token=bot_token, url=lambda: self.gateway_url,
                                heartbeat_interval_ms=int(heartbeat_interval * 1000),
                                application_flags=application_flags, delivery=interaction_delivery)
        self._state.emit = self._gateway.broadcast
        routes = build_routes(self._state, app_name=app_name, owner_id=owner_id,
                              application_flags=application_flags, gateway_url=lambda: self.gateway_url,
                              shards=lambda: recommended_shards or self.recommended_shards)
        self._rest = RestApi(routes=routes, bot_token=bot_token, limiter=RateLimiter(self.limits, clock=clock),
                             validator=self._validator, ratelimit_headers=ratelimit_headers,
                             reject_invalid=reject_invalid, on_change=self._state.notify)
        self._runner: web.AppRunner | None = None

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> "DiscordStandIn":
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway-ws", self._gateway.handle)
        app.router.add_route("*", "/{tail:.*}", self._rest.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._gateway.close()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "DiscordStandIn":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def api_base_url(self) -> str:
        """Set discord.http.Route.BASE to this."""
        return f"http://{self.host}:{self._port}/api/v10"

    @property
    def gateway_url(self) -> str:
        """Set DiscordWebSocket.DEFAULT_GATEWAY to yarl.URL(this); also what /gateway(/bot) answer."""
        return f"ws://{self.host}:{self._port}/gateway-ws"

    # -- waiting ----------------------------------------------------------------------------------------
    async def wait_ready(self, timeout: float = 10.0) -> None:
        """A client identified and was sent READY and every GUILD_CREATE."""
        await self.wait_for(lambda: self._gateway.ready.is_set(), timeout)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Re-check ``predicate`` at every state change (requests, gateway events); return its truthy value."""
        return await self._state.wait_for(predicate, timeout)

    async def wait_for_commands(self, *names: str, guild_id: int | None = None, timeout: float = 10.0) -> None:
        """Until the bot has registered these commands (in that guild or globally)."""
        await self.wait_for(lambda: all(self._state.commands.find(n, guild_id) for n in names), timeout)

    # -- commands ----------------------------------------------------------------------------------------
    def commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        return self._state.commands.list(guild_id)

    @property
    def command_puts(self) -> Counter[int | None]:
        """Bulk overwrites per scope (None = global); a Counter, so an untouched scope reads 0."""
        return self._state.commands.puts

    @property
    def command_creates(self) -> Counter[int | None]:
        """Commands created (new name/type) per scope: Discord allows 200 a day per guild."""
        return self._state.commands.creates

    # -- interactions -------------------------------------------------------------------------------------
    def _defaults(self, guild_id: Any, channel_id: int | None, user_id: int | None) -> tuple[int | None, int, int]:
        world = self._state.world
        if guild_id is _DEFAULT:  # the channel's guild, else the first one
            guild_id = world.channel_guild.get(channel_id) if channel_id in world.channel_guild \
                else next(iter(world.guilds), None)
        if user_id is None:
            humans = [m.id for m in world.guilds[guild_id].members if not m.bot] if guild_id else []
            user_id = humans[0] if humans else 100_000_000_000_000_001
        if channel_id is None:
            if guild_id is None:
                channel_id = world.ensure_dm(user_id)
            else:
                channel_id = next(c.id for c in world.guilds[guild_id].channels if c.type_value == TEXT)
        elif guild_id is not None and world.channel_guild.get(channel_id) != guild_id:
            raise ValueError(f"channel {channel_id} is not in guild {guild_id}")
        return guild_id, channel_id, user_id

    async def invoke(self, name: str, options: dict[str, Any] | None = None, *, guild_id: Any = _DEFAULT,
                     channel_id: int | None = None, user_id: int | None = None,
                     member_permissions: int | None = None, locale: str = "en-US") -> InteractionHandle:
        """Use slash command ``name`` ("group sub" for subcommands) as a user would; dispatch INTERACTION_CREATE.

        Defaults: the first guild, its first text channel, its first human member. ``guild_id=None`` is a DM.
        Raises LookupError if the command is not registered, ValueError for options the Discord client would
        refuse, PermissionError if the client would hide the command from this member.
        """
        guild_id, channel_id, user_id = self._defaults(guild_id, channel_id, user_id)
        handle = self._state.new_command(name, options or {}, guild_id=guild_id, channel_id=channel_id,
                                         user_id=user_id, member_permissions=member_permissions, locale=locale)
        self._gateway.dispatch_one("INTERACTION_CREATE", handle.payload, guild_id)
        self._state.notify()
        return handle

    async def click(self, message_id: int, custom_id: str, *, user_id: int | None = None,
                    component_type: int = 2, values: list[str] | None = None) -> InteractionHandle:
        """Press a button (or pick from a select menu) on a message the bot sent."""
        message = self._state.messages[message_id]
        _, _, user_id = self._defaults(message.guild_id, message.channel_id, user_id)
        handle = self._state.new_component(message_id, custom_id, user_id=user_id, component_type=component_type,
                                           values=values, locale="en-US")
        self._gateway.dispatch_one("INTERACTION_CREATE", handle.payload, message.guild_id)
        self._state.notify()
        return handle

    @property
    def interactions(self) -> list[InteractionHandle]:
        return list(self._state.interactions.values())

    def expire_interaction(self, interaction: InteractionHandle) -> None:
        """Its token stops working now: callbacks answer 10062, webhook calls 401/50027."""
        self._state.expire(interaction)

    # -- what users see -----------------------------------------------------------------------------------
    def messages(self, channel_id: int, *, viewer_id: int | None = None,
                 include_deleted: bool = False) -> list[MessageView]:
        """The channel as ``viewer_id`` sees it, oldest first; others' ephemeral messages are left out."""
        return self._state.views(channel_id, viewer_id=viewer_id, include_deleted=include_deleted)

    def message(self, message_id: int) -> MessageView:
        return self._state.messages[message_id].view(self._state.world)

    # -- request log, validation, rate limits, faults -----------------------------------------------------
    @property
    def requests(self) -> list[RequestRecord]:
        return self._rest.requests

    @property
    def unknown_routes(self) -> list[RequestRecord]:
        return [r for r in self._rest.requests if r.route is None and not r.injected]

    @property
    def validation_errors(self) -> list[tuple[str, str]]:
        return self._rest.validation_errors

    @property
    def validation_skipped_reason(self) -> str | None:
        return self._validator.skipped_reason

    @property
    def ratelimited(self) -> Counter[str]:
        """429s served, per "METHOD /route/{template}"."""
        return self._rest.ratelimited

    @property
    def invalid_requests(self) -> int:
        return self._rest.invalid_requests

    @property
    def server_errors(self) -> list[str]:
        """Tracebacks of stand-in bugs (answered 500); should stay empty."""
        return self._rest.server_errors

    def fail_next(self, method: str, path_regex: str, status: int, body: Any = None, times: int = 1,
                  retry_after: float | None = None) -> None:
        """Answer the next ``times`` requests matching (method or "*", regex searched in the path after
        /api/v10) with ``status``; 429s get Discord's body and headers with ``retry_after``."""
        self._rest.fail_next(method, path_regex, status, body, times, retry_after)

    # -- gateway ---------------------------------------------------------------------------------------------
    async def reconnect(self, resume: bool = True, *, wait: bool = True, timeout: float = 10.0) -> None:
        """Send op 7 RECONNECT. With ``resume=False`` the following RESUME is refused (op 9), so the client
        identifies afresh. Dispatches made meanwhile are replayed on RESUME with their sequence numbers."""
        resumes, identifies = self._gateway.resumes, self._gateway.identifies
        if not await self._gateway.reconnect(resume=resume):
            raise RuntimeError("stand-in: no connected gateway session to reconnect")
        if wait:
            if resume:
                await self.wait_for(lambda: self._gateway.resumes > resumes, timeout)
            else:
                await self.wait_for(lambda: self._gateway.identifies > identifies, timeout)

    @property
    def recommended_shards(self) -> int:
        """What GET /gateway/bot answers when not set: Discord's rule of thumb, one shard per 1,000 guilds."""
        return max(1, -(-len(self._state.world.guilds) // 1000))

    def shard_of(self, guild_id: int, shard_count: int) -> int:
        """Discord's formula: the shard whose connection receives a guild's events."""
        return (guild_id >> 22) % shard_count

    @property
    def interaction_delivery(self) -> str:
        """Which gateway session receives an interaction when several hold its guild's shard (as during a
        rolling restart): "newest" (the last to identify) or "round_robin" (each in turn, so two bot processes
        holding one shard both receive a channel's commands)."""
        return self._gateway.delivery

    @interaction_delivery.setter
    def interaction_delivery(self, value: str) -> None:
        if value not in ("newest", "round_robin"):
            raise ValueError("interaction_delivery is 'newest' or 'round_robin'")
        self._gateway.delivery = value

    def gateway_shards(self) -> list[tuple[int, int] | None]:
        """The shard ([id, count], None when unsharded) of each attached gateway session, oldest first."""
        return [s.shard for s in self._gateway.sessions.values() if s.conn is not None]

    def delivered_to(self, interaction: InteractionHandle) -> str | None:
        """The id of the gateway session the interaction was dispatched to."""
        return self._gateway.delivered.get(interaction.id)

    @property
    def identifies(self) -> int:
        return self._gateway.identifies

    @property
    def resumes(self) -> int:
        return self._gateway.resumes

    @property
    def replayed(self) -> int:
        """Dispatches re-sent on RESUME because the client had not seen them."""
        return self._gateway.replayed

    @property
    def heartbeats(self) -> int:
        return self._gateway.heartbeats

    @property
    def gateway_close_codes(self) -> list[int | None]:
        return self._gateway.close_codes

    @property
    def connected(self) -> bool:
        return any(s.conn is not None for s in self._gateway.sessions.values())
