"""``python -m bench.bot_naive [--config PATH] run``: the product bot with one change, for figure 1's comparison
only: its streamer paces each message by ``edit_interval_seconds`` alone and sends the final edit at once,
without the rate-limit state Discord reports (the "naive" streamer of issue 13)."""

from __future__ import annotations

import sys
from typing import Any

import bot.discord_turn
from bot.cli import main
from bot.discord_stream import MessageStreamer


class NaiveStreamer(MessageStreamer):
    def __init__(self, sink: Any, **kw: Any) -> None:
        kw.update(pacer=None, min_edit_interval=0.0)  # no buckets; no floor before the final edit
        super().__init__(sink, **kw)


bot.discord_turn.MessageStreamer = NaiveStreamer  # type: ignore[misc]

if __name__ == "__main__":
    sys.exit(main())
