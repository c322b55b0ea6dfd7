"""Error plumbing shared by the provider modules: Retry-After parsing, HTTP status → ``ProviderError``, and
transport failures (httpx2, TLS, bad SSE bytes) → ``ProviderError``.

Every user-facing message is built from a fixed template and the provider's label. Nothing from the
exception text, the response body or the request (which carries the API key in its headers) is copied into
it; the original exception stays reachable as ``__cause__`` for the operator's logs.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any

import anyio
import httpx2

from bot.llm.base import ProviderError, StreamItem

# Error types / codes that mean "your money or quota ran out": retrying cannot help, and the user should
# hear that it is a billing matter rather than a rate limit. (OpenAI: code and type ``insufficient_quota``
# on a 429; Anthropic: ``billing_error`` on a 402.)
_QUOTA_MARKERS = frozenset({"insufficient_quota", "billing_error", "billing_required"})

# "The prompt is longer than the model's context": Anthropic 400 invalid_request_error "prompt is too long: N
# tokens > M maximum"; OpenAI 400 code context_length_exceeded; vLLM "maximum context length is N tokens";
# llama.cpp exceed_context_size_error "exceeds the available context size"; Ollama and others similar words.
_OVERFLOW_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error", "string_above_max_length"})
_OVERFLOW_TEXT = re.compile(
    r"prompt is too long|(?:prompt|input|context|request)\b.{0,40}\btoo (?:long|large|many tokens)"
    r"|maximum context length|context (?:length|size|window) (?:exceeded|is exceeded)"
    r"|exceeds? (?:the )?(?:available |maximum |model'?s? )?context|too many tokens",
    re.IGNORECASE,
)


def is_context_overflow(status: int, error_type: str | None, error_code: str | None, message: str | None) -> bool:
    """Whether an error answer says the prompt does not fit the model's context (see ``_OVERFLOW_TEXT``)."""
    if status not in (400, 413, 422):
        return False
    if error_code in _OVERFLOW_CODES or error_type in _OVERFLOW_CODES:
        return True
    return bool(message and _OVERFLOW_TEXT.search(message[:2000]))


def official_or_local_label(official_name: str, official_host: str, base_url: httpx2.URL) -> str:
    """How messages name the server: "OpenAI" for the real API, "the model server" otherwise.

    Players see these messages, so a local server's host, port or path never goes into them (the operator's
    log names it: ``endpoint_for_log``).
    """
    return official_name if base_url.host == official_host else "the model server"


