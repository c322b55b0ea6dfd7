"""Load: many /act at once, through the Discord stand-in, against `python -m bot run` as a subprocess.

The soak run (``make soak``): 200 channels each get an adventure, then 1000 /act arrive at random moments over
60 s, from 160 players. The model is a local OpenAI-compatible server in its own process
(tests/e2e/pacedllm.py) that streams like a real one: first token after 400 ms, then a word every 30 ms,
60 words. The stand-in applies Discord's rate limits (5 edits per 2 s per interaction token, the 3 s
acknowledgement deadline, 50 requests/s globally for the bot token) and validates every request.

What must hold: every /act is answered (its own answer, in public) or refused with a clear private message
(the channel's queue full or its rate limit reached: counted); nothing is lost (no "thinking…" left, no
interaction unacknowledged); the bot logs no error; and the SQLite file agrees: every answered act has its
player turn and the DM's answer complete, every refused act left no turn at all. The figures (time from the
/act to the first visible text, and from the model's first token to it, p50/p99) are printed, not asserted.

A smaller run (100 acts over 5 s across 20 channels) is part of ``make test``.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import re
import sqlite3
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.botproc import CURSOR, clean_env, config_text, start_bot
from tests.standin import DiscordStandIn, Limits

APP_ID, BOT_ID, TOKEN = 900_000_000_000_000_001, 900_000_000_000_000_002, "load-test-token"
REFUSALS = {  # what a player may be told instead of an answer under load, and why
    "busy": "The DM is still answering",
    "rate_limited": "This channel has reached its limit",
}
COMMANDS = ("start", "act", "roll", "tokens", "end", "session", "budget")


@dataclass
class Plan:
    channels: int
    acts: int
    over: float  # seconds across which the acts arrive
    players: int
    provider: str = "anthropic"  # the shipped default; "openai" also works
    bursts: int = 0  # channels that also get burst_size acts at one instant
    burst_size: int = 8
    hot: int = 0  # channels that also get hot_acts evenly spaced acts
    hot_acts: int = 25
    first_token_ms: int = 400
    token_ms: int = 30
    words: int = 60
    seed: int = 7


@dataclass
class Act:
    tag: str
    channel: int
    user: int
    planned: float
    sent_at: float = 0.0  # wall clock
    inter: Any = None
    outcome: str = ""  # answered / busy / rate_limited / other
    visible_at: float | None = None  # wall clock of the first text the player saw
    done_at: float | None = None  # wall clock of the last change to its messages
    queued: bool = False  # an earlier act in its channel was still being answered when it was sent
    text: str = ""


@dataclass
class Report:
    plan: Plan
    acts: list[Act]
    starts: int
    duration: float
    log: str
    first_token_at: dict[str, float]
    llm_requests: int
    llm_max_in_flight: int
    ratelimited: dict[str, int]
    ack_latencies: list[float]
    db: Path
    problems: list[str] = field(default_factory=list)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return sum(1 for a in self.acts if a.outcome == outcome)


def world(plan: Plan) -> tuple[list[dict], list[int], list[int]]:
    """Guilds of up to 50 channels each, and the players (members of every guild)."""
    channel_ids = [810_000_000_000_000_000 + i for i in range(plan.channels)]
    players = [710_000_000_000_000_000 + i for i in range(plan.players)]
    guilds = []
    for g in range(0, plan.channels, 50):
        guild_id = 820_000_000_000_000_000 + g
        guilds.append({"id": guild_id, "name": f"Keep {g // 50}",
                       "channels": [{"id": c, "name": f"table-{c % 1000}"} for c in channel_ids[g:g + 50]],
                       "members": [{"id": p, "name": f"p{p % 1000}"} for p in players]})
    return guilds, channel_ids, players


def schedule(plan: Plan, channel_ids: list[int], players: list[int], rng: random.Random) -> list[Act]:
    """When each act arrives, in which channel, from whom. Most arrive at random moments across ``over``
    seconds, spread evenly over the channels. ``bursts`` channels also get ``burst_size`` acts at one instant
    (more than the channel's queue holds: some must be refused as busy), and ``hot`` channels get ``hot_acts``
    evenly spaced (more than the per-channel limit of 20 turns a minute: some must be refused as rate limited).
    """
    planned: list[tuple[float, int]] = []
    for channel in channel_ids[:plan.bursts]:
        at = rng.uniform(0, plan.over * 0.8)
        planned += [(at, channel)] * plan.burst_size
    for channel in channel_ids[plan.bursts:plan.bursts + plan.hot]:
        planned += [((k + 0.5) * plan.over / plan.hot_acts, channel) for k in range(plan.hot_acts)]
    rest = plan.acts - len(planned)
    order = [channel_ids[i % plan.channels] for i in range(rest)]
    rng.shuffle(order)
    planned += [(rng.uniform(0, plan.over), channel) for channel in order]
    planned.sort(key=lambda p: p[0])
    return [Act(f"L{i:04d}", channel, rng.choice(players), at) for i, (at, channel) in enumerate(planned)]


async def start_llm(plan: Plan) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.e2e.pacedllm", "--first-token-ms", str(plan.first_token_ms),
        "--token-ms", str(plan.token_ms), "--words", str(plan.words),
        cwd=Path(__file__).resolve().parents[2], stdout=asyncio.subprocess.PIPE)
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    return proc, int(line.split()[1])


def llm_stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as answer:
        return json.loads(answer.read())


def settled(inter: Any) -> list[Any] | None:
    """The interaction's messages once final (cheap: looks only at this interaction's messages)."""
    if inter.original_id is None:
        return None
    seen = [inter.original, *inter.followups]
    live = [m for m in seen if not m.deleted]
    if live and all(not m.loading and not m.content.endswith(CURSOR) for m in live):
        return live
    return None


async def wait_all(inters: list[Any], timeout: float) -> None:
    pending = list(inters)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [i for i in pending if settled(i) is None]
        await asyncio.sleep(0.25)


def first_text_at(messages: list[Any]) -> float | None:
    times = [r.at.timestamp() for m in messages for r in m.history if r.content.strip()]
    return min(times) if times else None


async def run_load(tmp_path: Path, plan: Plan) -> Report:
    guilds, channel_ids, players = world(plan)
    cpu: dict[str, list[float]] = {}
    llm, port = await start_llm(plan)
    standin = await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN, guilds=guilds,
                                   limits=Limits()).start()  # Discord's own buckets
    bot = None
    try:
        base_url = f"http://127.0.0.1:{port}" + ("/v1" if plan.provider == "openai" else "")
        (tmp_path / "config.toml").write_text(config_text(
            standin, provider=plan.provider, base_url=base_url, model="paced-model",
            edit_interval=1.0,  # the shipped default: one edit a second per message
            # one answer per act, so each act's answer can be told by its tag (batching: tests/discord/test_table.py)
            extra="\n[dm]\nbatch_actions = false\n"))
        bot = await start_bot(tmp_path, clean_env(DISCORD_TOKEN=TOKEN))
        await standin.wait_ready(timeout=60)
        await standin.wait_for_commands(*COMMANDS, timeout=60)
        guild_of = {c["id"]: g["id"] for g in guilds for c in g["channels"]}
        rng = random.Random(plan.seed)

        # Every channel gets its adventure first (20 a second), all of them answered before the acts begin.
        starts = []
        for n, channel in enumerate(channel_ids):
            starts.append(await standin.invoke("start", {"premise": f"[S{n:04d}] a keep under siege"},
                                               guild_id=guild_of[channel], channel_id=channel,
                                               user_id=rng.choice(players)))
            await asyncio.sleep(0.05)
        await wait_all(starts, timeout=120)
        opened = [s for s in starts if (m := settled(s)) and not m[0].ephemeral]
        assert len(opened) == len(starts), f"{len(starts) - len(opened)} adventures did not start"

        acts = schedule(plan, channel_ids, players, rng)
        began = time.monotonic()
        sampler = asyncio.create_task(sample_cpu({"bot": bot.proc.pid, "LLM server": llm.pid,
                                                  "test process (stand-in)": os.getpid()}, cpu))
        for act in acts:
            delay = act.planned - (time.monotonic() - began)
            if delay > 0:
                await asyncio.sleep(delay)
            act.sent_at = time.time()
            act.inter = await standin.invoke("act", {"action": f"[{act.tag}] I search the room"},
                                             guild_id=guild_of[act.channel], channel_id=act.channel,
                                             user_id=act.user)
        await wait_all([a.inter for a in acts], timeout=120)
        duration = time.monotonic() - began
        sampler.cancel()
    finally:
        log = await bot.stop() if bot is not None else ""
        stats = llm_stats(port) if llm.returncode is None else {}
        llm.terminate()
        await llm.wait()
        await standin.stop()

    problems = []
    for act in acts:
        messages = settled(act.inter)
        if messages is None:
            act.outcome = "lost"
            continue
        act.visible_at = first_text_at([act.inter.original, *act.inter.followups])
        act.done_at = max(r.at.timestamp() for m in [act.inter.original, *act.inter.followups] for r in m.history)
        public = [m for m in messages if not m.ephemeral]
        act.text = "\n".join(m.content for m in messages)
        if public:
            act.outcome = "answered"
        else:
            act.outcome = next((kind for kind, text in REFUSALS.items() if act.text.startswith(text)), "other")
    last_done: dict[int, float] = {}
    for act in acts:  # in the order sent
        act.queued = last_done.get(act.channel, 0.0) > act.sent_at
        if act.done_at is not None:
            last_done[act.channel] = max(last_done.get(act.channel, 0.0), act.done_at)
    problems += [f"server error: {e[:300]}" for e in standin.server_errors]
    problems += [f"invalid request: {e}" for e in standin.validation_errors[:5]]
    problems += [f"unknown route: {r.method} {r.path}" for r in standin.unknown_routes[:5]]
    return Report(plan, acts, len(starts), duration, log, stats.get("first_token_at", {}),
                  stats.get("requests", 0), stats.get("max_in_flight", 0), dict(standin.ratelimited),
                  [i.ack_latency for i in standin.interactions if i.ack_latency is not None],
                  tmp_path / "game.db", problems, cpu)


async def sample_cpu(pids: dict[str, int], into: dict[str, list[float]]) -> None:
    """Each process's CPU use (100 = one core busy), once a second, while the acts arrive."""
    import psutil

    procs = {name: psutil.Process(pid) for name, pid in pids.items()}
    for p in procs.values():
        p.cpu_percent(None)
    while True:
        await asyncio.sleep(1.0)
        for name, p in procs.items():
            into.setdefault(name, []).append(p.cpu_percent(None))


