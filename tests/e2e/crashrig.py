"""The crash-safety rig: `python -m bot run` as a subprocess against the Discord stand-in (in the test process)
and llmock, killed with SIGKILL at random moments of a turn, restarted on the same SQLite file, and audited
straight from that file after every restart.

What the audit holds to (the issue's words: no committed turn lost or duplicated, the ledger equals the sum of
recorded calls, a cut turn is marked interrupted and never half stored, the session goes on):
  - no turn is left ``pending`` once the bot is back (they become ``interrupted`` when the store opens);
  - every action was stored at most once, and no action was sent to the model twice;
  - every answer the channel showed as finished is stored, complete, with exactly the text shown;
  - complete turns alternate player → DM (player rolls aside): no complete action without its answer, no
    answer without its action, nothing stored from an interrupted turn;
  - one ledger row per model call of a stored turn, none for a cut turn (its usage was never reported in
    full), and /tokens shows the sum of those rows.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.discord.conftest import APP_ID, BOT_ID, TOKEN, guild_spec
from tests.e2e.botproc import config_text, interrupt
from tests.e2e.faultkit import CURSOR, INTERRUPTED, seen, settled, turns, usage_rows
from tests.standin import DiscordStandIn, Limits

# The DM rolls nothing (one model call per turn keeps the ledger audit exact); a roomy rate limit.
RIG_SETTINGS = """
[dm]
dm_rolls = false

[memory]
# The audit counts the actions in the model's requests; a summary call (its own background request, which
# quotes the turns it folds) would count as a second sending. Summaries are tested in tests/unit/test_memory.py.
summaries = false

