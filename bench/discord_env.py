"""The benchmark's world: the local Discord stand-in and the LLM server in this process, the bot in a child
process (``python -m bot run``, or a bench-only entry point), and a tracker that turns the stand-in's request
log into per-turn timelines.

Timestamps: the LLM server logs when each text event left it and the stand-in logs when each request was
answered (``RequestRecord.time``); both use ``time.monotonic()`` in this process, so they are comparable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import psutil

from bench.llm_server import LLMServer, Pace
from tests.e2e.botproc import interrupt
from tests.standin import DiscordStandIn, Limits

REPO = Path(__file__).resolve().parents[1]
APP_ID = 900_000_000_000_000_001
BOT_ID = 900_000_000_000_000_002
TOKEN = "bench-standin-token"
PLAYER = 700_000_000_000_000_001
GUILD_BASE = 800_000_000_000_100_000
CHANNEL_BASE = 810_000_000_000_000_000
CHANNELS_PER_GUILD = 250  # Discord allows 500 channels per guild
CURSOR = "▌"
MODEL = {"anthropic": "claude-sonnet-5-5", "openai": "gpt-4.1-mini"}


def guild_specs(channels: int) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """Enough guilds for ``channels`` text channels; returns the specs and channel -> guild."""
    specs, where = [], {}
    for g in range(-(-channels // CHANNELS_PER_GUILD)):
        guild_id = GUILD_BASE + g
        chans = []
        for i in range(g * CHANNELS_PER_GUILD, min(channels, (g + 1) * CHANNELS_PER_GUILD)):
            chans.append({"id": CHANNEL_BASE + i, "name": f"table-{i}", "position": i})
            where[CHANNEL_BASE + i] = guild_id
        specs.append({"id": guild_id, "name": f"Bench Keep {g}", "channels": chans,
                      "members": [{"id": PLAYER, "name": "aria"}]})
    return specs, where


@dataclass
class Turn:
    """One slash command as the stand-in saw it."""

    marker: str
    channel_id: int
    token: str
    invoked_at: float
    edits: list[tuple[float, str]] = field(default_factory=list)  # (answered at, content) of 200 edits/sends
    first_visible_at: float | None = None  # first edit whose content carries the marker
    ratelimited: int = 0
    done_at: float | None = None
    failed: str | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class Tracker:
    """Follows every request the stand-in answers (hooked on its change callback) and files it by turn."""

    def __init__(self, standin: DiscordStandIn) -> None:
        self.standin = standin
        self.turns: dict[str, Turn] = {}  # by interaction token
        self.other_429 = 0
        self._seen = 0
        rest = standin._rest  # noqa: SLF001 - the stand-in offers no per-request callback; this is bench-only
        notify = rest.on_change

        def on_change() -> None:
            notify()
            self._catch_up()

        rest.on_change = on_change

    def add(self, marker: str, channel_id: int, token: str) -> Turn:
        turn = Turn(marker, channel_id, token, time.monotonic())
        self.turns[token] = turn
        return turn

    def _catch_up(self) -> None:
        records = self.standin.requests
        while self._seen < len(records):
            record = records[self._seen]
            self._seen += 1
            parts = record.path.split("/")
            turn = self.turns.get(parts[3]) if len(parts) > 3 and parts[1] in ("webhooks", "interactions") else None
            if record.status == 429:
                if turn is not None:
                    turn.ratelimited += 1
                else:
                    self.other_429 += 1
                continue
            if turn is None or record.status >= 300 or parts[1] != "webhooks":
                continue
            body = record.body if isinstance(record.body, dict) else {}
            content = body.get("content")
            if record.method == "POST" and (body.get("flags") or 0) & 64:
                self._finish(turn, record.time, f"private answer: {content!r}")
                continue
            if not isinstance(content, str):
                continue
            turn.edits.append((record.time, content))
            if turn.first_visible_at is None and turn.marker in content:
                turn.first_visible_at = record.time
            if record.method == "PATCH" and parts[-1] == "@original" and not content.endswith(CURSOR):
                self._finish(turn, record.time, "interrupted" if "⚠️" in content else None)

    @staticmethod
    def _finish(turn: Turn, when: float, failed: str | None) -> None:
        if turn.done_at is None:
            turn.done_at, turn.failed = when, failed
            turn.finished.set()


class BotProcess:
    """The bot as a child process, with its own CPU and memory (psutil)."""

    def __init__(self, workdir: Path, *, module: str = "bot") -> None:
        self.workdir, self.module = workdir, module
        self.proc: asyncio.subprocess.Process | None = None
        self.ps: psutil.Process | None = None
        self.log_path = workdir / "bot.log"

    async def start(self, config: str) -> None:
        path = self.workdir / "config.toml"
        path.write_text(config)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DM_", "ANTHROPIC_", "OPENAI_", "DISCORD_"))}
        pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        env.update(DISCORD_TOKEN=TOKEN, PYTHONUNBUFFERED="1", PYTHONPATH=pythonpath,
                   PYTHONWARNINGS="ignore::DeprecationWarning")
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.module, "--config", str(path), "run", cwd=self.workdir, env=env,
            stdout=log, stderr=asyncio.subprocess.STDOUT)
        self.ps = psutil.Process(self.proc.pid)

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()  # type: ignore[union-attr]
        return t.user + t.system

    def rss(self) -> int:
        return self.ps.memory_info().rss  # type: ignore[union-attr]

    def peak_rss(self) -> int:
        """VmHWM (the kernel's high-water mark of resident memory), else the current RSS."""
        try:
            for line in Path(f"/proc/{self.ps.pid}/status").read_text().splitlines():  # type: ignore[union-attr]
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return self.rss()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self) -> str:
        if self.proc is not None:
            await interrupt(self.proc)
        self._log.close()
        return self.log_path.read_text(errors="replace")


