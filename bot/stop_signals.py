"""SIGTERM (`docker stop`) and SIGINT (Ctrl-C) stop the bot in order, even when a cancellation is lost.

The orderly stop is the main task's: cancelling it makes discord.py's ``async with client`` run ``close()``
(turns in flight end cleanly, the store closes). asyncio's own Ctrl-C handling cancels the main task once, but on
Python 3.11 ``asyncio.wait_for`` returns its result instead of raising when the cancellation lands just as the
awaited future completes (discord.py reads the gateway that way), so a single SIGTERM could leave the bot running
until the container runtime's kill. Here the main task is cancelled again every ``RETRY_SECONDS`` until
``close()`` has begun; a second signal stops at once (KeyboardInterrupt, as a second Ctrl-C always did).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.5
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(main: asyncio.Task[object], closing: Callable[[], bool]) -> Callable[[], None]:
    """Install the handlers on the running loop; ``closing()`` is true once the orderly stop has begun.
    Returns the function that removes them (tests; the loop's close removes them too)."""
    loop = asyncio.get_running_loop()
    signals = 0

    def cancel_until_closing() -> None:
        if closing() or main.done():
            return
        main.cancel()
        loop.call_later(RETRY_SECONDS, cancel_until_closing)

    def on_signal(name: str) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("%s again: stopping now", name)
            raise KeyboardInterrupt
        log.info("%s: stopping (a second one stops at once)", name)
        cancel_until_closing()

    for sig in SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig.name)

    def remove() -> None:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)

    return remove
