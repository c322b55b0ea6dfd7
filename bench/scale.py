"""When to scale out: turns per second and first-text latency as concurrent channels grow, for one SQLite
process, one PostgreSQL process and two processes (two shards) over PostgreSQL, with an instant LLM and a
30 words/s one.

``python -m bench.scale [--quick] [--setups sqlite,pg,pg2] [--output bench/scale.json]`` (also ``make
bench-scale``). Prints a markdown table (the one in docs/scale-out.md) and writes the JSON.

What runs: the stand-in (REST + gateway, no body validation) and the paced LLM server (bench/llm_server.py) in
this process; the bot processes as children (``python -m bot run``), the product unchanged. Servers are spread
over 4 guilds, two on each of two shards; with two processes each runs one shard (``shard_ids = [0]`` /
``[1]``), so each carries half the channels, as N shard processes do in compose.yaml. PostgreSQL setups use a
fresh database (127.0.0.1:5432, dropped afterwards); two processes share rate limits through Redis
(127.0.0.1:6379, a fresh key prefix). One phase: N channels each play /act in a closed loop (the next action as
soon as the answer is final) for ``duration`` seconds. Reported per phase: turns per second, first text p50 /
p99 (from the /act to the first edit carrying the narration: queueing, store, lock and the LLM's time to
first token included), failed turns, and CPU: the bot processes' (sum, in cores) and this process's (the
stand-in and the LLM server: when it nears one core, the harness, not the bot, is the limit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from bench.discord_env import APP_ID, BOT_ID, MODEL, PLAYER, TOKEN, BotProcess, Env, Turn
from bench.llm_server import LLMServer, Pace
from bench.stats import CpuMeter, percentile
from tests.standin import DiscordStandIn, Limits

RESULTS = Path(__file__).with_name("scale.json")
GUILD_BASE = 820_000_000_000_000_000
CHANNEL_BASE = 830_000_000_000_000_000
PLAYER_BASE = 840_000_000_000_000_000
CHANNELS_PER_GUILD, SHARDS = 10, 2
PG_ADMIN = os.environ.get("BENCH_PG_DSN", "postgresql://root@127.0.0.1:5432/test")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")

INSTANT = Pace(tokens_per_second=0, ttft_seconds=0, reply_tokens=100, tokens_per_event=3)
WORDS_30 = Pace(tokens_per_second=30, ttft_seconds=0.3, reply_tokens=60, tokens_per_event=3)  # ≈ 2.3 s answers


@dataclass(frozen=True)
class Setup:
    key: str
    label: str
    database: str  # "sqlite" or "postgresql"
    processes: int


SETUPS = {
    "sqlite": Setup("sqlite", "1 process, SQLite", "sqlite", 1),
    "pg": Setup("pg", "1 process, PostgreSQL", "postgresql", 1),
    "pg2": Setup("pg2", "2 processes (2 shards), PostgreSQL + Redis", "postgresql", 2),
}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def guild_count(channels: int) -> int:
    return max(SHARDS, -(-channels // CHANNELS_PER_GUILD) // SHARDS * SHARDS + SHARDS)


def guild_specs(channels: int) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """``channels`` text channels, CHANNELS_PER_GUILD to a guild (many servers, each with a few tables, as a
    public bot has), over guilds whose ids alternate between the two shards. Each channel has its own player."""
    specs, where = [], {}
    guilds = guild_count(channels)
    for g in range(guilds):
        guild_id = GUILD_BASE + g * (1 << 22)  # (guild_id >> 22) % 2 alternates
        chans = [{"id": CHANNEL_BASE + i, "name": f"table-{i}", "position": i}
                 for i in range(g, channels, guilds)]
        where.update({c["id"]: guild_id for c in chans})
        specs.append({"id": guild_id, "name": f"Scale Keep {g}", "channels": chans,
                      "members": [{"id": PLAYER_BASE + c["id"] - CHANNEL_BASE, "name": f"p{c['id'] % 10000}"}
                                  for c in chans] or [{"id": PLAYER, "name": "aria"}]})
    return specs, where


def bot_config(standin: DiscordStandIn, llm: LLMServer, *, database_url: str, shard_ids: list[int] | None,
               backend: str, key_prefix: str) -> str:
    shards = f"shard_count = {SHARDS}\nshard_ids = {shard_ids}\n" if shard_ids is not None else ""
    return f"""
[discord]
api_base_url = "{standin.api_base_url}"
gateway_url = "{standin.gateway_url}"
edit_interval_seconds = 1.0
{shards}
[llm]
provider = "anthropic"
model = "{MODEL['anthropic']}"
base_url = "{llm.url_for('anthropic')}"
timeout_seconds = 60

[limits]
requests_per_minute = 10000
tokens_per_session = 1000000000
max_queued_turns = 100
backend = "{backend}"
key_prefix = "{key_prefix}"

