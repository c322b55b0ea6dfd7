"""Hostile /remember facts through the real bot and the Discord stand-in (Hypothesis, like
tests/discord/test_hostile_input.py): whatever the text, no crash, no ping, nothing over 2000 characters, a
refusal is one short private message, and a pinned fact reaches the model only as the player's own line."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bot.dm.memory.context import PINS_HEADER
from bot.dm.prompts import player_line
from tests.discord.conftest import GENERAL
from tests.discord.hostile import check_outcome, check_standin, hostile_text, interaction_messages
from tests.discord.test_hostile_input import FUZZ, expect_no_new_logs, shared_bot

MAX_PIN = 300


@FUZZ
@given(fact=hostile_text(), public=st.booleans())
async def test_fuzzed_facts_are_pinned_or_refused_and_recap_always_fits(make_dm_bot, fact, public):
    h = await shared_bot(make_dm_bot)
    if await h.bot.store.active_session(str(GENERAL)) is None:
        check_outcome(h, await h.run("start"))
    logs, requests = len(h.log.records), len(h.standin.requests)
    session = await h.bot.store.active_session(str(GENERAL))
    if len(await h.bot.store.pins(session.id)) >= 20:
        for pin in await h.bot.store.pins(session.id):
            check_outcome(h, await h.run("forget", {"number": pin.number}))

    outcome = check_outcome(h, await h.run("remember", {"fact": fact}), since_request=requests)
    folded = " ".join(fact.split())
    if not folded:
        assert "remember" in outcome.refusal
    elif len(folded) > MAX_PIN:
        assert f"the limit is {MAX_PIN}" in outcome.refusal
    else:
        assert outcome.public and "Pinned fact #" in outcome.text
        check_outcome(h, await h.run("act", {"action": "I look around."}))
        number = int(outcome.text.split("Pinned fact #", 1)[1].split(":", 1)[0])
        sent = next(r for r in reversed(h.provider.requests) if not r.system.startswith("You keep"))
        [pins] = [m.text for m in sent.messages if m.text.startswith(PINS_HEADER)]
        [pin] = [p for p in await h.bot.store.pins(session.id) if p.number == number]
        assert pin.text == folded
        assert f"#{number} {player_line(pin.author.name, fact)}" in pins.splitlines()  # one line, under its author
    recap = await h.run("recap", {"public": public})
    if public:
        check_outcome(h, recap)
    else:  # a private recap may take several messages: the same rules, message by message
        shown = [m for m in interaction_messages(h, recap) if not m.deleted]
        assert shown and all(m.ephemeral and m.content.strip() and not m.loading for m in shown)
        assert all(len(r.content) <= 2000 for m in shown for r in m.history)
        assert all(m.allowed_mentions is not None and not m.allowed_mentions.get("parse") for m in shown)
        assert not any(m.pinged_everyone or m.pinged_users or m.pinged_roles for m in shown)
        check_standin(h)
    expect_no_new_logs(h, logs)
