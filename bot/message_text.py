"""Where a long message may be cut: Discord code fences and the boundaries a split prefers.

Used by the MessageStreamer to split at 2000 characters without ever breaking a ``` marker or its language line.
"""

from __future__ import annotations

import re

FENCE = "```"
LANG = re.compile(r"[A-Za-z0-9_+\-.#]{0,20}")  # a code block's language tag, as Discord reads it
# Split preferences, best first; each match ends where the next message may start. (regex, min fill fraction)
BOUNDARIES = (
    (re.compile(r"\n\n"), 0.5),  # paragraph
    (re.compile(r"\n"), 0.5),  # line: inside code blocks this is the natural boundary
    (re.compile(r"[.!?…][\"'”’)\]*_]*\s"), 0.5),  # sentence
    (re.compile(r"\s"), 0.0),  # word
)


def scan_fences(text: str, start: int, stop: int, inside: bool, lang: str) -> tuple[bool, str, list[tuple[int, int]]]:
    """Fence state after text[start:stop], given the state at start, plus the zones (a, b) where a cut at a < p < b
    would break a marker: inside a ``` or inside an opening "```lang\\n" line.

    Every ``` toggles, like Discord's parser (a fence may open mid-line)."""
    zones = []
    i = start
    while (q := text.find(FENCE, i, stop)) != -1:
        i = q + 3
        zone_end = q + 3
        if not inside:
            run = LANG.match(text, i).group()
            after = i + len(run)
            lang = ""
            if after < len(text) and text[after] == "\n":
                lang, zone_end = run, after + 2  # no cut between the fence and its language line
            elif after >= len(text):
                zone_end = len(text) + 1  # language line not complete yet: no cut after the fence at all
        inside = not inside
        zones.append((q, zone_end))
    return inside, (lang if inside else ""), zones


def safe_cut(p: int, zones: list[tuple[int, int]]) -> bool:
    return all(not (a < p < b) for a, b in zones)
