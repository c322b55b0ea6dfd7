"""The local Discord stand-in, driven by the real discord.py client (REST + gateway) and by raw HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import discord
import pytest

from tests.discord.conftest import APP_ID, BOT_ID, GENERAL, GUILD, LOCKED, OTHER, PLAYER, THREAD, TOKEN, Harness
from tests.standin import DiscordStandIn, Limits

CALLBACK = "/interactions/{interaction_id}/{interaction_token}/callback"
ORIGINAL = "/webhooks/{webhook_id}/{webhook_token}/messages/@original"


async def raw(standin: DiscordStandIn, method: str, path: str, *, json: Any = None,
              auth: bool = True) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    headers = {"Authorization": f"Bot {TOKEN}"} if auth else {}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, standin.api_base_url + path, json=json, headers=headers) as response:
            body = await response.json(content_type=None) if response.status != 204 else None
            return response.status, body, response.headers


async def eventually(predicate: Any, timeout: float = 5.0) -> None:
    """For state on the discord.py side, which the stand-in cannot signal: poll briefly."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def assert_clean(standin: DiscordStandIn) -> None:
    """No schema violations, no unknown routes: what the bot sent is what Discord documents."""
    if standin.validation_skipped_reason:
        print(f"OpenAPI validation skipped: {standin.validation_skipped_reason}")
    assert standin.validation_errors == []
    assert standin.unknown_routes == []


async def test_login_ready_and_sync_registers_commands(make_harness: Any) -> None:
    h: Harness = await make_harness()
    standin = h.standin
    stored = {c["name"]: c for c in standin.commands()}
    assert set(stored) == {c.name for c in h.bot.tree.get_commands()} and "campaign" in stored
    assert standin.command_puts[None] == 1 and standin.command_puts[GUILD] == 0
    assert stored["admin"]["default_member_permissions"] == str(1 << 5)  # manage_guild, as a string like Discord
    assert [o["name"] for o in stored["roll"]["options"]] == ["dice", "reason"]
    # discord.py saw the ids the stand-in assigned.
    assert h.bot.user is not None and h.bot.user.id == BOT_ID
    assert h.bot.get_guild(GUILD) is not None and h.bot.get_channel(GENERAL) is not None
    assert isinstance(h.bot.get_channel(THREAD), discord.Thread)
    # An unchanged re-sync keeps ids and versions; it still counts as a registration.
    again = {c.name: c for c in await h.bot.tree.sync()}
    assert again["roll"].id == int(stored["roll"]["id"])
    assert standin.commands()[0]["version"] == stored[standin.commands()[0]["name"]]["version"]
    assert standin.command_puts[None] == 2
    assert standin.command_creates[None] == len(stored)  # the re-sync created nothing new
    assert standin.heartbeats >= 1  # discord.py beats at once on HELLO
    status, body, headers = await raw(standin, "GET", "/users/@me")
    assert status == 200 and body["id"] == str(BOT_ID)
    assert headers["Content-Type"] == "application/json"  # exactly: discord.py compares the whole header
    assert_clean(standin)


async def test_bad_token_is_refused_like_discord(point_discord_py: Any) -> None:
    async with DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN) as standin:
        point_discord_py(standin)
        client = discord.Client(intents=discord.Intents.default())
        with pytest.raises(discord.LoginFailure):
            await client.login("not-the-token")
        await client.close()
        assert standin.requests[-1].status == 401


