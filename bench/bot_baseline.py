"""``python -m bench.bot_baseline [--config PATH] run``: the product bot with one change, for figure 5 only:
``bot.discord_turn`` streams through ``bench.baseline_streamer.GlobalThrottleStreamer`` (one global 1-second
edit throttle shared by all channels) instead of the product's per-message ``MessageStreamer``."""

from __future__ import annotations

import sys

import bot.discord_turn
from bench.baseline_streamer import GlobalThrottleStreamer
from bot.cli import main

bot.discord_turn.MessageStreamer = GlobalThrottleStreamer  # type: ignore[misc, assignment]

if __name__ == "__main__":
    sys.exit(main())
