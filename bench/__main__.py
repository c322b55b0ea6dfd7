"""``python -m bench [--quick] [--only N[,N…]]`` (``make bench``): run the benchmarks, print a table and write
bench/results.json. See bench/README.md for what each figure measures and how."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import cost, pacing, streaming, table, throughput
from bench import memory as campaign_memory
from bench.stats import Results, mean

RESULTS = Path(__file__).with_name("results.json")
MEMORY_PLOT = Path(__file__).with_name("memory.png")
ALL = (1, 2, 3, 4, 5, 6, 7)
DEFAULT = (1, 3, 4, 6, 7)  # 2 and 5 (the older pacing figures) on request: --only 2,5


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    libs = {name: version(name) for name in ("discord.py", "anthropic", "httpx2", "aiohttp", "aiosqlite")}
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "platform": platform.platform(), "libraries": libs}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


METRICS = (  # (key, label, PhaseResult list, percentile, target at 50 channels, target at 200 channels)
    ("staleness_ms_p99", "staleness p99", "lag", 99, 600, 600),
    ("final_text_ms_p50", "stream end → final text p50", "final_delay", 50, 50, 50),
    ("final_text_ms_p99", "stream end → final text p99", "final_delay", 99, 150, 150),
    ("final_edit_ms_p50", "stream end → final edit (cursor off) p50", "final_edit", 50, None, None),
    ("final_edit_ms_p99", "stream end → final edit (cursor off) p99", "final_edit", 99, None, None),
    ("command_to_llm_ms_p50", "command → LLM request p50", "to_llm", 50, 30, 150),
    ("command_to_llm_ms_p99", "command → LLM request p99", "to_llm", 99, None, None),
    ("first_visible_ms_p99", "first visible text p99", "first_visible", 99, None, None),
)


async def figure_1(r: Results, quick: bool) -> dict[int, streaming.PhaseResult]:
    counts = [10, 30] if quick else [50, 200]
    say(f"figure 1: streaming at Discord's pace, ours / naive / global throttle at {counts} channels, with and "
        "without rate-limit headers")
    runs = await pacing.run(counts, duration=5 if quick else 10)
    by = {(run.who, run.headers): run.phases for run in runs}
    missing = streaming.PhaseResult(0, [])  # a streamer left out (BENCH_STREAMERS): n/a
    for n in counts:
        ours = by["ours", True][n]
        naive, glob = (by.get((who, True), {}).get(n, missing) for who in ("naive", "global"))
        r.section(f"1. Streaming at Discord's pace, {n} channels, rate-limit headers on (250 words at 30 words/s; "
                  "ratios: ours / naive per-message 1 s streamer, ours / global 1 s throttle)")
        for key, label, field, q, t50, t200 in METRICS:
            target = t50 if n == counts[0] else t200
            mine, a, b = ours.p(field, q), naive.p(field, q), glob.p(field, q)
            r.add(f"{key}_{n}ch", mine, "ms", f"{label}, ours", target=target,
                  note=f"÷ naive {_ratio(mine, a)}, ÷ global {_ratio(mine, b)}")
            r.add(f"{key}_{n}ch_naive", a, "ms", f"{label}, naive")
            r.add(f"{key}_{n}ch_global", b, "ms", f"{label}, global")
        for who, phase in (("ours", ours), ("naive", naive), ("global", glob)):
            r.add(f"edits_per_message_{n}ch_{who}", mean([float(e) for e in phase.edits]), "edits",
                  f"edits per message, {who}")
        r.add(f"http_429_{n}ch", ours.ratelimited, "responses", "429s, ours", target=0)
        r.add(f"http_429_{n}ch_naive", naive.ratelimited, "responses", "429s, naive")
        r.add(f"turns_measured_{n}ch", len(ours.final_delay), "turns", "turns measured, ours")
        r.add(f"bot_cpu_share_{n}ch", ours.bot_cpu * 100, "% of a core", "bot CPU, ours",
              note=f"naive {naive.bot_cpu:.0%}, global {glob.bot_cpu:.0%}")
    r.section("1b. Without rate-limit headers (ours at its fallback pace, edit_interval_seconds = 1)")
    for n in counts:
        off = by["ours", False][n]
        r.add(f"http_429_{n}ch_no_headers", off.ratelimited, "responses", f"429s at {n} channels", target=0)
        r.add(f"staleness_ms_p99_{n}ch_no_headers", off.p("lag", 99), "ms", f"staleness p99 at {n} channels")
        r.add(f"final_text_ms_p99_{n}ch_no_headers", off.p("final_delay", 99), "ms",
              f"stream end → final text p99 at {n} channels")
        r.add(f"final_edit_ms_p99_{n}ch_no_headers", off.p("final_edit", 99), "ms",
              f"stream end → final edit (cursor off) p99 at {n} channels")
    return by["ours", True]


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and not (math.isnan(a) or math.isnan(b)) else "n/a"


async def figure_2(r: Results, quick: bool) -> None:
    intervals, channels = ([0.5, 1.0], 10) if quick else ([0.5, 1.0, 2.0], 50)
    say(f"figure 2: edit pacing at {channels} channels, edit_interval_seconds = {intervals}")
    runs = await streaming.pacing_sweep(intervals, channels=channels, duration=5 if quick else 12)
    r.section(f"2. Edit pacing at {channels} channels (stand-in enforces 5 requests / 2 s per token, "
              "sends no rate-limit headers)")
    for interval, phase in runs.items():
        say(f"  interval {interval:g} s: " + streaming.summary(phase))
        tag = f"interval_{interval:g}s"
        r.add(f"edits_per_message_{tag}", mean([float(e) for e in phase.edits]), "edits",
              f"edits per message, interval {interval:g} s")
        r.add(f"lag_ms_p50_{tag}", phase.p("lag", 50), "ms", f"lag p50, interval {interval:g} s")
        r.add(f"lag_ms_p99_{tag}", phase.p("lag", 99), "ms", f"lag p99, interval {interval:g} s")
        r.add(f"http_429_{tag}", phase.ratelimited, "responses", f"429s, interval {interval:g} s",
              target=0 if interval >= 1.0 else None)


async def figure_3(r: Results, quick: bool) -> None:
    sessions, warm = (100, 20) if quick else (1000, 100)
    say(f"figure 3: throughput and overhead with an instant LLM, {sessions} sessions")
    f = await throughput.run(sessions=sessions, warm=warm, duration=5 if quick else 20, sdk_calls=50 if quick else 300)
    r.section("3. Throughput and overhead (instant LLM, 300-token answers in 100 SSE events)")
    for name, t in (("act", f.acts), ("start", f.starts)):
        say(f"  /{name}: {t.turns} turns in {t.wall:.1f} s, bot CPU {t.bot_cpu:.1f} s, bench CPU {t.bench_cpu:.0%}, "
            f"failed {t.failed}")
    cpu = f.acts.cpu_per_turn * 1000
    sdk = f.sdk_cpu_per_call * 1000
    r.add("turns_per_second_act", f.acts.per_second, "turns/s", "turns per second (/act, 50 in flight)")
    r.add("turns_per_second_start", f.starts.per_second, "turns/s", "turns per second (/start, 50 in flight)")
    r.add("cpu_ms_per_turn", cpu, "ms", "bot CPU per /act turn")
    r.add("cpu_ms_per_call_sdk_only", sdk, "ms", "CPU per streamed call, SDK client alone")
    r.add("cpu_ms_per_turn_excluding_sdk", cpu - sdk, "ms", "bot CPU per turn excluding the SDK", target=2)
    r.add("peak_rss_mb", f.peak_rss / 2**20, "MiB", "peak RSS")
    r.add(f"rss_mb_{sessions}_sessions", f.rss_sessions / 2**20, "MiB", f"RSS with {sessions} sessions open, idle")
    r.add("rss_kb_per_idle_session", f.rss_per_session / 1024, "KiB", "RSS per idle session", target=50)


async def figure_4(r: Results, quick: bool) -> None:
    turns = 30 if quick else cost.TURNS
    say(f"figure 4: cost of a scripted {turns}-turn campaign")
    ours, naive = await cost.run(turns)
    r.section(f"4. Cost: input tokens per turn over a {turns}-turn campaign (Anthropic prompt-cache simulation)")
    for name, c in (("ours", ours), ("naive", naive)):
        label = "ours (stepped window + caching)" if name == "ours" else "naive (sliding 20, no caching)"
        r.add(f"billed_input_tokens_per_turn_{name}", c.per_turn(c.billed), "tokens", f"billed, {label}")
        r.add(f"raw_input_tokens_per_turn_{name}", c.per_turn(c.raw_input), "tokens", f"raw, {label}")
    r.add("cache_read_tokens_per_turn_ours", ours.per_turn(ours.cache_read), "tokens", "cache reads, ours")
    r.add("cache_write_tokens_per_turn_ours", ours.per_turn(ours.cache_write), "tokens", "cache writes, ours")
    r.add("cost_ratio_billed", ours.billed / naive.billed, "ratio", "billed input, ours / naive", target=0.4)
    if ours.failed or naive.failed:
        say(f"  note: failed turns: ours {ours.failed}, naive {naive.failed}")


async def figure_5(r: Results, quick: bool, ours: streaming.PhaseResult | None) -> None:
    n = 10 if quick else 200
    say(f"figure 5: the usual design (one global 1-second edit throttle) at {n} channels")
    base = (await streaming.first_visible_runs([n], duration=5 if quick else 15, module="bench.bot_baseline"))[n]
    say("  baseline " + streaming.summary(base))
    r.section(f"5. Against the usual design at {n} channels (one global 1-second edit throttle)")
    if ours is None:
        say("  (figure 1 was not run: running ours at the same load for the comparison)")
        ours = (await streaming.first_visible_runs([n], duration=5 if quick else 15))[n]
    for who, phase in (("ours", ours), ("baseline", base)):
        r.add(f"lag_ms_p50_{n}ch_{who}", phase.p("lag", 50), "ms", f"lag p50, {who}")
        r.add(f"lag_ms_p99_{n}ch_{who}", phase.p("lag", 99), "ms", f"lag p99, {who}")
        r.add(f"edits_per_message_{n}ch_{who}", mean([float(e) for e in phase.edits]), "edits",
              f"edits per message, {who}")
    r.add(f"first_visible_ms_p50_{n}ch_baseline", base.p("first_visible", 50), "ms", "first visible p50, baseline")
    r.add(f"first_visible_ms_p99_{n}ch_baseline", base.p("first_visible", 99), "ms", "first visible p99, baseline")
    for q in (50, 99):
        r.add(f"lag_ratio_p{q}_ours_over_baseline", ours.p("lag", q) / base.p("lag", q), "ratio",
              f"lag p{q}, ours / baseline")


async def figure_6(r: Results, quick: bool) -> None:
    words, rate = (30, 30.0) if quick else (60, 30.0)
    say(f"figure 6: a burst of 5 actions during a narration, batched against one-by-one ({words} words at {rate:g}/s)")
    runs = await table.compare(words, rate)
    say("  " + table.report(runs, words, rate).replace("\n", "\n  "))
    r.section(f"6. A table of players: 5 actions sent while the DM narrates ({words}-word answers at {rate:g} words/s)")
    for name, (calls, seconds) in runs.items():
        key = name.replace("-", "_")
        r.add(f"burst_llm_calls_{key}", calls, "calls", f"LLM calls, {name}", target=2 if name == "batched" else None)
        r.add(f"burst_last_answered_s_{key}", seconds, "s", f"last player's answer complete, {name}")


async def figure_7(r: Results, quick: bool) -> None:
    turns = 60 if quick else campaign_memory.TURNS
    say(f"figure 7: campaign memory over a scripted {turns}-turn campaign (ours, round 1's window, everything)")
    runs = await campaign_memory.run(turns)
    r.section(f"7. Campaign memory: input tokens per turn over a {turns}-turn campaign (Anthropic cache simulated)")
    for name, run in runs.items():
        key = name.replace(" ", "")
        for t in (t for t in campaign_memory.SHOWN_AT if t <= turns):
            r.add(f"memory_input_tokens_turn_{t}_{key}", run.per_turn[t - 1], "tokens", f"input at turn {t}, {name}")
        r.add(f"memory_billed_input_per_turn_{key}", mean(run.billed), "tokens",
              f"billed input per turn (cache simulated), {name}")
        r.add(f"memory_cache_hit_share_{key}", 100 * run.cache_read / run.raw_input, "%",
              f"input read from the cache, {name}")
    ours = runs["ours"]
    r.add("memory_summary_share", 100 * ours.summary_share, "% of tokens", "summary calls' share of all tokens, ours",
          target=15)
    r.add("memory_summaries_written", ours.summaries, "calls", "summary calls, ours")
    late = ours.per_turn[len(ours.per_turn) // 2:]
    r.add("memory_max_input_second_half_ours", max(late), "tokens", "largest request in the second half, ours",
          target=campaign_memory.Config().memory.max_prompt_tokens)
    problem = campaign_memory.plot(runs, MEMORY_PLOT)
    say(f"  plot: {problem}" if problem else f"  plot written: {MEMORY_PLOT}")


async def main(figures: tuple[int, ...], quick: bool) -> Results:
    results = Results()
    gc.freeze()  # the bench process's own long-lived objects (stand-in, SDKs) stay out of its collections
    if 1 in figures:
        await figure_1(results, quick)
    if 2 in figures:
        await figure_2(results, quick)
    if 3 in figures:
        await figure_3(results, quick)
    if 4 in figures:
        await figure_4(results, quick)
    if 5 in figures:
        await figure_5(results, quick, None)  # its own run: figure 1's load differs
    if 6 in figures:
        await figure_6(results, quick)
    if 7 in figures:
        await figure_7(results, quick)
    return results


def cli() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="a small smoke run (about 2 minutes): fewer channels, shorter phases")
    parser.add_argument("--only", metavar="N[,N]",
                        help="only these figures (1-7), e.g. --only 1,5 (default: 1,3,4,6,7)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"where to write the JSON (default {RESULTS})")
    args = parser.parse_args()
    figures = tuple(int(x) for x in args.only.split(",")) if args.only else DEFAULT
    if not set(figures) <= set(ALL):
        parser.error("figures are 1 to 7")
    started = time.monotonic()
    info = machine()
    say(f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}")
    results = asyncio.run(main(figures, args.quick))
    elapsed = time.monotonic() - started
    results.extra.update({"figures_run": list(figures), "quick": args.quick, "elapsed_seconds": round(elapsed, 1)})
    payload = results.as_json(info)
    args.output.write_text(json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False,
                                      default=lambda v: None) + "\n")
    print(f"\nDungeon Master bot benchmarks ({'quick' if args.quick else 'full'} run, {elapsed / 60:.1f} min) on "
          f"{info['nproc']} × {info['cpu']}, Python {info['python']}")
    print(results.table())
    missed = [f.label for f in results.figures if f.ok is False]
    print(f"\nTargets missed: {', '.join(missed)}" if missed else "\nAll targets met.")
    print(f"Written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
