"""Registered application commands (bulk overwrite as tree.sync() does it) and interaction data built from them."""

from __future__ import annotations

import copy
import re
from collections import Counter
from typing import Any

from .errors import field_errors, invalid_form_body, merge_errors
from .model import Snowflakes, World

CHAT_INPUT = 1
SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = range(3, 12)
MAX_CHAT_INPUT_COMMANDS = 100
MAX_OPTIONS = 25

# Discord's documented name rule (letters/digits of any script, '-', '_', "'"); the OpenAPI file has no pattern.
_NAME = re.compile(r"^[-_'\w]{1,32}$")
_IGNORED_FOR_VERSION = ("id", "version", "application_id", "guild_id")


def _check_options(options: list[dict[str, Any]], path: tuple[str, ...], errors: dict[str, Any]) -> None:
    if len(options) > MAX_OPTIONS:
        merge_errors(errors, field_errors(path, "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_OPTIONS} or fewer in length."))
    seen: set[str] = set()
    optional_seen = False
    for i, option in enumerate(options):
        where = path + (str(i),)
        name = option.get("name") or ""
        if not _NAME.match(name) or name != name.lower():
            merge_errors(errors, field_errors(where + ("name",), "APPLICATION_COMMAND_INVALID_NAME",
                                              "Command name is invalid"))
        if name in seen:
            merge_errors(errors, field_errors(where + ("name",), "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                                              "Option names must be unique"))
        seen.add(name)
        if not 1 <= len(option.get("description") or "") <= 100:
            merge_errors(errors, field_errors(where + ("description",), "BASE_TYPE_BAD_LENGTH",
                                              "Must be between 1 and 100 in length."))
        if len(option.get("choices") or []) > 25:
            merge_errors(errors, field_errors(where + ("choices",), "BASE_TYPE_MAX_LENGTH",
                                              "Must be 25 or fewer in length."))
        if option.get("type") in (SUB_COMMAND, SUB_COMMAND_GROUP):
            _check_options(option.get("options") or [], where + ("options",), errors)
        elif option.get("required"):
            if optional_seen:
                merge_errors(errors, field_errors(where, "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                                                  "Required options must be placed before non-required options"))
        else:
            optional_seen = True


def check_commands(body: Any) -> None:
    """The rules Discord applies to a bulk overwrite beyond the OpenAPI schema (names, order, duplicates)."""
    if not isinstance(body, list):
        raise invalid_form_body(field_errors((), "BASE_TYPE_ARRAY", "Must be an array."))
    errors: dict[str, Any] = {}
    if sum(1 for c in body if (c.get("type") or CHAT_INPUT) == CHAT_INPUT) > MAX_CHAT_INPUT_COMMANDS:
        merge_errors(errors, field_errors((), "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length."))
    seen: set[tuple[str, int]] = set()
    for i, command in enumerate(body):
        kind = command.get("type") or CHAT_INPUT
        name = command.get("name") or ""
        if kind == CHAT_INPUT and (not _NAME.match(name) or name != name.lower()):
            merge_errors(errors, field_errors((str(i), "name"), "APPLICATION_COMMAND_INVALID_NAME",
                                              "Command name is invalid"))
        if (name, kind) in seen:
            merge_errors(errors, field_errors((str(i), "name"), "APPLICATION_COMMANDS_DUPLICATE_NAME",
                                              "Application command names must be unique"))
        seen.add((name, kind))
        if kind == CHAT_INPUT:
            if not 1 <= len(command.get("description") or "") <= 100:
                merge_errors(errors, field_errors((str(i), "description"), "BASE_TYPE_BAD_LENGTH",
                                                  "Must be between 1 and 100 in length."))
            _check_options(command.get("options") or [], (str(i), "options"), errors)
    if errors:
        raise invalid_form_body(errors)


class CommandStore:
    """Commands per scope (None = global, else a guild id), with stable ids and a version bumped on change."""

    def __init__(self, application_id: int, ids: Snowflakes) -> None:
        self.application_id = application_id
        self.ids = ids
        self._scopes: dict[int | None, list[dict[str, Any]]] = {}
        self.puts: Counter[int | None] = Counter()
        # Discord allows 200 command creates a day per guild; tests check a restart does not recreate.
        self.creates: Counter[int | None] = Counter()

    def list(self, scope: int | None) -> list[dict[str, Any]]:
        return copy.deepcopy(self._scopes.get(scope, []))

    def overwrite(self, scope: int | None, body: list[dict[str, Any]]) -> list[dict[str, Any]]:
        check_commands(body)
        old = {(c["name"], c["type"]): c for c in self._scopes.get(scope, [])}
        stored = []
        for raw in body:
            command = self._normalise(raw, scope)
            previous = old.get((command["name"], command["type"]))
            if previous is None:
                command["id"] = command["version"] = str(self.ids.next())
                self.creates[scope] += 1
            else:
                command["id"] = previous["id"]
                unchanged = _comparable(previous) == _comparable(command)
                command["version"] = previous["version"] if unchanged else str(self.ids.next())
            stored.append(command)
        self._scopes[scope] = stored
        self.puts[scope] += 1
        return copy.deepcopy(stored)

    def _normalise(self, raw: dict[str, Any], scope: int | None) -> dict[str, Any]:
        kind = raw.get("type") or CHAT_INPUT
        perms = raw.get("default_member_permissions")
        command = {
            "application_id": str(self.application_id), "type": kind, "name": raw["name"],
            "name_localizations": raw.get("name_localizations"),
            "description": raw.get("description") or "",
            "description_localizations": raw.get("description_localizations"),
            "options": _strip_nulls(raw.get("options") or []),
            "default_member_permissions": None if perms is None else str(perms),
            "contexts": raw.get("contexts"), "integration_types": raw.get("integration_types") or [0],
            "nsfw": bool(raw.get("nsfw") or False),
        }
        if scope is None:
            command["dm_permission"] = raw.get("dm_permission", True) is not False
        else:
            command["guild_id"] = str(scope)
        return command

    def find(self, name: str, guild_id: int | None, kind: int = CHAT_INPUT) -> dict[str, Any] | None:
        """Guild commands shadow global ones of the same name, as in the Discord client's picker."""
        for scope in ([guild_id] if guild_id else []) + [None]:
            for command in self._scopes.get(scope, []):
                if command["name"] == name and command["type"] == kind:
                    return copy.deepcopy(command)
        return None


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    return value


def _comparable(command: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in command.items() if k not in _IGNORED_FOR_VERSION}


# -- building interaction data from a registered command -------------------------------------------

def build_command_data(command: dict[str, Any], path: list[str], values: dict[str, Any], *, world: World,
                       guild_id: int | None, user_id: int, channel_id: int) -> dict[str, Any]:
    """The ``data`` of an APPLICATION_COMMAND interaction, refusing what the Discord client would not send."""
    data: dict[str, Any] = {"id": command["id"], "name": command["name"], "type": command["type"]}
    if command.get("guild_id"):
        data["guild_id"] = command["guild_id"]
    definitions = command.get("options") or []
    container = data
    for sub in path:
        definition = _find_option(definitions, sub, command["name"])
        if definition["type"] not in (SUB_COMMAND, SUB_COMMAND_GROUP):
            raise ValueError(f"{sub!r} is an option, not a subcommand of {command['name']!r}")
        node: dict[str, Any] = {"name": sub, "type": definition["type"], "options": []}
        container["options"] = [node]
        container, definitions = node, definition.get("options") or []
    if any(d["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for d in definitions):
        raise ValueError(f"{command['name']!r} has subcommands: invoke it as 'name subcommand'")
    resolved: dict[str, dict[str, Any]] = {}
    options = []
    for name, value in values.items():
        definition = _find_option(definitions, name, command["name"])
        options.append({"name": name, "type": definition["type"],
                        "value": _coerce(definition, value, resolved, world, guild_id, user_id, channel_id)})
    missing = [d["name"] for d in definitions if d.get("required") and d["name"] not in values]
    if missing:
        raise ValueError(f"required options missing for {command['name']!r}: {missing}")
    container["options"] = options
    if resolved:
        data["resolved"] = resolved
    return data


def _find_option(definitions: list[dict[str, Any]], name: str, command: str) -> dict[str, Any]:
    for definition in definitions:
        if definition["name"] == name:
            return definition
    raise ValueError(f"{command!r} has no option {name!r} (registered: {[d['name'] for d in definitions]})")


def _coerce(definition: dict[str, Any], value: Any, resolved: dict[str, dict[str, Any]], world: World,
            guild_id: int | None, user_id: int, channel_id: int) -> Any:
    kind, name = definition["type"], definition["name"]
    if kind == STRING and not isinstance(value, str):
        raise ValueError(f"option {name!r} takes a string")
    if kind == INTEGER and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"option {name!r} takes an integer")
    if kind == NUMBER and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"option {name!r} takes a number")
    if kind == BOOLEAN and not isinstance(value, bool):
        raise ValueError(f"option {name!r} takes a boolean")
    if kind in (STRING, INTEGER, NUMBER):
        choices = [c["value"] for c in definition.get("choices") or []]
        if choices and value not in choices:
            raise ValueError(f"option {name!r} must be one of {choices}")
        size = len(value) if kind == STRING else value
        low = definition.get("min_length" if kind == STRING else "min_value")
        high = definition.get("max_length" if kind == STRING else "max_value")
        if (low is not None and size < low) or (high is not None and size > high):
            raise ValueError(f"option {name!r} out of range [{low}, {high}]: {value!r}")
        return value
    if kind == BOOLEAN:
        return value
    target = int(value)
    if kind == MENTIONABLE:
        kind = USER if target in world.users else ROLE
    if kind == USER:
        resolved.setdefault("users", {})[str(target)] = world.user_payload(target)
        if guild_id is not None:
            member = world.member_payload(guild_id, target, with_user=False,
                                          permissions=world.channel_permissions(channel_id, target))
            resolved.setdefault("members", {})[str(target)] = member
    elif kind == CHANNEL:
        if target not in world.channels:
            raise ValueError(f"option {name!r}: unknown channel {target}")
        channel = world.channel_payload(target)
        channel["permissions"] = str(world.channel_permissions(target, user_id))
        resolved.setdefault("channels", {})[str(target)] = channel
    elif kind == ROLE:
        roles = {r.id: r for r in world.guilds[guild_id].roles} if guild_id else {}
        if target not in roles:
            raise ValueError(f"option {name!r}: unknown role {target}")
        resolved.setdefault("roles", {})[str(target)] = world.role_payload(roles[target])
    else:
        raise ValueError(f"option {name!r}: type {kind} (attachments) is not supported by the stand-in")
    return str(target)
