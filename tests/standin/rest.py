"""The HTTP side: routing under /api/v10, body parsing (JSON or multipart with payload_json), auth, fault
injection, rate limits, OpenAPI validation, and a log of every request for tests to read.

Every JSON answer carries ``Content-Type: application/json`` with no charset: discord.py compares the
header for equality and would otherwise hand the body back as a string.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web

from .errors import INVALID_JSON, DiscordError, error, field_errors, invalid_form_body, merge_errors
from .ratelimit import RateLimiter, too_many_requests_body, too_many_requests_headers
from .validation import SpecValidator

PREFIX = "/api/v10"


@dataclass
class Ctx:
    """What a handler gets: path parameters, the parsed body, uploaded files, the query."""

    params: dict[str, str]
    body: Any
    files: list[dict[str, Any]]
    query: dict[str, str]

    def obj(self) -> dict[str, Any]:
        """The body as a JSON object (absent means empty), or Discord's 50035 for anything else."""
        if self.body is None:
            return {}
        if not isinstance(self.body, dict):
            raise invalid_form_body(field_errors((), "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType"))
        return self.body

    def id(self, name: str) -> int:
        value = self.params[name]
        if not value.isdigit():
            raise DiscordError(404, 0, "404: Not Found")
        return int(value)


Handler = Callable[[Ctx], Awaitable[tuple[int, Any]]]


@dataclass
class Route:
    method: str
    template: str  # as in Discord's OpenAPI description, so log entries and spec operations line up
    handler: Handler
    auth: bool = True  # needs the bot token (interaction and webhook routes authenticate by their token)
    bucket: str | None = None  # rate limit kind (see ratelimit.Limits)
    major: str | None = None  # the path parameter that keys the bucket
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template))
        self.regex = re.compile(f"^{pattern}$")


@dataclass(frozen=True)
class RequestRecord:
    method: str
    route: str | None  # the template, None when no route matched (a 404 tests should notice)
    path: str
    status: int
    time: float  # time.monotonic() when the answer was sent
    body_size: int
    query: dict[str, str]
    body: Any
    injected: bool = False


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: Any
    times: int
    retry_after: float | None


