"""The operator's HTTP port ([metrics] port): ``/metrics`` in Prometheus' text format and ``/healthz``.

aiohttp (already under discord.py) on the bot's own event loop: no thread, and the health check sees the same
gateway connection and store the bot uses. ``/healthz`` is 200 only while the gateway is connected and the
store answers a query within two seconds; otherwise 503 with the reason, so a container runtime restarts a
bot that is up but useless.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.metrics import BotMetrics

log = logging.getLogger(__name__)
STORE_TIMEOUT = 2.0


def gateway_problem(bot: Any) -> str | None:
    if bot.is_closed():
        return "the bot is stopping"
    # The open gateway socket, not is_ready(): interactions are served from the first READY, while is_ready()
    # waits a further guild_ready_timeout (2 s) for the servers' data.
    ws = getattr(bot, "ws", None)
    if ws is None:
        return "not connected to the Discord gateway yet"
    if not ws.open:
        return "the Discord gateway connection is down (reconnecting)"
    return None


async def store_problem(store: Any) -> str | None:
    if store is None:
        return "the database is not open"
    try:
        await asyncio.wait_for(store.schema_version(), STORE_TIMEOUT)
    except Exception as error:  # noqa: BLE001 - any failure means unhealthy; say which
        return f"the database does not answer ({type(error).__name__})"
    return None


class MetricsServer:
    def __init__(self, bot: Any, metrics: BotMetrics, host: str, port: int) -> None:
        self.bot, self.metrics, self.host, self.port = bot, metrics, host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self.serve_metrics)
        app.router.add_get("/healthz", self.serve_health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("metrics on http://%s:%d/metrics, health check on /healthz", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def serve_metrics(self, request: web.Request) -> web.Response:
        store = self.bot.store
        body = await self.metrics.render(active_adventures=store.count_active_sessions if store else None,
                                         gateway_latency=self.bot.latency)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def serve_health(self, request: web.Request) -> web.Response:
        problem = gateway_problem(self.bot) or await store_problem(self.bot.store)
        if problem:
            return web.Response(status=503, text=f"unhealthy: {problem}\n")
        return web.Response(text="ok\n")
