"""The REST routes the stand-in serves, each a thin adapter from a request to one StandInState method."""

from __future__ import annotations

from typing import Any, Callable

from .errors import MISSING_ACCESS, error
from .rest import Ctx, Route
from .state import StandInState


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def build_routes(state: StandInState, *, app_name: str, owner_id: int, application_flags: int,
                 gateway_url: Callable[[], str], shards: Callable[[], int] = lambda: 1) -> list[Route]:
    world = state.world
    app_id = state.application_id

    def bot_user() -> dict[str, Any]:
        return dict(world.user_payload(state.bot_user_id), verified=True, mfa_enabled=False, email=None,
                    locale="en-US")

    async def users_me(ctx: Ctx) -> tuple[int, Any]:
        return 200, bot_user()

    async def gateway(ctx: Ctx) -> tuple[int, Any]:
        return 200, {"url": gateway_url()}

    async def gateway_bot(ctx: Ctx) -> tuple[int, Any]:
        return 200, {"url": gateway_url(), "shards": shards(), "session_start_limit": {
            "total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}}

    async def application(ctx: Ctx) -> tuple[int, Any]:
        return 200, {
            "id": str(app_id), "name": app_name, "icon": None, "description": "", "summary": "", "type": None,
            "bot_public": True, "bot_require_code_grant": False, "verify_key": "0" * 64,
            "owner": world.user_payload(owner_id), "team": None, "flags": application_flags,
            "bot": world.user_payload(state.bot_user_id), "interactions_endpoint_url": None,
            "redirect_uris": [], "tags": [], "approximate_guild_count": len(world.guilds),
            "integration_types_config": {"0": {}}, "install_params": {"scopes": ["bot", "applications.commands"],
                                                                      "permissions": "0"},
        }

    def scope(ctx: Ctx) -> int | None:
        if ctx.id("application_id") != app_id:
            raise error(MISSING_ACCESS)
        if "guild_id" not in ctx.params:
            return None
        guild_id = ctx.id("guild_id")
        if guild_id not in world.guilds:
            raise error(MISSING_ACCESS)  # what Discord answers when the app is not in that guild
        return guild_id

    async def get_commands(ctx: Ctx) -> tuple[int, Any]:
        return 200, state.commands.list(scope(ctx))

    async def put_commands(ctx: Ctx) -> tuple[int, Any]:
        where = scope(ctx)
        stored = state.commands.overwrite(where, ctx.body)
        state.notify()
        return 200, stored

    async def callback(ctx: Ctx) -> tuple[int, Any]:
        response = state.callback(ctx.id("interaction_id"), ctx.params["interaction_token"], ctx.obj())
        return (200, response) if _truthy(ctx.query.get("with_response")) else (204, None)

    async def followup(ctx: Ctx) -> tuple[int, Any]:
        message = state.followup(ctx.id("webhook_id"), ctx.params["webhook_token"], ctx.obj(), ctx.files)
        return (200, state.payload(message)) if _truthy(ctx.query.get("wait")) else (204, None)

    def webhook_message_id(ctx: Ctx) -> str:
        return ctx.params.get("message_id", "@original")

    async def get_webhook_message(ctx: Ctx) -> tuple[int, Any]:
        message = state.get_webhook_message(ctx.id("webhook_id"), ctx.params["webhook_token"], webhook_message_id(ctx))
        return 200, state.payload(message)

    async def edit_webhook_message(ctx: Ctx) -> tuple[int, Any]:
        message = state.edit_webhook_message(ctx.id("webhook_id"), ctx.params["webhook_token"],
                                             webhook_message_id(ctx), ctx.obj(), ctx.files)
        return 200, state.payload(message)

    async def delete_webhook_message(ctx: Ctx) -> tuple[int, Any]:
        state.delete_webhook_message(ctx.id("webhook_id"), ctx.params["webhook_token"], webhook_message_id(ctx))
        return 204, None

    async def get_channel(ctx: Ctx) -> tuple[int, Any]:
        return 200, state.channel_payload(ctx.id("channel_id"))

    async def typing(ctx: Ctx) -> tuple[int, Any]:
        state.channel_payload(ctx.id("channel_id"))
        return 204, None

    async def send_message(ctx: Ctx) -> tuple[int, Any]:
        message = state.send_channel_message(ctx.id("channel_id"), ctx.obj(), ctx.files)
        return 200, state.payload(message)

    async def create_thread(ctx: Ctx) -> tuple[int, Any]:
        return 201, state.create_thread(ctx.id("channel_id"), ctx.obj())

    async def list_messages(ctx: Ctx) -> tuple[int, Any]:
        limit = int(ctx.query.get("limit", "50") or 50)
        return 200, [state.payload(m) for m in state.list_channel_messages(ctx.id("channel_id"), limit)]

    async def get_message(ctx: Ctx) -> tuple[int, Any]:
        return 200, state.payload(state.get_channel_message(ctx.id("channel_id"), ctx.id("message_id")))

    async def edit_message(ctx: Ctx) -> tuple[int, Any]:
        message = state.edit_channel_message(ctx.id("channel_id"), ctx.id("message_id"), ctx.obj(), ctx.files)
        return 200, state.payload(message)

    async def delete_message(ctx: Ctx) -> tuple[int, Any]:
        state.delete_channel_message(ctx.id("channel_id"), ctx.id("message_id"))
        return 204, None

    hook = "/webhooks/{webhook_id}/{webhook_token}"
    original = hook + "/messages/@original"
    by_id = hook + "/messages/{message_id}"
    message = "/channels/{channel_id}/messages/{message_id}"
    interaction = {"auth": False, "bucket": "interaction", "major": "webhook_token"}
    return [
        Route("GET", "/users/@me", users_me),
        Route("GET", "/gateway", gateway, auth=False),
        Route("GET", "/gateway/bot", gateway_bot),
        Route("GET", "/applications/@me", application),
        Route("GET", "/oauth2/applications/@me", application),  # what discord.py's login actually calls
        Route("GET", "/applications/{application_id}/commands", get_commands),
        Route("PUT", "/applications/{application_id}/commands", put_commands, bucket="commands"),
        Route("GET", "/applications/{application_id}/guilds/{guild_id}/commands", get_commands),
        Route("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", put_commands,
              bucket="commands", major="guild_id"),
        Route("POST", "/interactions/{interaction_id}/{interaction_token}/callback", callback, auth=False),
        # @original before {message_id}: the first matching route wins.
        Route("GET", original, get_webhook_message, **interaction),  # type: ignore[arg-type]
        Route("PATCH", original, edit_webhook_message, **interaction),  # type: ignore[arg-type]
        Route("DELETE", original, delete_webhook_message, **interaction),  # type: ignore[arg-type]
        Route("GET", by_id, get_webhook_message, **interaction),  # type: ignore[arg-type]
        Route("PATCH", by_id, edit_webhook_message, **interaction),  # type: ignore[arg-type]
        Route("DELETE", by_id, delete_webhook_message, **interaction),  # type: ignore[arg-type]
        Route("POST", hook, followup, **interaction),  # type: ignore[arg-type]
        Route("GET", "/channels/{channel_id}", get_channel),
        Route("POST", "/channels/{channel_id}/typing", typing),
        Route("GET", "/channels/{channel_id}/messages", list_messages),
        Route("POST", "/channels/{channel_id}/messages", send_message, bucket="channel_create", major="channel_id"),
        Route("POST", "/channels/{channel_id}/threads", create_thread),
        Route("GET", message, get_message),
        Route("PATCH", message, edit_message, bucket="channel_edit", major="channel_id"),
        Route("DELETE", message, delete_message, bucket="channel_delete", major="channel_id"),
    ]
