"""/config and /usage as a server admin uses them in Discord: hidden from members, private, the chart attached."""

from __future__ import annotations

import pytest

from tests.discord.conftest import GENERAL, OTHER, PLAYER
from tests.discord.test_commands import assert_clean, private, public
from tests.fakes import ScriptedProvider, reply

MANAGE_GUILD = 1 << 5


async def test_config_is_hidden_from_members_and_sets_this_servers_dm(make_dm_bot):
    provider = ScriptedProvider(default=lambda r: reply("ok", input_tokens=900, output_tokens=100))
    h = await make_dm_bot(provider)
    [config] = [c for c in h.standin.commands() if c["name"] == "config"]
    assert config["default_member_permissions"] == str(MANAGE_GUILD)
    options = {o["name"]: o for o in config["options"]}
    assert set(options) == {"persona", "content_rating", "adventure_budget", "monthly_budget",
                            "player_daily_budget"}
    assert all(o["description"] and not o.get("required") for o in options.values())
    assert [c["value"] for c in options["content_rating"]["choices"]] == ["family", "teen", "mature"]
    assert options["persona"]["max_length"] == 500
    with pytest.raises(PermissionError):  # Discord itself refuses a member (the service refuses too: unit tests)
        await h.run("config", {}, user=OTHER, permissions=0)

    shown = await h.run("config", {}, user=OTHER, permissions=MANAGE_GUILD)
    [message] = private(h, shown)
    assert "This server's DM settings" in message.content and "(default)" in message.content
    assert public(h, shown) == []

    changed = await h.run("config", {"persona": "a weary ferryman of the dead", "content_rating": "family",
                                     "adventure_budget": 2_000}, user=OTHER, permissions=MANAGE_GUILD)
    [message] = private(h, changed)
    assert "**Saved.**" in message.content and "(set here): a weary ferryman of the dead" in message.content
    await h.run("start")
    assert "You are a weary ferryman of the dead." in provider.requests[-1].system
    assert "suitable for children" in provider.requests[-1].system
    tokens = await h.run("tokens")
    assert "1,000 used of 2,000" in private(h, tokens)[0].content
    assert_clean(h)


async def test_usage_shows_the_month_privately_with_a_chart(make_dm_bot):
    h = await make_dm_bot(ScriptedProvider(default=lambda r: reply("ok", input_tokens=900, output_tokens=100)))
    await h.run("start")
    await h.run("act", {"action": "I wave"}, user=OTHER)
    [usage] = [c for c in h.standin.commands() if c["name"] == "usage"]
    assert usage["default_member_permissions"] == str(MANAGE_GUILD)
    with pytest.raises(PermissionError):
        await h.run("usage", {}, user=OTHER, permissions=0)

    inter = await h.run("usage", {}, user=PLAYER, permissions=MANAGE_GUILD)
    assert public(h, inter) == []
    [message] = private(h, inter)
    assert "Total: **2,000 tokens**" in message.content and "2 model calls" in message.content
    assert f"1. <#{GENERAL}> — 2,000 tokens" in message.content
    assert f"(<@{PLAYER}>) — 1,000 tokens" in message.content and f"(<@{OTHER}>) — 1,000 tokens" in message.content
    [chart] = message.attachments
    assert chart["filename"] == "usage.png" and chart["size"] > 1000
    assert not message.pinged_users
    assert_clean(h)
