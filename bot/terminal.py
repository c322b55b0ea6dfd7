"""``dungeon-master play``: an adventure in the terminal, on the same DMService as the Discord bot.

It is the second face that proves the DM service knows nothing of Discord: it reads lines, calls the
service, and prints the events as they come. The session lives in the same database, in a channel of its own,
so quitting and playing again continues the story.
"""

from __future__ import annotations

import asyncio
import getpass
import shlex
import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

from bot.config import Config
from bot.dm.dice import DiceError
from bot.dm.memory import recap_text
from bot.dm.service import RollRefused
from bot.dm.events import DMEvent, Done, Failed, Reset, Retrying, RollMade, StateChanged, TextDelta
from bot.dm.rules.render import sheet
from bot.dm.rules.text import RuleError
from bot.dm.service import DMService
from bot.engine import dm_engine
from bot.llm.base import LLMProvider
from bot.store.base import Channel, Player

CHANNEL = Channel(None, "terminal")
HELP = """Type what your character does, or a command:
  /roll <dice> [adv|dis] [reason]   roll dice, e.g. /roll 1d20+5 adv stealth   (the DM sees the result)
  /character <name> [role=… description=… max_hp=1-999 ac=1-40 initiative_bonus=-10-20]
                                    create or update your character, e.g. /character Thessaly max_hp=12 ac=14
  /party                            every character: HP, AC, conditions
  /combat                           the combat: round, initiative order, HP, whose turn
  /tokens                           what this adventure has used of its budget
  /recap                            the story so far: summary, pinned facts, last turns
  /remember <fact>                  pin a fact the DM always keeps in mind (/recap shows the numbers)
  /forget <number>                  unpin fact number <number>
  /end                              end the adventure (the next /start or line begins a new one)
  /help                             this text
  /quit                             leave (the adventure is kept; play again to continue)"""

ReadLine = Callable[[str], Awaitable[str | None]]


async def read_stdin(prompt: str) -> str | None:
    """A line from the terminal without blocking the event loop; None at end of input."""
    try:
        return await asyncio.to_thread(input, prompt)
    except EOFError:
        return None