def warnings_in(log: str) -> str:
    """WARNING lines of the bot's log, counted by logger (the voice-support notices at start-up left out)."""
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for line in log.splitlines():
        if " WARNING " in line and "voice will NOT be supported" not in line:
            name, _, text = line.split(" WARNING ", 1)[1].partition(":")
            counts[name.strip()] = counts.get(name.strip(), 0) + 1
            first.setdefault(name.strip(), text.strip()[:160])
    return ", ".join(f"{n} × {name} (e.g. {first[name]!r})" for name, n in sorted(counts.items()))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def figures(report: Report) -> str:
    acts = report.acts
    answered = [a for a in acts if a.outcome == "answered" and a.visible_at is not None]
    from_act = [a.visible_at - a.sent_at for a in answered]
    from_token = [a.visible_at - report.first_token_at[a.tag] for a in answered if a.tag in report.first_token_at]
    to_token = [report.first_token_at[a.tag] - a.sent_at for a in answered if a.tag in report.first_token_at]
    alone = [a.visible_at - a.sent_at for a in answered if not a.queued]
    refused = [a.visible_at - a.sent_at for a in acts if a.outcome in REFUSALS and a.visible_at]
    plan = report.plan

    def line(name: str, values: list[float]) -> str:
        if not values:
            return f"{name}: (none)"
        return (f"{name}: p50 {percentile(values, 50):.2f} s, p99 {percentile(values, 99):.2f} s, "
                f"max {max(values):.2f} s (n={len(values)})")

    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor() or "?") if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return "\n".join([
        f"load: {plan.acts} /act over {plan.over:g} s across {plan.channels} channels, {plan.players} players "
        f"(after {report.starts} /start); {plan.provider} stream format; model: first token "
        f"{plan.first_token_ms} ms, {plan.words} words at {plan.token_ms} ms",
        f"  answered {report.count('answered')}, refused busy {report.count('busy')}, refused rate-limited "
        f"{report.count('rate_limited')}, other {report.count('other')}, lost {report.count('lost')}; "
        f"all settled {report.duration:.1f} s after the first /act",
        "  " + line("/act → first visible text", from_act),
        "  " + line("/act → first visible text, when no earlier act of the channel was still being answered",
                    alone),
        "  " + line("/act → the model's first token (queueing in the channel included)", to_token),
        "  " + line("model's first token → first visible text", from_token),
        "  " + line("/act → private refusal", refused),
        "  " + line("acknowledgement (defer) latency", report.ack_latencies),
        f"  LLM requests {report.llm_requests}, at most {report.llm_max_in_flight} streaming at once; "
        f"Discord 429s served: {sum(report.ratelimited.values())} {report.ratelimited or ''}",
        "  CPU while the acts arrived (100% = one core): " + ", ".join(
            f"{name} avg {statistics.mean(v):.0f}% max {max(v):.0f}%" for name, v in report.cpu.items() if v),
        f"  bot log: {warnings_in(report.log) or 'no warnings'}",
        f"  machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, {platform.system()}",
    ])