[database]
url = "{database_url}"
"""


class ScaleEnv(Env):
    """bench.discord_env.Env over several bot processes."""

    def __init__(self, standin: DiscordStandIn, llm: LLMServer, bots: list[BotProcess], where: dict[int, int]):
        super().__init__(standin, llm, bots[0], where)
        self.bots = bots

    async def wait(self, turn: Turn, timeout: float) -> None:
        for bot in self.bots:
            if not bot.alive():
                raise RuntimeError(f"a bot exited:\n{bot.log_path.read_text(errors='replace')[-1500:]}")
        await super().wait(turn, timeout)

    def cpu_seconds(self) -> float:
        return sum(b.cpu_seconds() for b in self.bots)

    async def command(self, name: str, channel_id: int, text: str = "") -> Turn:
        """As Env.command, by the channel's own player (one player everywhere would share one daily counter)."""
        marker = self.marker()
        options = {"action": f"I search the room, {text or 'carefully'} {marker}"} if name == "act" else \
            {"premise": f"a heist in a floating city {marker}"}
        handle = await self.standin.invoke(name, options, guild_id=self.where[channel_id], channel_id=channel_id,
                                           user_id=PLAYER_BASE + channel_id - CHANNEL_BASE)
        return self.tracker.add(marker, channel_id, handle.token)


@contextlib.asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    import asyncpg

    name = f"dmbench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.asynccontextmanager
async def world(setup: Setup, channels: int) -> AsyncIterator[ScaleEnv]:
    warm_count = guild_count(channels)
    specs, where = guild_specs(channels + warm_count)  # the last ones warm up (one per guild)
    standin = await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN, guilds=specs,
                                   validate=False, limits=Limits()).start()
    llm = await LLMServer(INSTANT).start()
    bots: list[BotProcess] = []
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dm-scale-")))
        url = await stack.enter_async_context(pg_database()) if setup.database == "postgresql" \
            else f"sqlite:///{tmp / 'dm.db'}"
        backend = REDIS if setup.processes > 1 else "memory://"
        prefix = f"dmbench-{uuid.uuid4().hex[:10]}"
        try:
            for i in range(setup.processes):
                workdir = tmp / f"bot{i}"
                workdir.mkdir()
                bot = BotProcess(workdir)
                shard_ids = [i] if setup.processes > 1 else None
                await bot.start(bot_config(standin, llm, database_url=url, shard_ids=shard_ids, backend=backend,
                                           key_prefix=prefix))
                bots.append(bot)
            expected = setup.processes  # one gateway connection per process (one shard each, or unsharded)
            await standin.wait_for(lambda: standin.identifies >= expected or not all(b.alive() for b in bots), 90)
            if not all(b.alive() for b in bots):
                raise RuntimeError("a bot exited at start:\n" + "\n".join(
                    b.log_path.read_text(errors="replace")[-1500:] for b in bots if not b.alive()))
            await standin.wait_for_commands("start", "act", timeout=60)
            env = ScaleEnv(standin, llm, bots, where)
            warm, env.channels = env.channels[-warm_count:], env.channels[:-warm_count]
            for channel in warm:
                await env.play("start", channel)
                await env.play("act", channel)
            yield env
        finally:
            for bot in bots:
                await bot.stop()
            await llm.stop()
            await standin.stop()


