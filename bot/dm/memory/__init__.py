"""Campaign memory: the running summary, pinned facts, /recap, and every narration request assembled within
``[memory] max_prompt_tokens``. ``CampaignMemory`` (keeper.py) is the one owner; ``context`` decides what a
request holds and in which order, ``summary`` is the summarizer's prompt, ``recap`` what /recap shows."""

from bot.dm.memory.keeper import MAX_PIN_CHARS, MAX_PINS, CampaignMemory
from bot.dm.memory.recap import Recap, recap_text

__all__ = ["CampaignMemory", "MAX_PINS", "MAX_PIN_CHARS", "Recap", "recap_text"]
