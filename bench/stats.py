"""Percentiles, figures with units, and the table printed at the end."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


@dataclass
class Figure:
    key: str
    value: float
    unit: str
    label: str
    target: str = ""  # e.g. "≤ 50"
    ok: bool | None = None  # target met?
    note: str = ""


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    sections: list[tuple[str, int]] = field(default_factory=list)  # (title, index of its first figure)
    extra: dict[str, Any] = field(default_factory=dict)

    def section(self, title: str) -> None:
        self.sections.append((title, len(self.figures)))

    def add(self, key: str, value: float, unit: str, label: str, *, target: float | None = None,
            below: bool = True, note: str = "") -> Figure:
        ok = None
        shown = ""
        if target is not None and not math.isnan(value):
            ok = value <= target if below else value >= target
            shown = "= 0" if target == 0 and below else f"{'≤' if below else '≥'} {target:g}"
        figure = Figure(key, value, unit, label, shown, ok, note)
        self.figures.append(figure)
        return figure

    def as_json(self, machine: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"machine": machine}
        for f in self.figures:
            entry: dict[str, Any] = {"value": None if math.isnan(f.value) else round(f.value, 4), "unit": f.unit}
            if f.target:
                entry["target"] = f.target
                entry["met"] = f.ok
            if f.note:
                entry["note"] = f.note
            out[f.key] = entry
        out.update(self.extra)
        return out

    def table(self) -> str:
        starts = {index: title for title, index in self.sections}
        lines = []
        width = max((len(f.label) for f in self.figures), default=20)
        for i, f in enumerate(self.figures):
            if i in starts:
                lines.append(f"\n{starts[i]}")
            value = "n/a" if math.isnan(f.value) else _fmt(f.value)
            target = f"  target {f.target} {f.unit}: {'met' if f.ok else 'MISSED'}" if f.target else ""
            note = f"  ({f.note})" if f.note else ""
            lines.append(f"  {f.label:<{width}}  {value:>10} {f.unit:<10}{target}{note}")
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = ["| figure | value | unit | target |", "|---|---:|---|---|"]
        starts = {index: title for title, index in self.sections}
        for i, f in enumerate(self.figures):
            if i in starts:
                lines.append(f"| **{starts[i]}** | | | |")
            value = "n/a" if math.isnan(f.value) else _fmt(f.value)
            target = f"{f.target} ({'met' if f.ok else 'missed'})" if f.target else ""
            lines.append(f"| {f.label} | {value} | {f.unit} | {target} |")
        return "\n".join(lines)


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


class CpuMeter:
    """This process's CPU use over a span (to show whether the bench side itself was saturated)."""

    def __init__(self) -> None:
        self.cpu, self.wall = time.process_time(), time.monotonic()

    def share(self) -> float:
        wall = time.monotonic() - self.wall
        return (time.process_time() - self.cpu) / wall if wall > 0 else math.nan


class LoopLag:
    """How late this process's event loop wakes a 20 ms timer: the bench side's own share of measured latency."""

    def __init__(self, period: float = 0.02) -> None:
        self.period = period
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(self.period)
            self.samples.append(time.monotonic() - t - self.period)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
