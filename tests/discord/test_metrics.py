"""[metrics] port: /metrics parses with prometheus-client's own parser and its counters match a scripted
session (the ledger, the stand-in's own count of 429s); /healthz says whether the bot can serve."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bot.llm.base import Finish, TextChunk, Usage
from tests.discord.conftest import APP_ID, BOT_ID, TOKEN, guild_spec
from tests.discord.test_commands import assert_clean
from tests.fakes import Gate, ScriptedProvider, bad_request, overloaded, reply
from tests.standin import DiscordStandIn, Limits


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from the Prometheus text, read by prometheus-client's parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_match_a_scripted_session(make_dm_bot):
    port = free_port()
    script = [reply("Opening.", input_tokens=500, output_tokens=40),
              [overloaded()],  # the first try of the next turn fails and is retried
              [Usage(600, cache_read_tokens=100), TextChunk("The door opens."), Usage(600, 30, 100), Finish("stop")],
              [bad_request()]]
    h = await make_dm_bot(ScriptedProvider(*script), metrics={"port": port},
                          retry={"initial_backoff_seconds": 0.01, "max_backoff_seconds": 0.01},
                          dm={"max_action_chars": 40})
    await h.run("start")
    await h.run("act", {"action": "I open the door"})
    await h.run("act", {"action": "x" * 41})  # refused: too long, no call
    await h.run("act", {"action": "I shout"})  # the provider refuses it
    status, text = await scrape(port)
    assert status == 200
    got = samples(text)

    def value(name: str, **labels: str) -> float:
        return got.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("dm_turns_total", outcome="done") == 2
    assert value("dm_turns_total", outcome="invalid") == 1
    assert value("dm_turns_total", outcome="rejected") == 1
    assert value("dm_llm_calls_total", provider="fake", outcome="ok") == 2
    assert value("dm_llm_calls_total", provider="fake", outcome="overloaded") == 1
    assert value("dm_llm_calls_total", provider="fake", outcome="bad_request") == 1
    assert value("dm_llm_retries_total") == 1
    ledger = await h.bot.store.db.execute_fetchall(
        "SELECT SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens) FROM usage")
    assert [value("dm_llm_tokens_total", kind=k) for k in ("input", "output", "cache_read", "cache_write")] \
        == list(ledger[0][:3]) + [0] == [1100, 70, 100, 0]
    assert value("dm_turn_seconds_count") == 3  # the refusal made no call: not a latency
    assert value("dm_turn_first_text_seconds_count") == 2
    assert value("dm_turn_seconds_bucket", le="+Inf") == 3
    assert value("dm_active_adventures") == 1
    assert 0 <= value("dm_discord_gateway_latency_seconds") < 5
    assert value("dm_discord_rate_limited_total") == 0

    assert await scrape(port, "/healthz") == (200, "ok\n")
    real = h.bot.store.schema_version

    async def broken() -> int:
        raise OSError("disk I/O error")

    h.bot.store.schema_version = broken
    status, body = await scrape(port, "/healthz")
    assert status == 503 and "database does not answer" in body
    h.bot.store.schema_version = real
    await h.bot.close()
    await h.task
    try:
        await scrape(port, "/healthz")
        raise AssertionError("the metrics port stayed open after the bot closed")
    except aiohttp.ClientConnectionError:
        pass


async def test_discords_429s_are_counted(make_dm_bot):
    # No rate-limit headers: discord.py cannot pace itself, meets 429s and retries them.
    standin = await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN, guilds=[guild_spec()],
                                   limits=Limits(interaction=(2, 0.3)), ratelimit_headers=False).start()
    port = free_port()
    gates = [Gate() for _ in range(12)]
    words = [step for i, gate in enumerate(gates) for step in (gate, TextChunk(f"word{i} "))]
    h = await make_dm_bot(ScriptedProvider([Usage(10), *words, Usage(10, 12), Finish("stop")]), standin=standin,
                          metrics={"port": port})
    loop = asyncio.get_running_loop()
    for i, gate in enumerate(gates):  # a word every 60 ms, so the streamer edits often
        loop.call_later(0.06 * (i + 1), gate.open)
    await h.run("start", timeout=20)
    _, text = await scrape(port)
    counted = samples(text)[("dm_discord_rate_limited_total", ())]
    assert counted == sum(standin.ratelimited.values()) > 0
    assert_clean(h)


def test_metrics_are_off_by_default():
    from bot.config import Config

    assert Config().metrics.port is None


async def test_dungeon_master_health_is_the_containers_check(make_dm_bot):
    """`dungeon-master health` (the Dockerfile's HEALTHCHECK): 0 while /healthz is 200, 1 once it is not."""
    import dataclasses

    from bot.cli import health

    port = free_port()
    h = await make_dm_bot(ScriptedProvider(), metrics={"port": port})
    config = dataclasses.replace(h.bot.config, metrics=dataclasses.replace(h.bot.config.metrics, host="0.0.0.0"))
    assert await asyncio.to_thread(health, config) == 0
    await h.bot.close()
    await h.task
    assert await asyncio.to_thread(health, config) == 1
    unset = dataclasses.replace(config, metrics=dataclasses.replace(config.metrics, port=None))
    assert health(unset) == 0