def bot_config(standin: DiscordStandIn, llm: LLMServer, provider: str, workdir: Path, *,
               edit_interval: float) -> str:
    """Product defaults, except where the bench must differ: the stand-in and the local LLM, a roomy per-channel
    turn limit and token budget (the guards are not what is measured), and the edit interval under test."""
    return f"""
[discord]
api_base_url = "{standin.api_base_url}"
gateway_url = "{standin.gateway_url}"
edit_interval_seconds = {edit_interval}

[llm]
provider = "{provider}"
model = "{MODEL[provider]}"
base_url = "{llm.url_for(provider)}"
timeout_seconds = 60

[limits]
requests_per_minute = 10000
tokens_per_session = 1000000000

[database]
url = "sqlite:///{workdir / 'dm.db'}"
"""


class Env:
    """A running stand-in + LLM server + bot, and the means to play turns in it."""

    def __init__(self, standin: DiscordStandIn, llm: LLMServer, bot: BotProcess, where: dict[int, int]) -> None:
        self.standin, self.llm, self.bot, self.where = standin, llm, bot, where
        self.tracker = Tracker(standin)
        self.channels = sorted(where)
        self._n = 0

    def marker(self) -> str:
        self._n += 1
        return f"BENCH-{self._n:06d}"

    async def command(self, name: str, channel_id: int, text: str = "") -> Turn:
        marker = self.marker()
        options = {"action": f"I search the room, {text or 'carefully'} {marker}"} if name == "act" else \
            {"premise": f"a heist in a floating city {marker}"} if name == "start" else {}
        handle = await self.standin.invoke(name, options, guild_id=self.where[channel_id], channel_id=channel_id,
                                           user_id=PLAYER)
        return self.tracker.add(marker, channel_id, handle.token)

    async def wait(self, turn: Turn, timeout: float) -> None:
        """Until the turn's answer is final; TimeoutError after ``timeout``, RuntimeError if the bot died."""
        finished = asyncio.ensure_future(turn.finished.wait())
        exited = asyncio.ensure_future(self.bot.proc.wait())  # type: ignore[union-attr]
        try:
            await asyncio.wait([finished, exited], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            finished.cancel()
            exited.cancel()
        if not turn.finished.is_set():
            if not self.bot.alive():
                tail = self.bot.log_path.read_text(errors="replace")[-1500:]
                code = self.bot.proc.returncode  # type: ignore[union-attr]
                raise RuntimeError(f"the bot exited (code {code}):\n{tail}")
            raise TimeoutError(f"{turn.marker}: no final answer within {timeout:.0f} s")

    async def play(self, name: str, channel_id: int, timeout: float = 60.0) -> Turn:
        turn = await self.command(name, channel_id)
        await self.wait(turn, timeout)
        return turn

    async def play_all(self, name: str, channels: list[int], concurrency: int, timeout: float = 120.0) -> list[Turn]:
        """One ``name`` command in each channel, at most ``concurrency`` unanswered at a time."""
        gate = asyncio.Semaphore(concurrency)

        async def one(channel_id: int) -> Turn:
            async with gate:
                return await self.play(name, channel_id, timeout)

        return list(await asyncio.gather(*(one(c) for c in channels)))

    def ratelimited(self) -> int:
        return sum(self.standin.ratelimited.values())


async def _ready(standin: DiscordStandIn, timeout: float) -> None:
    await standin.wait_ready(timeout=timeout)
    await standin.wait_for_commands("start", "act", timeout=timeout)


@contextlib.asynccontextmanager
async def environment(*, channels: int, provider: str = "anthropic", edit_interval: float = 1.0,
                      pace: Pace | None = None, ratelimit_headers: bool = True, module: str = "bot",
                      ready_timeout: float = 60.0) -> AsyncIterator[Env]:
    """Start everything, wait until the bot is connected with its commands registered, and play one warm-up
    turn (so imports, connection pools and SQLite are warm). ``channels`` includes one warm-up channel."""
    specs, where = guild_specs(channels + 1)
    standin = await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN, guilds=specs,
                                   validate=False, ratelimit_headers=ratelimit_headers, limits=Limits()).start()
    llm = await LLMServer(pace or Pace()).start()
    with tempfile.TemporaryDirectory(prefix="dm-bench-") as tmp:
        bot = BotProcess(Path(tmp), module=module)
        await bot.start(bot_config(standin, llm, provider, Path(tmp), edit_interval=edit_interval))
        env = Env(standin, llm, bot, where)
        warm = env.channels[-1]
        env.channels = env.channels[:-1]
        output = ""
        try:
            ready = asyncio.ensure_future(_ready(standin, ready_timeout))
            exited = asyncio.ensure_future(bot.proc.wait())  # type: ignore[union-attr]
            await asyncio.wait([ready, exited], return_when=asyncio.FIRST_COMPLETED)
            exited.cancel()
            if not ready.done():
                ready.cancel()
                tail = bot.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the bot exited before it was ready:\n{tail}")
            ready.result()
            saved, llm.pace = llm.pace, Pace(tokens_per_second=0, reply_tokens=40)
            await env.play("start", warm)
            await env.play("act", warm)
            llm.pace = saved
            yield env
        finally:
            output = await bot.stop()
            await llm.stop()
            await standin.stop()
            if os.environ.get("BENCH_KEEP_LOGS"):  # a folder to keep each bot's log in (for diagnosis)
                keep = Path(os.environ["BENCH_KEEP_LOGS"])
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"bot-{int(time.time() * 1000)}.log").write_text(output)
            for line in output.splitlines():
                if line.startswith("PROBE "):  # diagnostics from a probing entry point (see bench/README.md)
                    print(f"  {line}", file=sys.stderr)
            problems = [line for line in output.splitlines() if "Traceback" in line or " ERROR " in line]
            if problems:
                print(f"  note: the bot logged {len(problems)} error lines; first: {problems[0][:200]}",
                      file=sys.stderr)
            if standin.server_errors:
                print(f"  note: the stand-in had {len(standin.server_errors)} internal errors", file=sys.stderr)