[limits]
requests_per_minute = 1000
"""

STORY = ("The torchlight catches a seam in the wall, and when you press it the stone swings inward on silent "
         "hinges. Beyond, a narrow stair winds down into cold air that smells of river water and old smoke.")


@dataclass
class Turn:
    """One command the test sent and what became of it."""

    kind: str  # "act" or "roll"
    key: str  # the action text or roll reason: unique, so the database can be matched to the channel
    inter: Any
    round: int


@dataclass
class CrashRig:
    root: Path
    standin: DiscordStandIn
    llmock: Any
    provider: str
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    turns: list[Turn] = field(default_factory=list)
    counter: int = 0
    log_lines: list[str] = field(default_factory=list)

    @classmethod
    async def create(cls, root: Path, llmock: Any, provider: str) -> CrashRig:
        standin = await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN,
                                       guilds=[guild_spec()], limits=Limits(interaction=(50, 1.0))).start()
        path = "/v1" if provider == "openai" else "/anthropic"
        model = "claude-haiku-4-5" if provider == "anthropic" else "gpt-4o-mini"
        (root / "config.toml").write_text(config_text(standin, provider=provider, base_url=llmock.url + path,
                                                      model=model, extra=RIG_SETTINGS))
        llmock.tool_mode("off")
        llmock.pace(15)  # the answer streams for about a second: kills land before, during and after it
        for i in range(2000):  # every call answers a distinct text, so stored turns match what was shown
            llmock.reply(f"[{i}] {STORY}")
        return cls(root, standin, llmock, provider)

    @property
    def database(self) -> str:
        return str(self.root / "game.db")

    # -- the bot process -----------------------------------------------------------------------------------
    async def start(self) -> None:
        identifies = self.standin.identifies
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DM_", "ANTHROPIC_", "OPENAI_"))}
        env.update(DISCORD_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
        self.starts += 1
        out = open(self.root / f"bot-{self.starts}.log", "wb")  # noqa: SIM115, ASYNC230 - the child owns it
        self.proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", cwd=self.root, env=env,
                                                         stdout=out, stderr=asyncio.subprocess.STDOUT)
        out.close()
        proc = self.proc
        try:
            await self.standin.wait_for(lambda: self.standin.identifies > identifies or proc.returncode is not None,
                                        timeout=60)
        except TimeoutError:
            raise AssertionError(f"the bot did not connect:\n{self.log(self.starts)}") from None
        assert proc.returncode is None, f"the bot stopped at start:\n{self.log(self.starts)}"
        if self.starts == 1:
            await self.standin.wait_for_commands("start", "act", "roll", "tokens", timeout=30)

    def log(self, n: int) -> str:
        return (self.root / f"bot-{n}.log").read_text(errors="replace")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.proc = None

    async def stop(self) -> None:
        if self.proc is not None:
            await interrupt(self.proc)
        self.proc = None

    async def close(self) -> None:
        await self.stop()
        await self.standin.stop()

    # -- commands --------------------------------------------------------------------------------------------
    async def act(self, channel: int, user: int, round_no: int) -> Turn:
        self.counter += 1
        key = f"I try door number {self.counter}!"  # "…number 1!" is not part of "…number 10!"
        inter = await self.standin.invoke("act", {"action": key}, channel_id=channel, user_id=user)
        turn = Turn("act", key, inter, round_no)
        self.turns.append(turn)
        return turn

    async def roll(self, channel: int, user: int, round_no: int) -> Turn:
        self.counter += 1
        key = f"check-{self.counter}-"  # delimited: "check-1-" is not part of "check-10-"
        inter = await self.standin.invoke("roll", {"dice": "1d20+2", "reason": key}, channel_id=channel,
                                          user_id=user)
        turn = Turn("roll", key, inter, round_no)
        self.turns.append(turn)
        return turn

    async def command(self, name: str, options: dict[str, Any], channel: int, user: int,
                      timeout: float = 30.0) -> list[Any]:
        """Run a command to its end and return what its user sees."""
        inter = await self.standin.invoke(name, options, channel_id=channel, user_id=user)
        return await self.finished(inter, timeout)

    async def finished(self, inter: Any, timeout: float = 30.0) -> list[Any]:
        return await self.standin.wait_for(lambda: settled(self.standin, inter), timeout)

    def shown_complete(self, turn: Turn) -> str | None:
        """The answer text if the channel shows this turn as finished (no thinking…, no cursor, no note)."""
        shown = [m for m in seen(self.standin, turn.inter) if not m.ephemeral]
        if not shown or any(m.loading or m.content.endswith(CURSOR) or INTERRUPTED in m.content for m in shown):
            return None
        return "\n".join(m.content for m in shown)

    # -- the audit ---------------------------------------------------------------------------------------------
    def audit(self) -> dict[str, int]:
        rows = turns(self.database)
        assert not [t for t in rows if t.status == "pending"], "a turn was left pending after the restart"
        assert not [t for t in rows if t.status == "failed"], "no fault was injected: nothing should fail"

        # Each action and each roll at most once.
        players = Counter(t.content for t in rows if t.role == "player")
        assert not [k for k, n in players.items() if n > 1], f"an action was stored twice: {players.most_common(3)}"
        rolls = [t for t in rows if t.role == "roll"]
        for key in (tr.key for tr in self.turns if tr.kind == "roll"):
            assert sum(key in t.content for t in rolls) <= 1, f"the roll {key!r} was stored twice"

        # Complete turns alternate: opening, then (action, answer)*; player rolls may sit anywhere.
        by_session: dict[int, list] = {}
        for t in rows:
            by_session.setdefault(t.session_id, []).append(t)
        answer_of: dict[str, str] = {}
        for session_rows in by_session.values():
            story = [t for t in session_rows if t.status == "complete" and t.role != "roll"]
            assert story and story[0].role == "dm", "the opening is the first complete turn"
            for before, after in zip(story[1::2], story[2::2]):
                assert (before.role, after.role) == ("player", "dm"), f"half a turn stored: {before} {after}"
                answer_of[before.content] = after.content
            assert len(story) % 2 == 1, f"an action was stored complete without its answer: {story[-1]}"
            cut = [t for t in session_rows if t.status == "interrupted"]
            assert all(t.role == "player" for t in cut), "only actions are ever marked interrupted"

        # What the channel showed as finished is stored, with that very text.
        shown_done = committed_unshown = 0
        for turn in self.turns:
            if turn.kind != "act":
                continue
            text = self.shown_complete(turn)
            if text is not None:
                shown_done += 1
                assert answer_of.get(turn.key) == text, f"{turn.key!r} was shown finished but is not stored as shown"
            elif turn.key in answer_of:
                committed_unshown += 1  # stored, and the kill came before the last edit reached Discord

        # No action went to the model twice (a restart must not replay one): each is the newest user text of at
        # most one request.
        newest = [_newest_user_text(r.body) for r in self.llmock.requests]
        asked = Counter(t.key for t in self.turns if t.kind == "act" for text in newest if t.key in text)
        assert not [k for k, n in asked.items() if n > 1], f"an action was sent to the model twice: {asked}"
        assert all(asked[t.key] == 1 for t in self.turns if t.key in answer_of), "an answered action was never asked"

        # The ledger: one row per call of a stored turn (one call per turn here), nothing for cut turns.
        stored_dm = {t.id for t in rows if t.role == "dm" and t.status == "complete"}
        ledger = usage_rows(self.database)
        assert Counter(turn_id for _, turn_id, _ in ledger) == Counter(stored_dm), "ledger rows ≠ stored answers"
        assert all(total > 0 for *_, total in ledger)
        return {
            "actions sent": sum(1 for t in self.turns if t.kind == "act"),
            "answers stored": len(answer_of),
            "shown finished": shown_done,
            "stored, last edit cut": committed_unshown,
            "interrupted": sum(1 for t in rows if t.status == "interrupted"),
            "never reached the store": sum(1 for t in self.turns if t.kind == "act"
                                           and t.key not in {r.content for r in rows if r.role == "player"}),
            "ledger rows": len(ledger),
            "ledger tokens": sum(total for *_, total in ledger),
        }

    def reported_cut(self) -> int:
        """What the restarted bots logged as cut turns, in all."""
        total = 0
        for n in range(1, self.starts + 1):
            total += sum(int(x) for x in re.findall(r"(\d+) turns were cut by the last stop", self.log(n)))
        return total

    def tracebacks(self) -> list[str]:
        return [self.log(n) for n in range(1, self.starts + 1) if "Traceback" in self.log(n)]


def _newest_user_text(body: Any) -> str:
    """The last user message of an OpenAI or Anthropic request body, as text."""
    messages = [m for m in (body or {}).get("messages", []) if m.get("role") == "user"]
    if not messages:
        return ""
    content = messages[-1].get("content")
    if isinstance(content, str):
        return content
    return "\n".join(block.get("text", "") for block in content or [] if isinstance(block, dict))
