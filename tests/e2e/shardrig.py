"""The scale-out rig: several `python -m bot run` processes against ONE PostgreSQL database, ONE Redis and the
local Discord stand-in (in the test process), with llmock as the LLM.

Each process runs with ``[discord] shard_count`` and its own ``shard_ids`` (``DM_DISCORD_SHARD_IDS``), as in
compose.yaml. Two processes may hold the same shards, as during a rolling restart; the stand-in then hands
each interaction to one of them in turn (``interaction_delivery = "round_robin"``), so both receive a channel's
commands. The database is a fresh one per rig and the Redis keys have a fresh prefix, so test runs sharing the
servers never meet. The audit reads PostgreSQL directly (asyncpg), not through the bot's store.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.discord.conftest import APP_ID, BOT_ID, GUILD, PLAYER, TOKEN
from tests.e2e.botproc import interrupt
from tests.e2e.faultkit import settled
from tests.services import REDIS_URL, unique
from tests.standin import DiscordStandIn, Limits

SHARDS = 2
GUILD_B = GUILD + (1 << 22)  # on the other shard: (GUILD >> 22) % 2 == 1, (GUILD_B >> 22) % 2 == 0
CHANNELS_A = [800_000_000_000_000_300 + i for i in range(8)]  # in GUILD (shard 1)
CHANNELS_B = [800_000_000_000_000_400 + i for i in range(4)]  # in GUILD_B (shard 0)


def guilds() -> list[dict[str, Any]]:
    def guild(gid: int, name: str, channels: list[int]) -> dict[str, Any]:
        return {"id": gid, "name": name, "channels": [{"id": c, "name": f"table-{c % 1000}"} for c in channels],
                "members": [{"id": PLAYER, "name": "aria"}]}

    return [guild(GUILD, "North Keep", CHANNELS_A), guild(GUILD_B, "South Keep", CHANNELS_B)]


def config_text(standin: DiscordStandIn, *, llm_url: str, database_url: str, key_prefix: str,
                requests_per_minute: int, max_output_tokens: int = 256, extra: str = "") -> str:
    return f"""
[discord]
api_base_url = "{standin.api_base_url}"
gateway_url = "{standin.gateway_url}"
edit_interval_seconds = 0.5
shard_count = {SHARDS}

[llm]
provider = "openai"
model = "gpt-4o-mini"
base_url = "{llm_url}"
timeout_seconds = 10
max_output_tokens = {max_output_tokens}

[retry]
initial_backoff_seconds = 0.05
max_backoff_seconds = 0.2

[limits]
requests_per_minute = {requests_per_minute}
rolls_per_minute = {requests_per_minute}
backend = "{REDIS_URL}"
key_prefix = "{key_prefix}"

[database]
url = "{database_url}"