async def test_slash_command_options_and_visible_message(make_harness: Any) -> None:
    h: Harness = await make_harness()
    inter = await h.standin.invoke("roll", {"dice": "1d20", "reason": "stealth"}, user_id=PLAYER)
    assert await h.outcomes.wait(inter.id) == ("1d20", "stealth")
    await inter.wait_acknowledged()
    assert inter.response_type == 4 and not inter.deferred and not inter.ephemeral
    view = inter.original
    assert view is not None and view.content == "🎲 1d20 (stealth) @everyone"
    # AllowedMentions.none() reaches Discord, so "@everyone" in model text pings nobody.
    assert view.allowed_mentions == {"parse": []} and not view.pinged_everyone
    assert [m.content for m in h.standin.messages(GENERAL, viewer_id=OTHER)] == [view.content]
    # Subcommand with a member option: resolved data lets discord.py build a Member.
    inter = await h.standin.invoke("campaign start", {"name": "Tomb", "rival": OTHER}, user_id=PLAYER)
    assert await h.outcomes.wait(inter.id) == ("Tomb", OTHER, "Member")
    with pytest.raises(ValueError):
        await h.standin.invoke("roll", {"dice": 20})  # the Discord client would not send an int here
    with pytest.raises(PermissionError):
        await h.standin.invoke("admin", user_id=OTHER)  # hidden from members without Manage Server
    assert_clean(h.standin)


async def test_deferred_edits_and_followups_as_users_see_them(make_harness: Any) -> None:
    h: Harness = await make_harness()
    standin = h.standin
    inter = await standin.invoke("story", {"steps": 3}, user_id=PLAYER)
    await inter.wait_acknowledged()
    thinking = inter.original
    assert inter.deferred and thinking is not None and thinking.loading
    assert thinking.display == "Dungeon Master is thinking…"
    h.outcomes.gate("story").set()
    assert await h.outcomes.wait(inter.id) == "part1 part2 part3"
    original = inter.original
    assert original is not None and not original.loading and original.content == "part1 part2 part3"
    assert [r.content for r in original.history] == ["", "part1", "part1 part2", "part1 part2 part3"]
    assert original.edited_at is not None and original.edited_at >= original.created_at
    public, private = inter.followups
    assert (public.content, public.ephemeral) == ("The end.", False)
    assert (private.content, private.ephemeral, private.viewer_id) == ("Only you see this.", True, PLAYER)
    # Gateway MESSAGE_CREATE/MESSAGE_UPDATE reached discord.py's cache (ephemeral ones are never dispatched).
    await eventually(lambda: [m.content for m in h.bot.cached_messages] == ["part1 part2 part3", "The end."])
    seen_by_player = [m.content for m in standin.messages(GENERAL, viewer_id=PLAYER)]
    seen_by_other = [m.content for m in standin.messages(GENERAL, viewer_id=OTHER)]
    assert seen_by_player == ["part1 part2 part3", "The end.", "Only you see this."]
    assert seen_by_other == ["part1 part2 part3", "The end."]
    assert sum(1 for r in standin.requests if r.route == CALLBACK) == 1
    assert sum(1 for r in standin.requests if (r.method, r.route) == ("PATCH", ORIGINAL)) == 3
    assert_clean(standin)


async def test_content_over_2000_characters_is_refused(make_harness: Any) -> None:
    h: Harness = await make_harness()
    inter = await h.standin.invoke("say", {"text": "x" * 2001})
    exc = await h.outcomes.wait(inter.id)
    assert isinstance(exc, discord.HTTPException) and (exc.status, exc.code) == (400, 50035)
    assert "2000" in str(exc)
    assert h.standin.messages(GENERAL) == []
    # Exactly 2000 is fine.
    inter = await h.standin.invoke("say", {"text": "y" * 2000})
    message = await h.outcomes.wait(inter.id)
    assert isinstance(message, discord.Message) and len(h.standin.messages(GENERAL)[0].content) == 2000
    assert_clean(h.standin)  # the schema allows 4000 here: the 2000 rule is the stand-in's own


async def test_empty_message_is_refused(make_harness: Any) -> None:
    h: Harness = await make_harness()
    status, body, _ = await raw(h.standin, "POST", f"/channels/{GENERAL}/messages", json={"content": "   "})
    assert (status, body["code"]) == (400, 50006)


