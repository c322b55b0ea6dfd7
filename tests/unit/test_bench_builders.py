"""The benchmarks' stand-ins for older versions of the bot follow the DM service's interfaces: bench figure 7's
round-1 request builder replaces ``CampaignMemory.request``, and twice a new argument of it broke ``make bench``
only (which the suite does not run)."""

from __future__ import annotations

from bench.memory import campaign


async def test_figure_7_campaigns_run_a_few_turns_each_way():
    for variant in ("ours", "round 1", "everything"):
        run = await campaign(variant, turns=6)
        assert len(run.per_turn) == 6 and all(tokens > 0 for tokens in run.per_turn), (variant, run.per_turn)