[dm]
dm_rolls = false
# One turn per action: the properties under test are the processes' (within one process, actions arriving
# while the DM narrates would be answered together, bot/dm/batching.py).
batch_actions = false
{extra}
"""


@dataclass
class BotProc:
    name: str
    shard_ids: list[int]
    proc: asyncio.subprocess.Process
    log: Path
    gateway_sessions: set[str] = field(default_factory=set)  # the stand-in's ids of its connections


@dataclass
class ShardRig:
    root: Path
    standin: DiscordStandIn
    llmock: Any
    database_url: str
    key_prefix: str = field(default_factory=lambda: unique("dmtest"))
    bots: dict[str, BotProc] = field(default_factory=dict)

    @classmethod
    async def create(cls, root: Path, llmock: Any, database_url: str, *, requests_per_minute: int = 4,
                     max_output_tokens: int = 256, extra: str = "") -> ShardRig:
        standin = await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN, guilds=guilds(),
                                       limits=Limits(interaction=(50, 1.0)), validate=True,
                                       interaction_delivery="round_robin").start()
        rig = cls(root, standin, llmock, database_url)
        (root / "config.toml").write_text(config_text(
            standin, llm_url=llmock.url + "/v1", database_url=database_url, key_prefix=rig.key_prefix,
            requests_per_minute=requests_per_minute, max_output_tokens=max_output_tokens, extra=extra))
        llmock.tool_mode("off")
        return rig

    # -- processes -----------------------------------------------------------------------------------------
    async def start(self, name: str, shard_ids: list[int]) -> BotProc:
        """Start a bot process on these shards; returns once all its shards are connected."""
        before = self.standin.identifies
        known = set(self.standin._gateway.sessions)  # noqa: SLF001 - the rig maps connections to processes
        bot = await self._spawn(name, shard_ids)
        proc = bot.proc
        try:
            await self.standin.wait_for(lambda: self.standin.identifies >= before + len(shard_ids)
                                        or proc.returncode is not None, timeout=60)
        except TimeoutError:
            raise AssertionError(f"{name} did not connect:\n{self.output(name)}") from None
        assert proc.returncode is None, f"{name} stopped at start:\n{self.output(name)}"
        await self._map_sessions([bot], set(self.standin._gateway.sessions) - known)  # noqa: SLF001
        return bot

    async def _map_sessions(self, procs: list[BotProc], new: set[str]) -> None:
        """Which new gateway session is whose: discord.py logs "Shard ID n has connected to Gateway (Session
        ID: …)" with the id the stand-in gave it."""
        async with asyncio.timeout(15):
            while True:
                for p in procs:
                    p.gateway_sessions = {sid for sid in new if sid in self.output(p.name)}
                if sum(len(p.gateway_sessions) for p in procs) == len(new):
                    return
                await asyncio.sleep(0.05)

    async def _spawn(self, name: str, shard_ids: list[int]) -> BotProc:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DM_", "ANTHROPIC_", "OPENAI_"))}
        env.update(DISCORD_TOKEN=TOKEN, PYTHONUNBUFFERED="1", OPENAI_API_KEY="sk-test",
                   DM_DISCORD_SHARD_IDS=str(shard_ids))
        log = self.root / f"{name}.log"
        with open(log, "ab") as out:  # noqa: ASYNC230 - the child owns it from here
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", cwd=self.root, env=env,
                                                        stdout=out, stderr=asyncio.subprocess.STDOUT)
        bot = self.bots[name] = BotProc(name, shard_ids, proc, log)
        return bot

    async def start_all(self, *specs: tuple[str, list[int]]) -> None:
        """Start processes side by side (discord.py spaces one process's IDENTIFYs 5 s apart, as Discord asks,
        so a process with one shard starts fastest)."""
        known = set(self.standin._gateway.sessions)  # noqa: SLF001
        identifies = self.standin.identifies
        procs = [await self._spawn(name, ids) for name, ids in specs]
        try:
            await self.standin.wait_for(lambda: self.standin.identifies >= identifies + sum(len(i) for _, i in specs)
                                        or any(p.proc.returncode is not None for p in procs), timeout=60)
        except TimeoutError:
            raise AssertionError("\n".join(f"{p.name}:\n{self.output(p.name)}" for p in procs)) from None
        for p in procs:
            assert p.proc.returncode is None, f"{p.name} stopped at start:\n{self.output(p.name)}"
        await self._map_sessions(procs, set(self.standin._gateway.sessions) - known)  # noqa: SLF001
        await self.standin.wait_for_commands("start", "act", "roll", "tokens", "budget", timeout=30)

    def output(self, name: str) -> str:
        return self.bots[name].log.read_text(errors="replace")

    async def kill(self, name: str) -> None:
        """kill -9: no cleanup of any kind, as when the host loses the process."""
        bot = self.bots[name]
        bot.proc.send_signal(signal.SIGKILL)
        await bot.proc.wait()

    async def close(self) -> None:
        await asyncio.gather(*(interrupt(b.proc) for b in self.bots.values() if b.proc.returncode is None))
        await self.standin.stop()

    def tracebacks(self) -> dict[str, str]:
        return {n: self.output(n) for n in self.bots if "Traceback" in self.output(n)}

    # -- commands --------------------------------------------------------------------------------------------
    async def invoke(self, name: str, options: dict[str, Any], channel: int, **extra: Any) -> Any:
        return await self.standin.invoke(name, options, channel_id=channel, user_id=PLAYER, **extra)

    async def finished(self, inter: Any, timeout: float = 30.0) -> list[Any]:
        return await self.standin.wait_for(lambda: settled(self.standin, inter), timeout)

    async def command(self, name: str, options: dict[str, Any], channel: int, timeout: float = 30.0,
                      **extra: Any) -> str:
        """Run a command to its end; what its user sees, as one text."""
        shown = await self.finished(await self.invoke(name, options, channel, **extra), timeout)
        return "\n".join(m.content for m in shown)

    def receiver(self, inter: Any) -> str:
        """Which gateway session received the interaction."""
        return self.standin.delivered_to(inter) or "?"

    def owner(self, inter: Any) -> str:
        """The name of the process that received the interaction."""
        session = self.receiver(inter)
        return next(b.name for b in self.bots.values() if session in b.gateway_sessions)

    # -- the audit (PostgreSQL, read directly) -----------------------------------------------------------------
    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        import asyncpg

        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def session_id(self, channel: int) -> int:
        rows = await self.fetch("SELECT id FROM sessions WHERE channel_id = $1 AND status = 'active'", str(channel))
        assert len(rows) == 1, rows
        return rows[0]["id"]

    async def turns(self, session_id: int) -> list[Any]:
        return await self.fetch("SELECT id, seq, role, content, status FROM turns WHERE session_id = $1 ORDER BY seq",
                                session_id)

    async def used_tokens(self, session_id: int) -> int:
        rows = await self.fetch("SELECT coalesce(sum(input_tokens + output_tokens + cache_read_tokens + "
                                "cache_write_tokens), 0) AS total FROM usage WHERE session_id = $1", session_id)
        return int(rows[0]["total"])

    async def turn_locks_held(self) -> int:
        """Turn locks any connection holds on this database right now (the server's own pg_locks view)."""
        from bot.store.turnlock import NAMESPACE

        rows = await self.fetch(
            "SELECT count(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE "
            "l.locktype = 'advisory' AND l.granted AND d.datname = current_database() AND "
            "l.classid = ($1::bigint & 4294967295)::text::oid AND l.objsubid = 2", NAMESPACE)
        return int(rows[0]["n"])
