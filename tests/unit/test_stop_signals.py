"""SIGTERM stops the bot even when the first cancellation of its main task is lost (bot/stop_signals.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from bot.stop_signals import stop_on_signals


async def test_a_lost_cancellation_is_retried_until_the_orderly_stop_begins():
    closing = asyncio.Event()

    async def main() -> None:
        # What Python 3.11's asyncio.wait_for does when the cancellation lands as its future completes: the
        # CancelledError never reaches the caller, and the task goes on as if nothing had happened.
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            pass  # swallowed, like wait_for's `return fut.result()`
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            closing.set()  # the second cancellation gets through: close() runs
            await asyncio.sleep(0.6)  # and is not cancelled again while it runs
            return

    task = asyncio.ensure_future(main())
    remove = stop_on_signals(task, closing.is_set)
    try:
        await asyncio.sleep(0)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 5)
    finally:
        remove()
    assert closing.is_set() and not task.cancelled()


def test_a_second_signal_stops_at_once():
    """A main task that never stops (no orderly stop begins): the second SIGTERM ends the process at once, as a
    KeyboardInterrupt out of the loop (discord.py's Client.run catches it and returns)."""
    script = textwrap.dedent("""
        import asyncio, os, signal
        from bot.stop_signals import stop_on_signals

        async def main():
            stop_on_signals(asyncio.current_task(), lambda: False)
            os.kill(os.getpid(), signal.SIGTERM)
            while True:  # swallows every cancellation
                try:
                    await asyncio.sleep(0.2)
                except asyncio.CancelledError:
                    print("cancelled", flush=True)
                    os.kill(os.getpid(), signal.SIGTERM)

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            print("stopped at once", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).parents[2])
    lines = done.stdout.splitlines()  # (asyncio.run's own clean-up cancels the task once more on the way out)
    assert lines[0] == "cancelled" and lines[-1] == "stopped at once", (lines, done.stderr)
    assert "SIGTERM again: stopping now" in done.stderr