def check(report: Report) -> None:
    """Everything that must hold, whatever the timing."""
    acts = report.acts
    assert report.problems == [], report.problems
    lost = [a.tag for a in acts if a.outcome == "lost"]
    assert lost == [], f"{len(lost)} acts never got a final answer or refusal: {lost[:10]}"
    other = [(a.tag, a.text[:200]) for a in acts if a.outcome == "other"]
    assert other == [], f"unclear outcomes: {other[:5]}"
    for act in acts:
        if act.outcome == "answered":
            # Its own answer (the model names the act it answers), complete, and nobody else's.
            assert f"({act.tag})" in act.text and CURSOR not in act.text, act.text[:300]
            assert set(re.findall(r"\((L\d{4})\)", act.text)) == {act.tag}
            assert "interrupted" not in act.text, act.text[-300:]
        else:
            assert len(act.text) < 300 and "\n" not in act.text.strip()
    log = report.log
    for bad in ("Traceback", " ERROR ", "Task exception was never retrieved", "Unclosed", "CRITICAL"):
        assert bad not in log, f"{bad!r} in the bot's log:\n{log[-5000:]}"

    with sqlite3.connect(f"file:{report.db}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT session_id, seq, role, status, content FROM turns ORDER BY session_id, seq").fetchall()
    by_tag: dict[str, list[tuple]] = {}
    for i, (session, seq, role, status, content) in enumerate(rows):
        if role == "player" and (m := re.match(r"\[(L\d{4})\]", content)):
            following = rows[i + 1] if i + 1 < len(rows) else None
            by_tag.setdefault(m.group(1), []).append((status, following))
    assert not [r for r in rows if r[3] != "complete"], "turns left pending, failed or interrupted"
    for act in acts:
        stored = by_tag.get(act.tag, [])
        if act.outcome == "answered":
            [(status, dm)] = stored
            assert status == "complete" and dm is not None and dm[2] == "dm" and dm[3] == "complete"
            assert f"({act.tag})" in dm[4]
        else:
            assert stored == [], f"refused {act.tag} left a turn: {stored}"


