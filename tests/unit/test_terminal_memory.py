"""`dungeon-master play` has /recap, /remember and /forget (the terminal face, in process, scripted model)."""

from __future__ import annotations

import io

from bot.terminal import play
from tests.fakes import ScriptedProvider, reply
from tests.unit.conftest import make_config


async def test_terminal_recap_remember_and_forget(tmp_path):
    lines = iter(["a lighthouse", "/remember The keeper's name is Ilse.", "/recap", "I climb the stairs",
                  "/forget x", "/forget 1", "/forget 1", "/recap", "/help", "/quit"])

    async def read(prompt: str) -> str | None:
        return next(lines, None)

    provider = ScriptedProvider(reply("The lamp is dark."), default=lambda r: reply("Wind howls."))
    out = io.StringIO()
    config = make_config(database={"url": f"sqlite:///{tmp_path}/game.db"})
    assert await play(config, read=read, out=out, provider=provider, name="ilse") == 0
    text = out.getvalue()
    assert "Pinned fact #1" in text
    assert "#1 The keeper's name is Ilse. — ilse" in text  # /recap lists it with its number
    assert "#1 ilse: The keeper's name is Ilse." in provider.requests[1].messages[1].text  # the DM sees it
    assert "Say which fact to unpin by its number" in text
    assert "Fact #1 is no longer pinned." in text and "There is no pinned fact #1" in text
    assert "Pinned facts: none yet" in text and "**" not in text
    assert "/remember <fact>" in text