async def test_expired_token_gives_invalid_webhook_token(make_harness: Any) -> None:
    h: Harness = await make_harness()
    inter = await h.standin.invoke("slow")
    await inter.wait_acknowledged()
    h.standin.expire_interaction(inter)
    h.outcomes.gate("slow").set()
    exc = await h.outcomes.wait(inter.id)
    assert isinstance(exc, discord.HTTPException) and (exc.status, exc.code) == (401, 50027)
    assert inter.original is not None and inter.original.loading  # still "thinking…" for the user


async def test_missing_send_permission_is_forbidden_but_interactions_still_answer(make_harness: Any) -> None:
    h: Harness = await make_harness()
    inter = await h.standin.invoke("say", {"text": "hello"}, channel_id=LOCKED)
    exc = await h.outcomes.wait(inter.id)
    assert isinstance(exc, discord.Forbidden) and (exc.status, exc.code) == (403, 50013)
    assert int(inter.payload["app_permissions"]) & (1 << 11) == 0  # the bot could have known
    assert inter.acknowledged and inter.ephemeral  # the deferred reply needs no channel permission
    # In the thread (inherits general's permissions) sending works.
    inter = await h.standin.invoke("say", {"text": "in a thread"}, channel_id=THREAD)
    assert isinstance(await h.outcomes.wait(inter.id), discord.Message)
    assert [m.content for m in h.standin.messages(THREAD)] == ["in a thread"]


@pytest.mark.parametrize("headers", [False, True], ids=["no-ratelimit-headers", "ratelimit-headers"])
async def test_editing_faster_than_the_bucket(make_harness: Any, headers: bool) -> None:
    h: Harness = await make_harness(ratelimit_headers=headers, limits=Limits(interaction=(2, 0.4)))
    inter = await h.standin.invoke("spam", {"edits": 6})
    assert await h.outcomes.wait(inter.id) == 6
    original = inter.original
    assert original is not None and original.content == "edit 6"
    assert [r.content for r in original.history][1:] == [f"edit {i}" for i in range(1, 7)]
    served = h.standin.ratelimited["PATCH " + ORIGINAL]
    if headers:
        assert served == 0  # discord.py paced itself from X-RateLimit-Remaining/Reset-After
    else:
        assert served > 0  # it was told to wait by 429s, slept retry_after, and retried
        assert h.standin.invalid_requests >= served


async def test_injected_429_is_retried_by_discord_py(make_harness: Any) -> None:
    h: Harness = await make_harness()
    h.standin.fail_next("POST", rf"/channels/{GENERAL}/messages$", 429, retry_after=0.05)
    inter = await h.standin.invoke("say", {"text": "after a 429"})
    assert isinstance(await h.outcomes.wait(inter.id), discord.Message)
    statuses = [r.status for r in h.standin.requests if r.path == f"/channels/{GENERAL}/messages"]
    assert statuses == [429, 200]


async def test_gateway_resume_replays_missed_dispatches(make_harness: Any) -> None:
    h: Harness = await make_harness()
    standin = h.standin

    async def identify_at_once(shard_id: Any, *, initial: bool = False) -> None:
        return None  # discord.py waits 5 s before re-identifying; the stand-in has no identify limit

    h.bot.before_identify_hook = identify_at_once  # type: ignore[method-assign]
    # op 7, then an interaction the client cannot read any more: it must come back on RESUME.
    await standin.reconnect(resume=True, wait=False)
    inter = await standin.invoke("roll", {"dice": "2d6"})
    assert await h.outcomes.wait(inter.id) == ("2d6", None)
    await standin.wait_for(lambda: standin.resumes == 1)
    assert standin.identifies == 1 and standin.replayed >= 1
    assert standin.gateway_close_codes == [4000]  # discord.py's own close after op 7
    # Refused resume: the client identifies again and still works.
    await standin.reconnect(resume=False)
    assert standin.identifies == 2
    inter = await standin.invoke("roll", {"dice": "1d4"})
    assert await h.outcomes.wait(inter.id) == ("1d4", None)


