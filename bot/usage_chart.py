"""The /usage chart: tokens per day of this month as a bar chart, drawn with Pillow into a PNG.

Pillow rather than a plotting library: one dependency that starts fast and draws without a display or a
browser. Every day up to today gets a bar; a day with no tokens gets a short grey stub, so the chart shows one
bar per day and a quiet day reads as quiet, not as missing.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 800, 320
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 40  # margins around the plot area
BACKGROUND = (43, 45, 49)  # Discord's dark theme, so the picture sits well in the client
AXIS = (148, 155, 164)
TEXT = (219, 222, 225)
BAR = (88, 101, 242)
STUB = (98, 104, 112)  # a day without tokens
STUB_HEIGHT = 2


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # a Pillow built without FreeType: its small bitmap font
        return ImageFont.load_default()


def _short(tokens: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if tokens >= size:
            return f"{tokens / size:.1f}".rstrip("0").rstrip(".") + unit
    return str(tokens)


def _nice(value: int) -> int:
    """The smallest 1, 2, 2.5 or 5 × 10^n at least ``value``: round numbers on the grid lines."""
    scale = 1
    while True:
        for step in (1, 2, 2.5, 5):
            if step * scale >= value:
                return int(step * scale)
        scale *= 10


def daily_tokens_png(daily: list[int], title: str) -> bytes:
    """A PNG with one bar per entry of ``daily`` (day 1 first)."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    small, big = _font(12), _font(16)
    draw.text((LEFT, 12), title, fill=TEXT, font=big)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM  # y1 is the baseline
    peak = _nice(max(daily, default=0) or 1)
    for fraction in (0.5, 1.0):  # two grid lines with their values
        y = y1 - round((y1 - y0) * fraction)
        draw.line([(x0, y), (x1, y)], fill=(60, 63, 69))
        label = _short(round(peak * fraction))
        draw.text((x0 - 8 - draw.textlength(label, font=small), y - 7), label, fill=AXIS, font=small)
    days = max(1, len(daily))
    slot = (x1 - x0) / days
    width = max(1, min(int(slot * 0.7), int(slot) - 1))
    for index, tokens in enumerate(daily):
        left = round(x0 + index * slot + (slot - width) / 2)
        if tokens > 0:
            height = max(STUB_HEIGHT + 1, round((y1 - y0) * tokens / peak))
            draw.rectangle([left, y1 - height, left + width - 1, y1 - 1], fill=BAR)
        else:
            draw.rectangle([left, y1 - STUB_HEIGHT, left + width - 1, y1 - 1], fill=STUB)
        day = index + 1
        if day == 1 or day % 5 == 0 or day == len(daily):
            label = str(day)
            draw.text((left + width / 2 - draw.textlength(label, font=small) / 2, y1 + 6), label, fill=AXIS,
                      font=small)
    draw.line([(x0, y1), (x1, y1)], fill=AXIS)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


if __name__ == "__main__":  # the README's picture: `python -m bot.usage_chart docs/usage-chart.png`
    import random
    import sys

    rng = random.Random(7)
    sample = [0 if day in (3, 9) else int((180_000 if (day + 1) % 7 in (5, 6) else 40_000) * rng.uniform(0.5, 1.4))
              for day in range(1, 19)]
    with open(sys.argv[1] if len(sys.argv) > 1 else "usage-chart.png", "wb") as file:
        file.write(daily_tokens_png(sample, "Tokens per day, December 2026 (UTC)"))
