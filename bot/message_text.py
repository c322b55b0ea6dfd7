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


def split_text(text: str, limit: int = 2000, *, max_parts: int = 5, note: str = "\n*(trimmed)*") -> list[str]:
    """Cut ``text`` into messages of at most ``limit`` characters at the best boundary (paragraph, line,
    sentence, word; never inside a code-fence marker). Past ``max_parts`` messages the last one is trimmed and
    ends with ``note``. For whole texts known in advance (the streamer splits as it streams)."""
    parts: list[str] = []
    rest = text.strip()
    while rest:
        if len(rest) <= limit:
            parts.append(rest)
            break
        if len(parts) == max_parts - 1:
            parts.append(_cut(rest, limit - len(note)).rstrip() + note)
            break
        head = _cut(rest, limit)
        parts.append(head.rstrip())
        rest = rest[len(head):].strip()
    return parts


def _cut(text: str, limit: int) -> str:
    """The longest head of ``text`` within ``limit`` that ends at the best boundary available."""
    window = text[:limit]
    _, _, zones = scan_fences(text, 0, limit, False, "")
    for rx, fill in BOUNDARIES:
        ends = [m.end() for m in rx.finditer(window) if m.end() >= limit * fill and safe_cut(m.end(), zones)]
        if ends:
            return window[:ends[-1]]
    return window