def guards_hold(report: Report) -> None:
    """The channel guards work under load too. A burst of 8 at one instant overflows a queue of 5 (the answer
    being written counts): at least 3 are refused as busy. A hot channel's 25 acts within a minute (plus its
    /start) exceed 20 turns a minute: at least 5 are refused, as rate limited or, when the model is slow enough
    for its queue to fill first, as busy."""
    _, channel_ids, _ = world(report.plan)
    plan = report.plan

    def refused(channel: int, kinds: tuple[str, ...]) -> int:
        return sum(1 for a in report.acts if a.channel == channel and a.outcome in kinds)

    for channel in channel_ids[:plan.bursts]:
        assert refused(channel, ("busy",)) >= plan.burst_size - 5, channel
    for channel in channel_ids[plan.bursts:plan.bursts + plan.hot]:
        assert refused(channel, ("busy", "rate_limited")) >= plan.hot_acts + 1 - 20 - 1, channel


@pytest.mark.soak
@pytest.mark.timeout(600)
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_1000_acts_over_60_s_across_200_channels(tmp_path, capsys, provider):
    report = await run_load(tmp_path, Plan(channels=200, acts=1000, over=60.0, players=160, provider=provider,
                                           bursts=10, hot=2))
    with capsys.disabled():  # the figures are the point of this run: show them even under `make soak`
        print("\n" + figures(report))
    check(report)
    guards_hold(report)


@pytest.mark.timeout(120)
async def test_100_acts_over_5_s_across_20_channels(tmp_path):
    report = await run_load(tmp_path, Plan(channels=20, acts=100, over=5.0, players=30, bursts=2,
                                           first_token_ms=100, token_ms=10, words=30))
    print("\n" + figures(report))
    check(report)
    guards_hold(report)
