"""Which turns go to the model, and how they are shaped into messages.

The window holds at most ``history_messages`` turns, read from the store on every turn (so a restart simply
continues the story). Its start does not slide by one turn each time: it moves in steps of half the window.
Between two steps every request begins with exactly the same messages as the one before, which is what
prompt caching (Anthropic's ``cache_control``, OpenAI's automatic prefix cache) needs to bill most of the
history at the cached rate. A window sliding by one would change the prefix, and miss the cache, every turn.
"""

from __future__ import annotations

from bot.dm.prompts import OMITTED_NOTE, dice_line, opening_request, player_line
from bot.llm.base import Message
from bot.store.base import Session, Turn


def window_start(total: int, size: int) -> int:
    """Index of the first of ``total`` turns to send: a multiple of ``size // 2``, keeping at most ``size``
    turns (and more than ``size - size // 2``)."""
    if total <= size:
        return 0
    step = max(1, size // 2)
    return -(-(total - size) // step) * step  # ceil((total - size) / step) * step


def sliding_window_start(total: int, size: int) -> int:
    """The naive policy (the last ``size`` turns, moving by one each turn): kept for the cost benchmark."""
    return max(0, total - size)


def turn_message(turn: Turn) -> Message:
    if turn.role == "dm":
        return Message("assistant", turn.content)
    if turn.role == "roll":
        return Message("user", dice_line(turn.content))
    name = turn.author.name if turn.author else "A player"
    return Message("user", player_line(name, turn.content))


def build_messages(session: Session, turns: list[Turn], *, omitted: bool) -> list[Message]:
    """The conversation for the model: the opening request (with the premise) first, then the turns.

    Consecutive messages of one role are merged (both providers want user and assistant to alternate; several
    players, or a roll and an action, often come one after another). An empty answer is no message: databases
    of older versions may hold one, and the providers drop it, which would leave two user messages in a row.
    """
    opening = opening_request(session.started_by.name, session.premise)
    messages = [Message("user", f"{opening}\n\n{OMITTED_NOTE}" if omitted else opening)]
    for turn in turns:
        if turn.role == "dm" and not turn.content.strip():
            continue
        message = turn_message(turn)
        last = messages[-1]
        if last.role == message.role and not last.tool_calls and not last.tool_results:
            messages[-1] = Message(last.role, f"{last.text}\n\n{message.text}")
        else:
            messages.append(message)
    return messages
