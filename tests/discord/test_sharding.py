"""Shards: the real bot as discord.py's AutoShardedBot against the stand-in, with servers on different shards.

- ``[discord] shard_count`` alone: one process runs every shard, each over its own gateway connection, and each
  server's commands arrive on the connection of its shard ``(guild_id >> 22) % shard_count``;
- ``shard_ids`` splits the shards between processes: each sees only its own servers, and a server's commands
  reach only the process that runs its shard;
- the stand-in refuses an impossible shard (4010) as Discord does, and GET /gateway/bot answers a shard count
  in the shape Discord's OpenAPI description documents.
"""

from __future__ import annotations

import json

import aiohttp
import pytest

from bot.client import DungeonMasterBot, ShardedDungeonMasterBot
from tests.discord.conftest import APP_ID, BOT_ID, GENERAL, GUILD, PLAYER, TOKEN, guild_spec
from tests.fakes import ScriptedProvider, reply
from tests.standin import DiscordStandIn, Limits
from tests.standin.validation import SpecValidator

GUILD_B = GUILD + (1 << 22)  # the next shard: (GUILD >> 22) % 2 == 1, (GUILD_B >> 22) % 2 == 0
B_HALL = 800_000_000_000_000_210


def two_shard_guilds() -> list[dict]:
    other = {"id": GUILD_B, "name": "Second Keep", "channels": [{"id": B_HALL, "name": "hall"}],
             "members": [{"id": PLAYER, "name": "aria"}]}
    return [guild_spec(), other]


async def new_standin(**options) -> DiscordStandIn:
    return await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN,
                                guilds=two_shard_guilds(), limits=Limits(interaction=(50, 1.0)), **options).start()


def shard_of(guild_id: int, count: int = 2) -> int:
    return (guild_id >> 22) % count


def test_the_two_guilds_are_on_different_shards():
    assert {shard_of(GUILD), shard_of(GUILD_B)} == {0, 1}


async def test_one_process_runs_every_shard_and_each_guild_arrives_on_its_own(make_dm_bot, monkeypatch):
    async def at_once(self, shard_id, *, initial=False):  # discord.py spaces IDENTIFYs 5 s apart, as Discord asks
        return None

    monkeypatch.setattr(ShardedDungeonMasterBot, "before_identify_hook", at_once)
    standin = await new_standin()
    provider = ScriptedProvider(default=lambda request: reply("The torches flare."))
    dm = await make_dm_bot(provider, standin=standin, discord={"shard_count": 2})
    assert isinstance(dm.bot, ShardedDungeonMasterBot)
    assert sorted(standin.gateway_shards()) == [(0, 2), (1, 2)], "one IDENTIFY per shard, with [id, count]"
    assert {g.id for g in dm.bot.guilds} == {GUILD, GUILD_B}
    by_shard = {s.shard: s.id for s in standin._gateway.sessions.values()}  # noqa: SLF001 - the stand-in's own test
    for guild, channel in ((GUILD, GENERAL), (GUILD_B, B_HALL)):
        inter = await dm.run("start", {"premise": "a storm"}, channel=channel)
        assert standin.delivered_to(inter) == by_shard[(shard_of(guild), 2)], "the guild's own shard got it"
        assert any("The torches flare." in m.content for m in dm.visible(inter))


async def test_two_processes_split_the_shards_and_each_gets_only_its_servers(make_dm_bot, tmp_path):
    standin = await new_standin()
    first_llm = ScriptedProvider(default=lambda request: reply("First process narrates."))
    second_llm = ScriptedProvider(default=lambda request: reply("Second process narrates."))
    first = await make_dm_bot(first_llm, standin=standin, database=str(tmp_path / "a.db"),
                              discord={"shard_count": 2, "shard_ids": [shard_of(GUILD)]})
    second = await make_dm_bot(second_llm, standin=standin, database=str(tmp_path / "b.db"),
                               discord={"shard_count": 2, "shard_ids": [shard_of(GUILD_B)]})
    assert [g.id for g in first.bot.guilds] == [GUILD] and [g.id for g in second.bot.guilds] == [GUILD_B]
    here = await first.run("start", {"premise": "a storm"}, channel=GENERAL)
    assert any("First process narrates." in m.content for m in first.visible(here))
    there = await second.run("start", {"premise": "a calm"}, channel=B_HALL)
    assert any("Second process narrates." in m.content for m in second.visible(there))
    assert len(first_llm.requests) == 1 and len(second_llm.requests) == 1, "each server reached one process"


async def test_unset_shard_count_keeps_the_unsharded_bot(make_dm_bot):
    dm = await make_dm_bot(ScriptedProvider())
    assert type(dm.bot) is DungeonMasterBot
    assert dm.standin.gateway_shards() == [None], "IDENTIFY without a shard field, as before"


@pytest.mark.parametrize("shard", [[2, 2], [0, 0], [-1, 2], "0,2"])
async def test_an_impossible_shard_is_closed_with_4010(shard):
    standin = await new_standin()
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(standin.gateway_url + "?v=10&encoding=json") as ws:
            assert json.loads((await ws.receive()).data)["op"] == 10  # HELLO
            await ws.send_str(json.dumps({"op": 2, "d": {"token": TOKEN, "intents": 1, "shard": shard,
                                                          "properties": {}}}))
            message = await ws.receive()
            assert message.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 4010
    finally:
        await standin.stop()


async def test_gateway_bot_answers_a_shard_count_as_discord_documents_it():
    validator = SpecValidator()
    if not validator.active:
        pytest.skip(validator.skipped_reason)
    for options, shards in (({}, 1), ({"recommended_shards": 4}, 4)):
        standin = await new_standin(**options)
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(standin.api_base_url + "/gateway/bot",
                                    headers={"Authorization": f"Bot {TOKEN}"}) as response:
                    body = await response.json()
        finally:
            await standin.stop()
        assert body["shards"] == shards
        assert validator.validate_response("GET", "/gateway/bot", 200, body) == []
    assert validator.validate_response("GET", "/gateway/bot", 200, {"url": "ws://x"}), "a wrong body is caught"
