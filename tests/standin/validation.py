"""Request bodies checked against Discord's own OpenAPI description (discord/discord-api-spec).

The file is 1.2 MB with ~540 schemas, so only the JSON is loaded up front (tens of ms); a validator is
compiled the first time an operation is seen and cached. When the file is absent the stand-in still works
and says why it skipped the check (``skipped_reason``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

URI = "urn:discord-openapi"
_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = _REPO_ROOT.parent / "shared" / "discord-api-spec" / "openapi.json"


def find_spec() -> Path:
    env = os.environ.get("DISCORD_OPENAPI_SPEC")
    return Path(env) if env else DEFAULT_SPEC


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class SpecValidator:
    def __init__(self, path: Path | None = None, *, enabled: bool = True) -> None:
        self.path = path or find_spec()
        self.skipped_reason: str | None = None
        self._spec: dict[str, Any] | None = None
        self._registry: Any = None
        self._validators: dict[tuple[str, str], Any] = {}
        if not enabled:
            self.skipped_reason = "validation disabled (validate=False)"
            return
        try:
            from jsonschema import Draft202012Validator  # noqa: F401  (fail early if missing)
            from referencing import Registry, Resource
            from referencing.jsonschema import DRAFT202012
        except ImportError as exc:
            self.skipped_reason = f"jsonschema/referencing not installed: {exc}"
            return
        if not self.path.is_file():
            self.skipped_reason = (f"Discord OpenAPI description not found at {self.path} "
                                   "(set DISCORD_OPENAPI_SPEC to its path)")
            return
        self._spec = _relax(json.loads(self.path.read_text(encoding="utf-8")))
        resource = Resource.from_contents(self._spec, default_specification=DRAFT202012)
        self._registry = Registry().with_resource(URI, resource)

    @property
    def active(self) -> bool:
        return self._spec is not None

    def has_body_schema(self, method: str, template: str) -> bool:
        operation = (self._spec or {}).get("paths", {}).get(template, {}).get(method.lower(), {})
        return "application/json" in operation.get("requestBody", {}).get("content", {})

    def _validator(self, method: str, template: str) -> Any:
        key = (method, template)
        if key not in self._validators:
            from jsonschema import Draft202012Validator

            if not self.has_body_schema(method, template):
                self._validators[key] = None
            else:
                pointer = "/".join(["", "paths", _escape(template), method.lower(), "requestBody", "content",
                                    _escape("application/json"), "schema"])
                self._validators[key] = Draft202012Validator({"$ref": f"{URI}#{pointer}"}, registry=self._registry)
        return self._validators[key]

    def validate_response(self, method: str, template: str, status: int, body: Any) -> list["Problem"]:
        """A response body against the operation's documented response schema (for the stand-in's own tests:
        what it answers must be what Discord documents). [] when it fits or nothing is documented."""
        if not self.active:
            return []
        from jsonschema import Draft202012Validator

        operation = self._spec.get("paths", {}).get(template, {}).get(method.lower(), {})  # type: ignore[union-attr]
        if "application/json" not in operation.get("responses", {}).get(str(status), {}).get("content", {}):
            return []
        pointer = "/".join(["", "paths", _escape(template), method.lower(), "responses", str(status), "content",
                            _escape("application/json"), "schema"])
        validator = Draft202012Validator({"$ref": f"{URI}#{pointer}"}, registry=self._registry)
        return [_problem(_most_specific(e)) for e in validator.iter_errors(body)]

    def validate(self, method: str, template: str, body: Any) -> list["Problem"]:
        """Readable errors for ``body`` (the JSON, or a multipart request's payload_json); [] when it fits."""
        if not self.active:
            return []
        validator = self._validator(method, template)
        if validator is None:
            return []
        return [_problem(_most_specific(e)) for e in validator.iter_errors(body)]


def _relax(spec: dict[str, Any]) -> dict[str, Any]:
    """Where the description is stricter than Discord itself, follow Discord.

    Snowflakes: the file types them as strings, but Discord accepts JSON integers too, and discord.py sends
    integers (attachment ids are file indexes, allowed_mentions users/roles are ints).
    """
    schemas = spec.get("components", {}).get("schemas", {})
    if "SnowflakeType" in schemas:
        schemas["SnowflakeType"] = {"anyOf": [schemas["SnowflakeType"], {"type": "integer", "minimum": 0}]}
    return spec


def _most_specific(error: Any) -> Any:
    """For Discord's unions (anyOf keyed on ``type``), report the branch whose discriminator matched."""
    while error.context:
        branches: dict[Any, list[Any]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        matching = [errs for errs in branches.values()
                    if not any(list(e.relative_path) in (["type"], []) and e.validator in ("enum", "const", "type")
                               for e in errs)]
        candidates = matching[0] if len(matching) == 1 else min(branches.values(), key=len)
        error = max(candidates, key=lambda e: len(e.absolute_path))
    return error


@dataclass(frozen=True)
class Problem:
    """One schema violation: where, Discord's error code for it, and a readable message."""

    path: tuple[str, ...]
    code: str
    message: str

    def __str__(self) -> str:
        return f"{'/'.join(self.path) or '<body>'}: {self.message}"


_CODES = {"maxLength": ("BASE_TYPE_MAX_LENGTH", "Must be {v} or fewer in length."),
          "maxItems": ("BASE_TYPE_MAX_LENGTH", "Must be {v} or fewer in length."),
          "minLength": ("BASE_TYPE_MIN_LENGTH", "Must be {v} or more in length."),
          "minItems": ("BASE_TYPE_MIN_LENGTH", "Must be {v} or more in length."),
          "maximum": ("NUMBER_TYPE_MAX", "Must be less than or equal to {v}."),
          "minimum": ("NUMBER_TYPE_MIN", "Must be greater than or equal to {v}.")}


def _problem(error: Any) -> Problem:
    path = tuple(str(p) for p in error.absolute_path)
    if error.validator in _CODES:
        code, template = _CODES[error.validator]
        size = len(error.instance) if isinstance(error.instance, (str, list)) else error.instance
        return Problem(path, code, template.format(v=error.validator_value) + f" (got {size})")
    if error.validator == "required":
        missing = re.match(r"'([^']+)'", error.message)
        return Problem(path + ((missing.group(1),) if missing else ()), "BASE_TYPE_REQUIRED", "This field is required")
    message = error.message if len(error.message) <= 300 else error.message[:300] + "…"
    return Problem(path, "BASE_TYPE_INVALID", message)