class RestApi:
    def __init__(self, *, routes: list[Route], bot_token: str, limiter: RateLimiter, validator: SpecValidator,
                 ratelimit_headers: bool, reject_invalid: bool, on_change: Callable[[], None]) -> None:
        self.routes = routes
        self.bot_token = bot_token
        self.limiter = limiter
        self.validator = validator
        self.ratelimit_headers = ratelimit_headers
        self.reject_invalid = reject_invalid
        self.on_change = on_change
        self.requests: list[RequestRecord] = []
        self.validation_errors: list[tuple[str, str]] = []
        self.ratelimited: Counter[str] = Counter()
        self.invalid_requests = 0  # 401/403/429: Discord bans an IP at 10,000 of them in 10 minutes
        self.server_errors: list[str] = []  # stand-in bugs (500s), so tests can tell them from bot bugs
        self.faults: list[Fault] = []

    def fail_next(self, method: str, path_regex: str, status: int, body: Any = None, times: int = 1,
                  retry_after: float | None = None) -> None:
        self.faults.append(Fault(method.upper(), re.compile(path_regex), status, body, times, retry_after))

    # -- the one aiohttp handler ---------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        query = dict(request.query)
        if not path.startswith(PREFIX + "/"):
            return self._log(request, None, path, 0, None, query, _json(404, {"message": "404: Not Found", "code": 0}))
        path = path[len(PREFIX):]
        route, params, method_known = self._match(request.method, path)
        if (fault := self._take_fault(request.method, path)) is not None:
            if fault.status == 429:
                self.ratelimited[f"{request.method} {route.template if route else path}"] += 1
            size = len(await request.read())
            return self._log(request, route, path, size, None, query, fault, injected=True)
        if route is None:
            status, message = (405, "405: Method Not Allowed") if method_known else (404, "404: Not Found")
            return self._log(request, None, path, 0, None, query, _json(status, {"message": message, "code": 0}))
        try:
            body, files, size = await _read_body(request)
        except DiscordError as exc:
            return self._log(request, route, path, 0, None, query, _json(exc.status, exc.body()))
        response = await self._serve(request, route, Ctx(params, body, files, query))
        return self._log(request, route, path, size, body, query, response)

    async def _serve(self, request: web.Request, route: Route, ctx: Ctx) -> web.Response:
        if route.auth and request.headers.get("Authorization") != f"Bot {self.bot_token}":
            return _json(401, {"message": "401: Unauthorized", "code": 0})
        if route.auth:
            decision = self.limiter.take_global()
            if not decision.allowed:
                self.ratelimited[f"{route.method} {route.template}"] += 1
                return _json(429, too_many_requests_body(decision),
                             too_many_requests_headers(decision, with_ratelimit_headers=self.ratelimit_headers))
        if ctx.body is not None:
            problems = self.validator.validate(route.method, route.template, ctx.body)
            self.validation_errors.extend((f"{route.method} {route.template}", str(p)) for p in problems)
            if problems and self.reject_invalid:  # answered in Discord's nested shape, as Discord would
                errors: dict[str, Any] = {}
                for problem in problems:
                    merge_errors(errors, field_errors(problem.path, problem.code, problem.message))
                return _json(400, invalid_form_body(errors).body())
        headers: dict[str, str] = {}
        if route.bucket:
            key = ctx.params.get(route.major or "", "global")
            decision = self.limiter.take(route.bucket, key)
            if not decision.allowed:
                self.ratelimited[f"{route.method} {route.template}"] += 1
                return _json(429, too_many_requests_body(decision),
                             too_many_requests_headers(decision, with_ratelimit_headers=self.ratelimit_headers))
            if self.ratelimit_headers:
                headers = decision.headers
        try:
            status, payload = await route.handler(ctx)
        except DiscordError as exc:
            return _json(exc.status, exc.body(), headers)
        except Exception:  # a stand-in bug: answer like Discord's 500 and keep the trace for the test
            self.server_errors.append(traceback.format_exc())
            return _json(500, {"message": "500: Internal Server Error", "code": 0}, headers)
        return _json(status, payload, headers)

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        method_known = False
        for route in self.routes:
            found = route.regex.match(path)
            if found:
                if route.method == method:
                    return route, found.groupdict(), True
                method_known = True
        return None, {}, method_known

    def _take_fault(self, method: str, path: str) -> web.Response | None:
        for fault in self.faults:
            if fault.method in (method, "*") and fault.pattern.search(path):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                if fault.status == 429:
                    retry = 0.05 if fault.retry_after is None else fault.retry_after
                    body = fault.body or {"message": "You are being rate limited.", "retry_after": retry,
                                          "global": False}
                    headers = {"Retry-After": str(max(1, round(retry))), "X-RateLimit-Scope": "user",
                               "Via": "1.1 google"}
                    return _json(429, body, headers)
                body = fault.body if fault.body is not None else {"message": f"{fault.status}: injected", "code": 0}
                return _json(fault.status, body)
        return None

    def _log(self, request: web.Request, route: Route | None, path: str, size: int, body: Any,
             query: dict[str, str], response: web.Response, *, injected: bool = False) -> web.Response:
        if response.status in (401, 403, 429):
            self.invalid_requests += 1
        self.requests.append(RequestRecord(request.method, route.template if route else None, path,
                                           response.status, time.monotonic(), size, query, body, injected))
        self.on_change()
        return response


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    if payload is None:
        return web.Response(status=status, headers=headers)
    return web.Response(status=status, body=json.dumps(payload).encode(),
                        headers={**(headers or {}), "Content-Type": "application/json"})


async def _read_body(request: web.Request) -> tuple[Any, list[dict[str, Any]], int]:
    """JSON, or multipart/form-data whose ``payload_json`` part is the JSON and ``files[n]`` the uploads."""
    if request.content_type == "multipart/form-data":
        body, files, size = None, [], 0
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            data = await part.read()  # type: ignore[union-attr]
            size += len(data)
            if part.name == "payload_json":  # type: ignore[union-attr]
                body = _loads(data)
            else:
                files.append({"field": part.name, "filename": part.filename or "file",  # type: ignore[union-attr]
                              "size": len(data), "content_type": part.headers.get("Content-Type")})  # type: ignore[union-attr]
        return body, files, size
    raw = await request.read()
    return (_loads(raw) if raw else None), [], len(raw)


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise error(INVALID_JSON) from None
