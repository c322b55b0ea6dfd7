"""Logging set-up. Every record passes a filter that blanks secret values, whatever logged them."""

from __future__ import annotations

import logging
from collections.abc import Iterable


class RedactSecrets(logging.Filter):
    """Replaces any configured secret value (tokens, API keys) in a log record's final text with [redacted]."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        text = message + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        if any(secret in text for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "[redacted]")
            record.msg, record.args = message, None
            if record.exc_info:
                trace = logging.Formatter().formatException(record.exc_info)
                for secret in self.secrets:
                    trace = trace.replace(secret, "[redacted]")
                record.msg = f"{message}\n{trace}"
                record.exc_info, record.exc_text = None, None
        return True


def setup_logging(secrets: Iterable[str], level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The SDKs' HTTP clients log every request at INFO; keep that out of the bot's log.
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "anthropic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
