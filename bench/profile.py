"""``python -m bench.profile [--channels 200] [--seconds 15] [--probe] [--pyspy OUT]``: one phase of figure 1's
load on one bot, for diagnosis. ``--probe`` runs ``bench.bot_probe`` (timers on the command → LLM path, printed as
PROBE lines); ``--pyspy OUT`` records the bot with py-spy (``pip install py-spy``; not a bench dependency) for
``--seconds`` after the ramp, in py-spy's raw (collapsed) format, and prints the heaviest frames."""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
from pathlib import Path

from bench.discord_env import environment
from bench.pacing import workload
from bench.streaming import answer_seconds, phase, start_sessions, summary


async def main(args: argparse.Namespace) -> None:
    module = "bench.bot_probe" if args.probe else args.module
    async with environment(channels=args.channels, module=module, edit_interval=1.0) as env:
        await start_sessions(env, env.channels)
        spy = None
        if args.pyspy:
            async def record() -> None:
                await asyncio.sleep(answer_seconds(workload()))
                proc = await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).with_name("py-spy")), "record", "-p",
                    str(env.bot.proc.pid), "-d", str(int(args.seconds)), "-r", "200", "-f", "raw", "-o", args.pyspy,
                    "--nonblocking", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
                _, err = await proc.communicate()
                if proc.returncode:
                    print(f"py-spy failed: {err.decode()[-500:]}", file=sys.stderr)
            spy = asyncio.ensure_future(record())
        result = await phase(env, env.channels, workload(), duration=args.seconds)
        print(summary(result), f"command→LLM p50 {result.p('to_llm', 50):.0f} ms p99 {result.p('to_llm', 99):.0f} ms"
              f", final p50 {result.p('final_delay', 50):.0f} ms p99 {result.p('final_delay', 99):.0f} ms",
              file=sys.stderr)
        if spy is not None:
            await spy
    if args.pyspy:
        heaviest(args.pyspy)


def heaviest(path: str, top: int = 25) -> None:
    """Inclusive samples per function (each function once per stack), heaviest first."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in open(path):
        stack, _, count = line.rstrip().rpartition(" ")
        n = int(count)
        total += n
        for frame in set(stack.split(";")):
            inclusive[frame] += n
    for frame, n in inclusive.most_common(top):
        print(f"{n / total:6.1%}  {frame}", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--channels", type=int, default=200, help="channels streaming at once")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds measured after the ramp")
    parser.add_argument("--probe", action="store_true", help="timers on the command → LLM path (PROBE lines)")
    parser.add_argument("--module", default="bot", help="the bot's entry point, e.g. bench.bot_naive")
    parser.add_argument("--pyspy", metavar="OUT", help="record the bot with py-spy into OUT (raw format)")
    asyncio.run(main(parser.parse_args()))