@dataclass
class Phase:
    setup: str
    llm: str
    channels: int
    turns: int
    seconds: float
    failed: int
    first_text_ms: list[float] = field(default_factory=list, repr=False)
    to_model_ms: list[float] = field(default_factory=list, repr=False)  # /act to the LLM request
    to_defer_ms: list[float] = field(default_factory=list, repr=False)  # /act to the bot's acknowledgement
    bot_cores: float = 0.0
    bench_cores: float = 0.0
    load: float = 0.0  # the machine's 1-minute load average at the end (other work on a shared machine shows here)

    @property
    def per_second(self) -> float:
        return self.turns / self.seconds

    def p(self, q: float, which: str = "first_text_ms") -> float:
        return percentile(getattr(self, which), q)

    def row(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("first_text_ms")
        data.pop("to_model_ms")
        data.pop("to_defer_ms")
        data.update(turns_per_second=round(self.per_second, 2), first_text_p50_ms=round(self.p(50), 1),
                    first_text_p99_ms=round(self.p(99), 1), to_model_p50_ms=round(self.p(50, "to_model_ms"), 1),
                    to_ack_p50_ms=round(self.p(50, "to_defer_ms"), 1))
        return data


async def phase(env: ScaleEnv, setup: Setup, llm_name: str, pace: Pace, n: int, duration: float) -> Phase:
    """n channels in a closed loop of /act (the next action as soon as the answer is final). Measured over
    ``duration`` seconds of steady state: from when every channel has finished its first turn of the phase."""
    env.llm.pace = pace
    answer = pace.ttft_seconds + (pace.reply_tokens / pace.tokens_per_second if not pace.instant else 0.0)
    ramp = min(3.0, max(1.0, answer))
    played: list[Turn] = []
    first_done: set[int] = set()
    steady = asyncio.Event()
    window: dict[str, float] = {}

    async def loop(i: int, channel: int) -> None:
        await asyncio.sleep(ramp * i / n)
        while "end" not in window or time.monotonic() < window["end"]:
            turn = await env.command("act", channel)
            played.append(turn)
            await env.wait(turn, 120)
            first_done.add(channel)
            if len(first_done) == n and not steady.is_set():
                steady.set()

    async def measure() -> None:
        await steady.wait()
        window["start"], window["end"] = time.monotonic(), time.monotonic() + duration
        window["cpu"], window["meter"] = env.cpu_seconds(), CpuMeter()  # type: ignore[assignment]
        await asyncio.sleep(duration)
        window["cpu"] = env.cpu_seconds() - window["cpu"]
        window["bench"] = window.pop("meter").share()  # type: ignore[attr-defined]

    await asyncio.gather(measure(), *(loop(i, c) for i, c in enumerate(env.channels[:n])))
    lo, hi = window["start"], window["end"]
    # Throughput: answers that became final in the window; latency: turns whose first text showed in it.
    done = [t for t in played if t.done_at is not None and lo <= t.done_at <= hi]
    result = Phase(setup.key, llm_name, n, len(done), duration, sum(t.failed is not None for t in done))
    shown = [t for t in played if t.first_visible_at is not None and lo <= t.first_visible_at <= hi]
    result.first_text_ms = [(t.first_visible_at - t.invoked_at) * 1000 for t in shown]  # type: ignore[operator]
    result.to_model_ms = [(env.llm.logs[t.marker].received_at - t.invoked_at) * 1000 for t in shown
                          if t.marker in env.llm.logs]
    acked = {r.path.split("/")[3]: r.time for r in env.standin.requests
             if r.path.startswith("/interactions/") and r.path.endswith("/callback") and lo - 60 <= r.time}
    result.to_defer_ms = [(acked[t.token] - t.invoked_at) * 1000 for t in shown if t.token in acked]
    result.bot_cores = window["cpu"] / duration
    result.bench_cores = window["bench"]
    result.load = os.getloadavg()[0]
    return result


async def run_setup(setup: Setup, plan: list[tuple[str, Pace, list[int]]], duration: float) -> list[Phase]:
    most = max(max(counts) for _, _, counts in plan)
    results = []
    say(f"{setup.label}: starting {setup.processes} bot process(es), {most} channels")
    async with world(setup, most) as env:
        env.llm.pace = INSTANT
        await env.play_all("start", env.channels[:most], concurrency=50)
        for llm_name, pace, counts in plan:
            for n in counts:
                result = await phase(env, setup, llm_name, pace, n, duration)
                say(f"  {llm_name:>10} {n:4d} channels: {result.per_second:6.1f} turns/s, first text p50 "
                    f"{result.p(50):7.0f} ms p99 {result.p(99):7.0f} ms (to the model p50 "
                    f"{result.p(50, 'to_model_ms'):.0f} ms, acknowledged p50 {result.p(50, 'to_defer_ms'):.0f} ms), failed {result.failed}, bot CPU "
                    f"{result.bot_cores:.2f} cores, bench {result.bench_cores:.2f}, load {result.load:.1f}")
                results.append(result)
                await asyncio.sleep(1.0)
    return results


def table(results: list[Phase]) -> str:
    lines = ["| setup | LLM | channels | turns/s | first text p50 / p99 | of which to the model (p50) | failed | "
             "bot CPU (cores) | bench CPU | load |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {SETUPS[r.setup].label} | {r.llm} | {r.channels} | {r.per_second:.1f} | "
                     f"{r.p(50):,.0f} / {r.p(99):,.0f} ms | {r.p(50, 'to_model_ms'):,.0f} ms | {r.failed} | "
                     f"{r.bot_cores:.2f} | {r.bench_cores:.2f} | {r.load:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer channel counts and shorter phases")
    parser.add_argument("--setups", default="sqlite,pg,pg2", help="which setups, of: sqlite, pg, pg2")
    parser.add_argument("--duration", type=float, default=None, help="seconds measured per phase")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"the JSON (default {RESULTS})")
    args = parser.parse_args()
    keys = args.setups.split(",")
    if not set(keys) <= set(SETUPS):
        parser.error(f"setups are {', '.join(SETUPS)}")
    if args.quick:
        plan = [("instant", INSTANT, [25, 100]), ("30 words/s", WORDS_30, [50, 200])]
    else:
        plan = [("instant", INSTANT, [25, 100, 200]), ("30 words/s", WORDS_30, [50, 200, 400])]
    duration = args.duration or (6.0 if args.quick else 8.0)
    started = time.monotonic()
    results: list[Phase] = []
    for key in keys:
        results += asyncio.run(run_setup(SETUPS[key], plan, duration))
    elapsed = time.monotonic() - started
    args.output.write_text(json.dumps({"machine": {"nproc": os.cpu_count()}, "duration_per_phase": duration,
                                       "elapsed_seconds": round(elapsed, 1),
                                       "phases": [r.row() for r in results]}, indent=2) + "\n")
    print(f"\nScale-out figures ({elapsed / 60:.1f} min, {os.cpu_count()} CPUs, {duration:g} s per phase)\n")
    print(table(results))
    print(f"\nWritten: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
