"""Streaming at Discord's pace, through the real client: discord.py's answers feed the bot's RateLimitBook (an
aiohttp trace on its session), the streamer paces by the bucket the stand-in reports, and the DM turn does not
wait for the deferral."""

from __future__ import annotations

import itertools

from tests.discord.conftest import APP_ID, BOT_ID, TOKEN, guild_spec
from tests.discord.test_discord_faults import (
    CURSOR,
    PacedProvider,
    assert_nothing_stuck,
    invoke,
    live,
    narration,
    wait_done,
)
from tests.standin import DiscordStandIn, Limits

WEBHOOK_PATCH = "/webhooks/{webhook_id}/{webhook_token}/messages/@original"


async def test_edits_follow_the_token_bucket_discord_reports_without_a_429(make_dm_bot):
    standin = await DiscordStandIn(application_id=APP_ID, bot_user_id=BOT_ID, bot_token=TOKEN, guilds=[guild_spec()],
                                   limits=Limits(interaction=(5, 2.0)), ratelimit_headers=True).start()
    text = narration(60)
    # A slow fallback pace: one edit a second would be all the bot makes if it did not read the headers.
    h = await make_dm_bot(PacedProvider(text, pause=0.05), standin=standin,
                          discord={"edit_interval_seconds": 1.0, "min_edit_interval_seconds": 0.25})
    await h.run("start")

    inter = await h.run("act", {"action": "I climb"}, timeout=20)

    [answer] = [m for m in h.visible(inter) if not m.deleted]
    assert answer.content == text
    assert sum(standin.ratelimited.values()) == 0
    bucket = h.bot.ratelimits.bucket(("PATCH", f"/webhooks/{APP_ID}/{inter.token}/messages/@original"))
    assert bucket is not None and bucket.limit == 5  # learnt from the stand-in's X-RateLimit headers
    edits = [r.time for r in standin.requests
             if r.route == WEBHOOK_PATCH and inter.token in r.path and r.status == 200
             and str((r.body or {}).get("content", "")).endswith(CURSOR)]
    assert len(edits) >= 3
    # paced by the bucket (about one edit per 0.5 s), not by the 1 s fallback interval
    assert min(b - a for a, b in itertools.pairwise(edits)) < 0.9
    assert_nothing_stuck(h)


async def test_an_acknowledgement_that_fails_still_shows_the_answer_in_the_channel(make_dm_bot):
    """The turn runs beside the deferral. If the deferral fails (here: the interaction is unknown by the time it
    arrives), the token can edit nothing: the answer goes to the channel instead of being lost."""
    text = narration(20)
    h = await make_dm_bot(PacedProvider(text, pause=0.01))
    await h.run("start")
    inter, done = await invoke(h, "act", {"action": "I knock"})
    h.standin.expire_interaction(inter)  # before the bot has answered the callback
    await wait_done(done)

    posted = [m for m in live(h) if m.interaction_id is None and m.author_id == BOT_ID]
    assert [m.content for m in posted] == [text]
    assert len(h.provider.requests) == 2  # the opening and this turn: the LLM was asked all the same