def endpoint_for_log(base_url: httpx2.URL) -> str:
    """Host and port of the server, for the operator's log only; never userinfo (``http://user:pass@host``)."""
    port = f":{base_url.port}" if base_url.port else ""
    return f"{base_url.host}{port}"


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, or None when it did not say (or said something unusable).

    Order as in both SDKs' ``_parse_retry_after_header``: ``retry-after-ms`` (non-standard, more precise),
    then ``retry-after`` as seconds (floats tolerated), then ``retry-after`` as an HTTP date. No cap here:
    the retry policy caps the wait and tells the user when the provider asks for longer.
    """
    if not headers:
        return None
    h = headers if isinstance(headers, httpx2.Headers) else httpx2.Headers(dict(headers))
    ms = _finite_non_negative(h.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    raw = h.get("retry-after")
    if raw is None:
        return None
    seconds = _finite_non_negative(raw)
    if seconds is not None:
        return seconds
    parsed = email.utils.parsedate_tz(raw.strip())
    if parsed is None:
        return None
    # A date in the past means "you may retry now".
    return max(0.0, float(email.utils.mktime_tz(parsed)) - (time.time() if now is None else now))


def _finite_non_negative(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def status_error(
    label: str,
    status: int,
    *,
    error_type: str | None,
    error_code: str | None,
    headers: Mapping[str, str] | None,
    detail: str | None = None,
) -> ProviderError:
    """Map an HTTP error answer (status ≥ 400, before any byte of the stream) to a ``ProviderError``.
    ``detail`` is the server's own message: kept for the log and for recognising a refused parameter or a
    context overflow, never shown to players."""
    error = _status_error(label, status, error_type, error_code, parse_retry_after(headers))
    if is_context_overflow(status, error_type, error_code, detail):
        error = ProviderError(
            "context_overflow", f"{label} says the conversation is too long for the model ({status})",
            retryable=False, status=status,
        )
    error.detail = detail
    return error


def _status_error(label: str, status: int, error_type: str | None, error_code: str | None,
                  retry_after: float | None) -> ProviderError:
    if status == 402 or error_type in _QUOTA_MARKERS or error_code in _QUOTA_MARKERS:
        return ProviderError(
            "quota", f"{label} says the account's quota or spend limit is used up ({status})",
            retryable=False, status=status,
        )
    if status == 429:
        return ProviderError(
            "rate_limited", f"{label} is rate limiting requests ({status})",
            retryable=True, status=status, retry_after=retry_after,
        )
    if status == 529 or error_type == "overloaded_error":
        return ProviderError(
            "overloaded", f"{label} is overloaded ({status})", retryable=True, status=status, retry_after=retry_after
        )
    if status == 401:
        return ProviderError("auth", f"{label} rejected the API key ({status})", retryable=False, status=status)
    if status == 403:
        return ProviderError(
            "auth", f"{label} refused access with this API key ({status})", retryable=False, status=status
        )
    if status in (408, 409) or status >= 500:
        return ProviderError(
            "server", f"{label} had a server error ({status})", retryable=True, status=status, retry_after=retry_after
        )
    if status == 404:
        return ProviderError(
            "bad_request", f"{label} does not know this model or endpoint ({status})", retryable=False, status=status
        )
    if status == 413:
        return ProviderError(
            "bad_request", f"the request is too large for {label} ({status})", retryable=False, status=status
        )
    # 400, 422 and every other 4xx: our request is wrong; sending it again cannot help.
    return ProviderError("bad_request", f"{label} refused the request ({status})", retryable=False, status=status)


def midstream_error(label: str, error_type: str | None) -> ProviderError:
    """An error event inside a stream that had already answered 200 (no status, no Retry-After to read)."""
    if error_type == "overloaded_error":
        return ProviderError("overloaded", f"{label} is overloaded (mid-stream)", retryable=True)
    if error_type == "rate_limit_error":
        return ProviderError("rate_limited", f"{label} is rate limiting requests (mid-stream)", retryable=True)
    return ProviderError("stream", f"{label} reported an error in the middle of the answer", retryable=True)


def transport_error(label: str, exc: BaseException) -> ProviderError | None:
    """Map a failure below the SDK's typed errors, or None when ``exc`` is not one (then it is a bug: re-raise).

    These escape *while iterating* a stream: the anthropic SDK wraps transport errors only while sending the
    request, so a connection that breaks mid-stream surfaces as a raw ``httpx2.RemoteProtocolError`` /
    ``ReadError`` / ``ReadTimeout``. The openai SDK wraps them, but this costs nothing to keep for both.
    """
    if isinstance(exc, httpx2.TimeoutException):
        return ProviderError("timeout", f"{label} did not answer in time", retryable=True)
    if isinstance(exc, httpx2.UnsupportedProtocol):
        return ProviderError("bad_request", f"the address of {label} is not an http(s) URL", retryable=False)
    if isinstance(exc, httpx2.DecodingError):
        return ProviderError("stream", f"{label} sent a response that could not be decoded", retryable=True)
    if isinstance(exc, (httpx2.RequestError, ssl.SSLError, anyio.EndOfStream, anyio.BrokenResourceError)):
        return ProviderError("connection", f"the connection to {label} failed", retryable=True)
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
        return ProviderError("stream", f"{label} sent malformed data in the stream", retryable=True)
    return None


def truncated(label: str) -> ProviderError:
    return ProviderError("truncated", f"{label} ended the answer before it was finished", retryable=True)


def parse_tool_arguments(raw: str) -> tuple[dict, bool]:
    """The arguments of a tool call and whether they were malformed.

    An empty string means "no arguments" ({}), not malformed; anything that is not a JSON object is malformed.
    """
    if not raw.strip():
        return {}, False
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return {}, True
    return (value, False) if isinstance(value, dict) else ({}, True)


async def stream_sdk(
    open_stream: Callable[[], Awaitable[Any]],
    read: Callable[[Any], AsyncIterator[StreamItem]],
    translate: Callable[[BaseException], ProviderError | None],
) -> AsyncIterator[StreamItem]:
    """Open an SDK stream, yield what ``read`` makes of it, and turn SDK/transport exceptions into
    ``ProviderError`` with ``translate`` (errors raised while opening and while iterating alike). Shared by both
    providers: only opening, reading and translating differ."""
    try:
        sdk_stream = await open_stream()
        try:
            # aclosing: a consumer that stops early must not leave our generator to the GC.
            async with aclosing(read(sdk_stream)) as items:
                async for item in items:
                    yield item
        finally:
            await sdk_stream.close()  # releases the connection even when the answer was not read to the end
    except ProviderError:
        raise
    except Exception as exc:  # CancelledError / GeneratorExit are BaseException and pass through
        mapped = translate(exc)
        if mapped is None:
            raise
        raise mapped from exc