class TerminalPlayer:
    def __init__(self, service: DMService, read: ReadLine, out: TextIO, name: str) -> None:
        self.service = service
        self.read = read
        self.out = out
        self.player = Player(f"local:{name}", name)

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    async def show(self, events) -> None:
        """Print a turn's events as they arrive: narration streams, rolls get their own line."""
        shown = False
        async for event in events:
            await self.render(event, shown)
            shown = shown or isinstance(event, TextDelta)

    async def render(self, event: DMEvent, shown: bool) -> None:
        if isinstance(event, TextDelta):
            self.out.write(event.text)
            self.out.flush()
        elif isinstance(event, Reset):
            self.say("\n[the DM lost the thread and starts that part over]")
        elif isinstance(event, Retrying):
            self.say(f"\n[{event.reason}; trying again ({event.attempt}/{event.attempts})…]")
        elif isinstance(event, RollMade):
            self.say(f"\n  🎲 {event.roll.summary(event.for_whom)}")
        elif isinstance(event, StateChanged):
            self.say(f"\n  {event.line}")
        elif isinstance(event, Done):
            self.say("\n")
        elif isinstance(event, Failed):
            self.say(f"\n! {event.message}" if shown else f"! {event.message}")

    async def tokens(self) -> None:
        view = await self.service.usage(CHANNEL)
        if view is None:
            self.say("No adventure is running.")
            return
        cost = f"${view.totals.cost_usd:.4f}" + ("" if view.totals.cost_complete else " (some prices unknown)")
        self.say(f"Tokens: {view.used:,} used of {view.limit:,} ({view.remaining:,} left) over {view.turns} turns; "
                 f"estimated cost {cost}.")

    async def roll(self, args: str) -> None:
        words = args.split()
        if not words:
            self.say("! Say which dice to roll, e.g. /roll 1d20+5")
            return
        notation, rest = words[0], words[1:]
        advantage = rest.pop(0) if rest and rest[0].lower() in ("adv", "dis", "advantage", "disadvantage") else None
        try:
            outcome = await self.service.roll(CHANNEL, self.player, notation, advantage=advantage,
                                              reason=" ".join(rest) or None)
        except (DiceError, RollRefused) as error:
            self.say(f"! {error}")
            return
        self.say(f"🎲 {outcome.result.summary(self.player.name)}")

    async def character(self, args: str) -> None:
        """/character Name [key=value …]: the same options as Discord's /character."""
        try:
            words = shlex.split(args)
        except ValueError as error:
            self.say(f"! {error}")
            return
        fields: dict[str, object] = {}
        names = []
        for word in words:
            field, eq, value = word.partition("=")
            if not eq:
                names.append(word)
            elif field in ("max_hp", "ac", "initiative_bonus"):
                try:
                    fields[field] = int(value)
                except ValueError:
                    self.say(f"! {field} must be a whole number.")
                    return
            elif field in ("name", "role", "description"):
                fields[field] = value
            else:
                self.say(f"! Unknown option {field}: use role, description, max_hp, ac or initiative_bonus.")
                return
        fields.setdefault("name", " ".join(names))
        try:
            made = await self.service.party.character(CHANNEL, self.player, **fields)
        except RuleError as error:
            self.say(f"! {error}")
            return
        self.say(sheet(made).replace("**", "").replace("*", ""))

    async def party_view(self, what: str) -> None:
        try:
            text = await (self.service.party.party_text(CHANNEL) if what == "party"
                          else self.service.party.combat_text(CHANNEL))
        except RuleError as error:
            text = f"! {error}"
        self.say(text.replace("**", "").replace("`", ""))

    async def recap(self) -> None:
        recap = await self.service.memory.recap(CHANNEL)
        self.say(recap_text(recap, markdown=False) if recap else "No adventure is running.")

    async def remember(self, fact: str) -> None:
        _, message = await self.service.memory.remember(CHANNEL, self.player, fact)
        self.say(message)

    async def forget(self, number: str) -> None:
        if not number.strip().isdigit():
            self.say("! Say which fact to unpin by its number, e.g. /forget 2 (/recap lists them).")
            return
        _, message = await self.service.memory.forget(CHANNEL, self.player, int(number), can_manage=True)
        self.say(message)

    async def begin(self) -> bool:
        view = await self.service.usage(CHANNEL)
        if view is not None:
            self.say(f"Continuing your adventure: {view.session.premise or '(a surprise premise)'}. /help for commands.")
            return True
        premise = await self.read("Premise for a new adventure (Enter for a surprise): ")
        if premise is None:
            return False
        self.say()
        await self.show(self.service.start(CHANNEL, self.player, premise))
        return True

    async def run(self) -> int:
        self.say("Dungeon Master, terminal edition. /help lists the commands, /quit leaves.\n")
        if not await self.begin():
            return 0
        while True:
            line = await self.read("> ")
            if line is None or line.strip() in ("/quit", "/exit"):
                self.say("Farewell! Your adventure is saved.")
                return 0
            command, _, args = line.strip().partition(" ")
            if not line.strip():
                continue
            if command == "/help":
                self.say(HELP)
            elif command == "/tokens":
                await self.tokens()
            elif command == "/roll":
                await self.roll(args)
            elif command == "/character":
                await self.character(args)
            elif command in ("/party", "/combat"):
                await self.party_view(command[1:])
            elif command == "/recap":
                await self.recap()
            elif command == "/remember":
                await self.remember(args)
            elif command == "/forget":
                await self.forget(args)
            elif command == "/end":
                _, message = await self.service.end(CHANNEL, self.player, can_manage=True)
                self.say(message)
                if not await self.begin():
                    return 0
            elif command.startswith("/"):
                self.say(f"! Unknown command {command}. /help lists them.")
            else:
                if await self.service.usage(CHANNEL) is None and not await self.begin():
                    return 0
                self.say()
                await self.show(self.service.act(CHANNEL, self.player, line))


async def play(config: Config, *, read: ReadLine = read_stdin, out: TextIO = sys.stdout,
               provider: LLMProvider | None = None, name: str | None = None) -> int:
    async with dm_engine(config, provider=provider) as service:
        return await TerminalPlayer(service, read, out, name or getpass.getuser()).run()