async def test_callback_rules_acknowledged_twice_late_and_compat_followup(make_harness: Any) -> None:
    now = [1000.0]
    h: Harness = await make_harness(clock=lambda: now[0])
    standin = h.standin
    inter = await standin.invoke("noop")
    await h.outcomes.wait(inter.id)
    path = f"/interactions/{inter.id}/{inter.token}/callback?with_response=1"
    status, body, _ = await raw(standin, "POST", path, json={"type": 5}, auth=False)
    assert status == 200 and body["interaction"]["response_message_loading"] is True
    status, body, _ = await raw(standin, "POST", path, json={"type": 4, "data": {"content": "again"}}, auth=False)
    assert (status, body["code"]) == (400, 40060)
    # The first follow-up after a defer edits the "thinking…" message (Discord's compatibility rule).
    status, body, _ = await raw(standin, "POST", f"/webhooks/{APP_ID}/{inter.token}?wait=true",
                                json={"content": "became the original"}, auth=False)
    assert status == 200 and inter.original is not None and inter.original.content == "became the original"
    assert inter.followups == []
    late = await standin.invoke("noop")
    await h.outcomes.wait(late.id)
    now[0] += 3.01  # past Discord's 3 s to acknowledge
    status, body, _ = await raw(standin, "POST", f"/interactions/{late.id}/{late.token}/callback",
                                json={"type": 5}, auth=False)
    assert (status, body["code"]) == (404, 10062)


async def test_schema_violation_is_recorded_and_refused() -> None:
    async with DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN) as standin:
        if standin.validation_skipped_reason:
            pytest.skip(f"OpenAPI validation skipped: {standin.validation_skipped_reason}")
        status, body, _ = await raw(standin, "POST", "/channels/1/messages",
                                    json={"content": 5, "allowed_mentions": {"parse": ["nobody"]}})
        assert (status, body["code"]) == (400, 50035)
        routes = {route for route, _ in standin.validation_errors}
        assert routes == {"POST /channels/{channel_id}/messages"}
        assert any(error.startswith("content:") for _, error in standin.validation_errors)


async def test_unknown_routes_and_missing_spec_are_reported(tmp_path: Any) -> None:
    async with DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN,
                              spec_path=str(tmp_path / "absent.json")) as standin:
        assert standin.validation_skipped_reason and "absent.json" in standin.validation_skipped_reason
        status, body, headers = await raw(standin, "GET", "/guilds/1/audit-logs")
        assert (status, body) == (404, {"message": "404: Not Found", "code": 0})
        assert headers["Content-Type"] == "application/json"
        assert [r.path for r in standin.unknown_routes] == ["/guilds/1/audit-logs"]
        status, _, _ = await raw(standin, "GET", "/users/@me", auth=False)
        assert status == 401


async def test_multipart_uploads_become_attachments(make_harness: Any) -> None:
    h: Harness = await make_harness()
    inter = await h.standin.invoke("upload")
    assert await h.outcomes.wait(inter.id) == (321, "notes.txt")
    channel = h.standin.messages(GENERAL)
    assert [(m.content, [a["filename"] for a in m.attachments]) for m in channel] == [
        ("map below", []), ("the map", ["map.txt"]), ("notes", ["notes.txt"])]
    uploads = [r for r in h.standin.requests if r.method == "POST" and r.body and r.body.get("attachments")]
    assert len(uploads) == 2  # both multipart requests had their payload_json parsed (and validated)
    assert_clean(h.standin)


async def test_button_press_updates_the_message(make_harness: Any) -> None:
    h: Harness = await make_harness()
    inter = await h.standin.invoke("door")
    assert await h.outcomes.wait(inter.id) == "shown"
    original = inter.original
    assert original is not None and original.components[0]["components"][0]["custom_id"] == "door:open"
    press = await h.standin.click(original.id, "door:open", user_id=OTHER)
    assert await h.outcomes.wait(press.id) == "opened"
    assert press.response_type == 7
    updated = h.standin.message(original.id)
    assert updated.content == "The door creaks open." and updated.components == ()
    assert_clean(h.standin)


