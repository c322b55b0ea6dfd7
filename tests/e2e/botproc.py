"""`python -m bot run` as a subprocess against the Discord stand-in: start it, read its log as it runs, stop it
with SIGINT, and wait until an interaction's answer is final. Shared by the secrets and load tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CURSOR = "▌"


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any real secret or DM_ override, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DM_", "DISCORD_", "ANTHROPIC_", "OPENAI_"))}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def config_text(standin: Any, *, provider: str, base_url: str, model: str, database: str = "game.db",
                edit_interval: float = 0.5, extra: str = "") -> str:
    return f"""
[discord]
api_base_url = "{standin.api_base_url}"
gateway_url = "{standin.gateway_url}"
edit_interval_seconds = {edit_interval}

[llm]
provider = "{provider}"
model = "{model}"
base_url = "{base_url}"
timeout_seconds = 10

[retry]
initial_backoff_seconds = 0.05
max_backoff_seconds = 0.2

[database]
url = "sqlite:///{database}"
{extra}
"""


async def interrupt(proc: asyncio.subprocess.Process, timeout: float = 15.0) -> None:
    """SIGINT (what Ctrl-C does; the bot handles SIGTERM the same way), then SIGKILL if it has not ended."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@dataclass
class BotProcess:
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace"))

    async def stop(self, timeout: float = 20.0) -> str:
        """SIGINT (what Ctrl-C and `docker stop` with STOPSIGNAL do), then the whole output."""
        await interrupt(self.proc, timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 10)
        return self.output


async def start_bot(cwd: Path, env: dict[str, str], *args: str) -> BotProcess:
    """``python -m bot run`` (or other ``args``) in ``cwd``, stdout and stderr together."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", *(args or ("run",)), cwd=cwd, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    bot = BotProcess(proc)
    bot._reader = asyncio.create_task(bot._read())
    return bot


def final_messages(standin: Any, inter: Any) -> list[Any] | None:
    """The interaction's messages once its answer is final (no "thinking…", no cursor), else None."""
    seen = [m for m in standin.messages(inter.channel_id, viewer_id=inter.user_id)
            if m.id == inter.original_id or m.id in inter.followup_ids]
    final = [m for m in seen if not m.deleted and not m.loading and not m.content.endswith(CURSOR)]
    return final if final and len(final) == len([m for m in seen if not m.deleted]) else None


async def settled(standin: Any, inter: Any, timeout: float = 20.0) -> list[Any]:
    return await standin.wait_for(lambda: final_messages(standin, inter), timeout)
