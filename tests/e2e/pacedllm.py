"""A small OpenAI-compatible streaming server for load tests, paced like a real model, run as its own process.

``python -m tests.e2e.pacedllm --first-token-ms 400 --token-ms 30 --words 60`` prints ``PORT <n>`` and serves
``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic), streaming: after
``first-token-ms`` it sends one word per chunk every ``token-ms``, then the finish and the usage. It remembers, per ``[tag]`` found in the last
user message, the wall-clock time its first token was sent (``GET /stats``), so a load test can measure the
time from the model's first token to the first text a player sees.

Why not llmock: it runs in the test's own process (sharing the GIL with the Discord stand-in), and under a
few hundred concurrent paced streams its per-chunk overhead showed; this server does only what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time

from aiohttp import web

TAG = re.compile(r"[[(]([A-Z]\d+)[])]")  # players' brackets reach the model as parentheses
WORDS = ("the lantern gutters and the old stones of the keep whisper of things long buried while rain drums "
         "on the shutters and somewhere below a door scrapes open").split()


class PacedLLM:
    def __init__(self, first_token_ms: int, token_ms: int, words: int) -> None:
        self.first_token = first_token_ms / 1000
        self.token = token_ms / 1000
        self.words = words
        self.first_token_at: dict[str, float] = {}
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests += 1
        last = next((m.get("content") or "" for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        tags = TAG.findall(last if isinstance(last, str) else json.dumps(last))
        tag = tags[-1] if tags else f"?{self.requests}"
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            created = int(time.time())

            def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
                data = {"id": f"chatcmpl-{tag}", "object": "chat.completion.chunk", "created": created,
                        "model": body.get("model", "paced"),
                        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
                if usage:
                    data["usage"] = usage
                return f"data: {json.dumps(data)}\n\n".encode()

            await asyncio.sleep(self.first_token)
            for i in range(self.words):
                word = WORDS[i % len(WORDS)]
                if i == 0:
                    self.first_token_at.setdefault(tag, time.time())
                    word = f"({tag}) {word.capitalize()}"
                await response.write(chunk({"role": "assistant", "content": word} if i == 0
                                           else {"content": " " + word}))
                await asyncio.sleep(self.token)
            await response.write(chunk({}, finish="stop"))
            prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", [])) // 4
            await response.write(chunk({}, usage={"prompt_tokens": prompt, "completion_tokens": self.words,
                                                  "total_tokens": prompt + self.words}))
            await response.write(b"data: [DONE]\n\n")
        finally:
            self.in_flight -= 1
        return response

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """The same answer in Anthropic's Messages stream format."""
        body = await request.json()
        self.requests += 1
        last = next((m.get("content") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        tags = TAG.findall(last if isinstance(last, str) else json.dumps(last))
        tag = tags[-1] if tags else f"?{self.requests}"
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

        def event(kind: str, data: dict) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

        try:
            prompt = len(json.dumps(body.get("messages", []))) // 4
            await response.write(event("message_start", {"message": {
                "id": f"msg_{tag}", "type": "message", "role": "assistant", "model": body.get("model", "paced"),
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": 1}}}))
            await response.write(event("content_block_start", {"index": 0,
                                                                "content_block": {"type": "text", "text": ""}}))
            await asyncio.sleep(self.first_token)
            for i in range(self.words):
                word = WORDS[i % len(WORDS)]
                if i == 0:
                    self.first_token_at.setdefault(tag, time.time())
                    word = f"({tag}) {word.capitalize()}"
                await response.write(event("content_block_delta", {
                    "index": 0, "delta": {"type": "text_delta", "text": word if i == 0 else " " + word}}))
                await asyncio.sleep(self.token)
            await response.write(event("content_block_stop", {"index": 0}))
            await response.write(event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                                         "usage": {"output_tokens": self.words}}))
            await response.write(event("message_stop", {}))
        finally:
            self.in_flight -= 1
        return response

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"first_token_at": self.first_token_at, "requests": self.requests,
                                  "max_in_flight": self.max_in_flight})


async def serve(args: argparse.Namespace) -> None:
    llm = PacedLLM(args.first_token_ms, args.token_ms, args.words)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", llm.completions)
    app.router.add_post("/v1/messages", llm.messages)
    app.router.add_get("/stats", llm.stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-token-ms", type=int, default=400)
    parser.add_argument("--token-ms", type=int, default=30)
    parser.add_argument("--words", type=int, default=60)
    try:
        asyncio.run(serve(parser.parse_args()))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