async def test_direct_message_invocation(make_harness: Any) -> None:
    h: Harness = await make_harness()
    inter = await h.standin.invoke("roll", {"dice": "1d8"}, guild_id=None, user_id=PLAYER)
    assert await h.outcomes.wait(inter.id) == ("1d8", None)
    assert inter.payload["context"] == 1 and "user" in inter.payload and "member" not in inter.payload
    assert [m.content for m in h.standin.messages(inter.channel_id)] == ["🎲 1d8 (no reason) @everyone"]


async def test_channel_message_edit_and_delete(make_harness: Any) -> None:
    h: Harness = await make_harness()
    inter = await h.standin.invoke("say", {"text": "first words"})
    message = await h.outcomes.wait(inter.id)
    assert isinstance(message, discord.Message)
    edited = await message.edit(content="second words")
    assert edited.edited_at is not None
    view = h.standin.message(message.id)
    assert [r.content for r in view.history] == ["first words", "second words"] and view.edits == 1
    await message.delete()
    assert h.standin.messages(GENERAL) == []
    assert [m.deleted for m in h.standin.messages(GENERAL, include_deleted=True)] == [True]
    with pytest.raises(discord.NotFound):
        await h.bot.http.get_message(GENERAL, message.id)
    assert_clean(h.standin)


async def test_too_long_edit_is_answered_in_discords_error_shape(make_harness: Any) -> None:
    h: Harness = await make_harness()
    inter = await h.standin.invoke("slow", {"text": "z" * 2001})
    await inter.wait_acknowledged()
    h.outcomes.gate("slow").set()
    exc = await h.outcomes.wait(inter.id)
    assert isinstance(exc, discord.HTTPException) and (exc.status, exc.code) == (400, 50035)
    if h.standin.validation_skipped_reason:
        return  # without the spec only the stand-in's own 2000 rule answers, in the same shape
    assert "In content: Must be 2000 or fewer in length." in str(exc)
    assert h.standin.validation_errors == [("PATCH " + ORIGINAL, "content: Must be 2000 or fewer in length. (got 2001)")]


async def test_global_rate_limit() -> None:
    async with DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN,
                              limits=Limits(global_=(3, 60.0))) as standin:
        statuses = [(await raw(standin, "GET", "/users/@me"))[0] for _ in range(3)]
        status, body, headers = await raw(standin, "GET", "/users/@me")
        assert statuses == [200, 200, 200] and status == 429
        assert body["global"] is True and body["retry_after"] > 0
        assert headers["X-RateLimit-Global"] == "true" and headers["X-RateLimit-Scope"] == "global"
        assert headers["Via"]  # without it discord.py takes a 429 for a Cloudflare ban and gives up
        assert standin.ratelimited["GET /users/@me"] == 1


async def test_guild_scoped_commands_shadow_global_ones(make_harness: Any) -> None:
    h: Harness = await make_harness(sync=False)
    guild = discord.Object(GUILD)
    h.bot.tree.copy_global_to(guild=guild)
    await h.bot.tree.sync(guild=guild)
    assert h.standin.command_puts == {GUILD: 1} and h.standin.commands() == []
    stored = {c["name"]: c for c in h.standin.commands(GUILD)}
    assert stored["roll"]["guild_id"] == str(GUILD)
    inter = await h.standin.invoke("roll", {"dice": "3d6"})
    assert inter.payload["data"]["guild_id"] == str(GUILD)  # how discord.py finds the guild copy
    assert await h.outcomes.wait(inter.id) == ("3d6", None)
    with pytest.raises(LookupError):
        await h.standin.invoke("roll", {"dice": "1d6"}, guild_id=None)  # not registered globally
