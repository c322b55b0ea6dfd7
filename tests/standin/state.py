"""Everything the stand-in remembers, and the Discord rules applied when a request changes it.

REST handlers stay thin: they parse and authorise, then call one method here. Each change wakes
``wait_for`` so tests wait on what a user would see instead of sleeping.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from . import errors as E
from .commands import CommandStore, build_command_data
from .errors import error, field_errors, invalid_form_body
from .interactions import (APPLICATION_COMMAND, ATTACHMENT_SIZE_LIMIT, CHANNEL_MESSAGE,
                           DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE, MESSAGE_COMPONENT, MODAL,
                           UPDATE_MESSAGE, InteractionHandle, new_token)
from .messages import (CHAT_INPUT_COMMAND, DEFAULT, EPHEMERAL, LOADING, MessageView, StoredMessage, check_body,
                       require_not_empty)
from .model import (ADMINISTRATOR, ATTACH_FILES, CREATE_PRIVATE_THREADS, CREATE_PUBLIC_THREADS, MANAGE_MESSAGES,
                    PRIVATE_THREAD, PUBLIC_THREAD, READ_MESSAGE_HISTORY, SEND_MESSAGES, SEND_MESSAGES_IN_THREADS, TEXT,
                    THREAD_TYPES, VIEW_CHANNEL, ChannelSpec, Snowflakes, World, utcnow)

GUILDS, GUILD_MESSAGES, DIRECT_MESSAGES = 1 << 0, 1 << 9, 1 << 12
Emit = Callable[[str, dict[str, Any], int], None]  # event name, data, intent bit (0: always sent)


class StandInState:
    def __init__(self, *, application_id: int, bot_user_id: int, bot_name: str, guilds: list[Any],
                 clock: Callable[[], float], token_lifetime: float, ack_deadline: float) -> None:
        self.application_id = application_id
        self.bot_user_id = bot_user_id
        self.clock = clock
        self.token_lifetime = token_lifetime
        self.ack_deadline = ack_deadline
        self.ids = Snowflakes()
        self.world = World(bot_user_id=bot_user_id, bot_name=bot_name, guilds=guilds, ids=self.ids)
        self.commands = CommandStore(application_id, self.ids)
        self.messages: dict[int, StoredMessage] = {}
        self.interactions: dict[int, InteractionHandle] = {}
        self._by_token: dict[str, InteractionHandle] = {}
        self.emit: Emit = lambda event, data, intent: None
        self.threads_created: list[int] = []
        self.version = 0
        self._changed = asyncio.Event()

    # -- waking waiters ------------------------------------------------------------------------------
    def notify(self) -> None:
        self.version += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float) -> Any:
        try:
            async with asyncio.timeout(timeout):
                while not (result := predicate()):
                    await self._changed.wait()
                return result
        except TimeoutError:
            raise TimeoutError(f"stand-in: condition not met within {timeout}s") from None

    # -- reading -------------------------------------------------------------------------------------
    def views(self, channel_id: int, *, viewer_id: int | None, include_deleted: bool) -> list[MessageView]:
        found = [m for m in self.messages.values() if m.channel_id == channel_id
                 and (include_deleted or m.deleted_at is None)
                 and (not m.ephemeral or (viewer_id is not None and m.viewer_id == viewer_id))]
        return [m.view(self.world) for m in sorted(found, key=lambda m: m.id)]

    def payload(self, message: StoredMessage) -> dict[str, Any]:
        return message.payload(self.world, application_id=self.application_id)

    # -- channel messages (bot token) ----------------------------------------------------------------
    def _bot_permissions(self, channel_id: int) -> int:
        if channel_id not in self.world.channels:
            raise error(E.UNKNOWN_CHANNEL)
        perms = self.world.channel_permissions(channel_id, self.bot_user_id)
        if not perms & VIEW_CHANNEL:
            raise error(E.MISSING_ACCESS)
        return perms

    def _channel_message(self, channel_id: int, message_id: int) -> StoredMessage:
        message = self.messages.get(message_id)
        if message is None or message.channel_id != channel_id or message.deleted_at or message.ephemeral:
            raise error(E.UNKNOWN_MESSAGE)
        return message

    def channel_payload(self, channel_id: int) -> dict[str, Any]:
        self._bot_permissions(channel_id)
        return self.world.channel_payload(channel_id)

    def send_channel_message(self, channel_id: int, body: dict[str, Any], files: list[dict[str, Any]]) -> StoredMessage:
        perms = self._bot_permissions(channel_id)
        is_thread = self.world.channels[channel_id].type_value in THREAD_TYPES
        if not perms & (SEND_MESSAGES_IN_THREADS if is_thread else SEND_MESSAGES):
            raise error(E.MISSING_PERMISSIONS)
        if files and not perms & ATTACH_FILES:
            raise error(E.MISSING_PERMISSIONS)
        if body.get("message_reference") and not perms & READ_MESSAGE_HISTORY:
            raise error(E.MISSING_PERMISSIONS)
        body = dict(body, flags=(body.get("flags") or 0) & ~EPHEMERAL)  # channel messages cannot be ephemeral
        kind = 19 if body.get("message_reference") else DEFAULT  # 19: REPLY
        return self._create(channel_id, body, files, author_id=self.bot_user_id, kind=kind)

    def create_thread(self, channel_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """POST /channels/{id}/threads without a message: a public (11) or private (12) thread of a text channel."""
        parent = self.world.channels.get(channel_id)
        if parent is None:
            raise error(E.UNKNOWN_CHANNEL)
        kind = body.get("type", PRIVATE_THREAD)  # Discord's default for a thread without a message: private
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise invalid_form_body(field_errors("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."))
        if parent.type_value != TEXT or kind not in (PUBLIC_THREAD, PRIVATE_THREAD):
            raise invalid_form_body(field_errors("type", "BASE_TYPE_CHOICES", "Value must be one of {11, 12}."))
        perms = self._bot_permissions(channel_id)
        if not perms & (CREATE_PUBLIC_THREADS if kind == PUBLIC_THREAD else CREATE_PRIVATE_THREADS):
            raise error(E.MISSING_PERMISSIONS)
        thread = ChannelSpec(self.world.ids.next(), name=name, type=kind, parent_id=channel_id)
        guild_id = self.world.channel_guild[channel_id]
        self.world.channels[thread.id] = thread
        self.world.channel_guild[thread.id] = guild_id
        self.world.guilds[guild_id].channels.append(thread)
        self.threads_created.append(thread.id)
        payload = self.world.channel_payload(thread.id)
        self.emit("THREAD_CREATE", dict(payload, newly_created=True), GUILDS)
        self.notify()
        return payload

    def get_channel_message(self, channel_id: int, message_id: int) -> StoredMessage:
        if not self._bot_permissions(channel_id) & READ_MESSAGE_HISTORY:
            raise error(E.MISSING_ACCESS)
        return self._channel_message(channel_id, message_id)

    def list_channel_messages(self, channel_id: int, limit: int) -> list[StoredMessage]:
        if not self._bot_permissions(channel_id) & READ_MESSAGE_HISTORY:
            return []  # Discord answers an empty list rather than an error here
        found = [m for m in self.messages.values() if m.channel_id == channel_id and not m.deleted_at
                 and not m.ephemeral]
        return sorted(found, key=lambda m: m.id, reverse=True)[:max(1, min(limit, 100))]

    def edit_channel_message(self, channel_id: int, message_id: int, body: dict[str, Any],
                             files: list[dict[str, Any]]) -> StoredMessage:
        self._bot_permissions(channel_id)
        message = self._channel_message(channel_id, message_id)
        if message.author_id != self.bot_user_id:
            raise error(E.CANNOT_EDIT_OTHERS)
        return self._edit(message, body, files)

    def delete_channel_message(self, channel_id: int, message_id: int) -> None:
        perms = self._bot_permissions(channel_id)
        message = self._channel_message(channel_id, message_id)
        if message.author_id != self.bot_user_id and not perms & (MANAGE_MESSAGES | ADMINISTRATOR):
            raise error(E.MISSING_PERMISSIONS)
        self._delete(message)

    # -- shared message mechanics ----------------------------------------------------------------------
    def _attachments(self, existing: list[dict[str, Any]], body: dict[str, Any],
                     files: list[dict[str, Any]], channel_id: int) -> list[dict[str, Any]] | None:
        """Keep the existing attachments the body still lists, and turn uploaded files into attachments."""
        if "attachments" not in body and not files:
            return None
        keep_ids = {str(a.get("id")) for a in body.get("attachments") or []}
        kept = [a for a in existing if a["id"] in keep_ids] if "attachments" in body else list(existing)
        for upload in files:
            attachment_id = str(self.ids.next())
            url = f"https://cdn.discordapp.com/attachments/{channel_id}/{attachment_id}/{upload['filename']}"
            kept.append({"id": attachment_id, "filename": upload["filename"], "size": upload["size"],
                         "url": url, "proxy_url": url, "content_type": upload.get("content_type")})
        return kept

    def _create(self, channel_id: int, body: dict[str, Any], files: list[dict[str, Any]], *, author_id: int,
                kind: int, prefix: tuple[str, ...] = (), viewer_id: int | None = None,
                interaction: InteractionHandle | None = None, extra_flags: int = 0) -> StoredMessage:
        check_body(body, prefix=prefix)
        attachments = self._attachments([], body, files, channel_id)
        fields = dict(body) if attachments is None else dict(body, attachments=attachments)
        if not extra_flags & LOADING:
            require_not_empty(fields)
        message = StoredMessage(id=self.ids.next(), channel_id=channel_id,
                                guild_id=self.world.channel_guild.get(channel_id), author_id=author_id, type=kind,
                                interaction_id=interaction.id if interaction else None,
                                webhook_id=self.application_id if interaction else None)
        message.apply(fields, self.world, editing=False)
        message.flags |= extra_flags
        message.viewer_id = viewer_id if message.ephemeral else None
        self.messages[message.id] = message
        if not message.ephemeral:
            self._emit_message("MESSAGE_CREATE", message)
        self.notify()
        return message

    def _edit(self, message: StoredMessage, body: dict[str, Any], files: list[dict[str, Any]]) -> StoredMessage:
        check_body(body)
        attachments = self._attachments(message.attachments, body, files, message.channel_id)
        fields = dict(body) if attachments is None else dict(body, attachments=attachments)
        merged = {key: fields.get(key, getattr(message, key)) for key in ("content", "embeds", "attachments",
                                                                           "components")}
        require_not_empty(merged)
        message.apply(fields, self.world, editing=True)
        if not message.ephemeral:
            self._emit_message("MESSAGE_UPDATE", message)
        self.notify()
        return message

    def _delete(self, message: StoredMessage) -> None:
        message.deleted_at = utcnow()
        if not message.ephemeral:
            data = {"id": str(message.id), "channel_id": str(message.channel_id)}
            if message.guild_id is not None:
                data["guild_id"] = str(message.guild_id)
            self.emit("MESSAGE_DELETE", data, GUILD_MESSAGES if message.guild_id else DIRECT_MESSAGES)
        self.notify()

    def _emit_message(self, event: str, message: StoredMessage) -> None:
        data = self.payload(message)
        if message.guild_id is not None:
            data["guild_id"] = str(message.guild_id)
            data["member"] = self.world.member_payload(message.guild_id, message.author_id, with_user=False)
        self.emit(event, data, GUILD_MESSAGES if message.guild_id else DIRECT_MESSAGES)

    # -- building interactions -------------------------------------------------------------------------
    def _interaction_base(self, kind: int, *, guild_id: int | None, channel_id: int, user_id: int,
                          member_permissions: int | None, locale: str) -> tuple[dict[str, Any], int]:
        world = self.world
        iid = self.ids.next()
        payload: dict[str, Any] = {
            "id": str(iid), "application_id": str(self.application_id), "type": kind, "token": new_token(),
            "version": 1, "locale": locale, "entitlements": [], "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
            "channel_id": str(channel_id), "channel": world.channel_payload(channel_id),
        }
        if guild_id is not None:
            world.ensure_member(guild_id, user_id)
            perms = world.channel_permissions(channel_id, user_id) if member_permissions is None else member_permissions
            payload.update({
                "guild_id": str(guild_id), "guild": {"id": str(guild_id), "locale": "en-US", "features": []},
                "guild_locale": "en-US", "context": 0, "authorizing_integration_owners": {"0": str(guild_id)},
                "member": world.member_payload(guild_id, user_id, permissions=perms),
                "app_permissions": str(world.channel_permissions(channel_id, self.bot_user_id)),
            })
            payload["channel"]["permissions"] = str(perms)
        else:
            perms = member_permissions or 0
            payload.update({"user": world.user_payload(user_id), "context": 1,
                            "authorizing_integration_owners": {"0": "0"},
                            "app_permissions": str(world.channel_permissions(channel_id, self.bot_user_id))})
        return payload, perms

    def _register(self, payload: dict[str, Any], *, name: str, guild_id: int | None, channel_id: int,
                  user_id: int, message_id: int | None = None) -> InteractionHandle:
        now = self.clock()
        handle = InteractionHandle(self, id=int(payload["id"]), token=payload["token"], kind=payload["type"],
                                   name=name, guild_id=guild_id, channel_id=channel_id, user_id=user_id,
                                   payload=payload, dispatched_at=now, expires_at=now + self.token_lifetime,
                                   message_id=message_id)
        self.interactions[handle.id] = handle
        self._by_token[handle.token] = handle
        return handle

    def new_command(self, name: str, options: dict[str, Any], *, guild_id: int | None, channel_id: int,
                    user_id: int, member_permissions: int | None, locale: str) -> InteractionHandle:
        path = name.split()
        command = self.commands.find(path[0], guild_id)
        if command is None:
            raise LookupError(f"/{path[0]} is not registered for guild {guild_id} or globally (did the bot sync?)")
        payload, perms = self._interaction_base(APPLICATION_COMMAND, guild_id=guild_id, channel_id=channel_id,
                                                user_id=user_id, member_permissions=member_permissions,
                                                locale=locale)
        contexts = command.get("contexts")
        if contexts is not None and payload["context"] not in contexts:
            raise PermissionError(f"/{path[0]} is not available in context {payload['context']}")
        required = command.get("default_member_permissions")
        if guild_id is not None and required is not None and not perms & ADMINISTRATOR \
                and perms & int(required) != int(required):
            raise PermissionError(f"/{path[0]} needs permissions {required}; the Discord client hides it")
        payload["data"] = build_command_data(command, path[1:], options, world=self.world, guild_id=guild_id,
                                             user_id=user_id, channel_id=channel_id)
        return self._register(payload, name=name, guild_id=guild_id, channel_id=channel_id, user_id=user_id)

    def new_component(self, message_id: int, custom_id: str, *, user_id: int, component_type: int,
                      values: list[str] | None, locale: str) -> InteractionHandle:
        message = self.messages.get(message_id)
        if message is None or message.deleted_at:
            raise LookupError(f"no message {message_id}")
        payload, _ = self._interaction_base(MESSAGE_COMPONENT, guild_id=message.guild_id,
                                            channel_id=message.channel_id, user_id=user_id,
                                            member_permissions=None, locale=locale)
        payload["message"] = self.payload(message)
        payload["data"] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            payload["data"]["values"] = values
        return self._register(payload, name=custom_id, guild_id=message.guild_id, channel_id=message.channel_id,
                              user_id=user_id, message_id=message_id)

    # -- interaction callback and webhook routes -------------------------------------------------------
    def callback(self, interaction_id: int, token: str, body: dict[str, Any]) -> dict[str, Any] | None:
        handle = self.interactions.get(interaction_id)
        if handle is None or handle.token != token:
            raise error(E.UNKNOWN_INTERACTION)
        if handle.acknowledged:
            raise error(E.ALREADY_ACKNOWLEDGED)
        now = self.clock()
        if now - handle.dispatched_at > self.ack_deadline or now >= handle.expires_at:
            raise error(E.UNKNOWN_INTERACTION)
        kind, data = body.get("type"), body.get("data") or {}
        allowed = {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, MODAL}
        if handle.kind == MESSAGE_COMPONENT:
            allowed |= {DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE}
        if kind not in allowed:
            raise invalid_form_body(field_errors(("type",), "INTERACTION_CALLBACK_TYPE_INVALID",
                                                 f"Interaction callback type {kind} is not valid here"))
        message: StoredMessage | None = None
        if kind == CHANNEL_MESSAGE:
            message = self._create(handle.channel_id, data, [], author_id=self.bot_user_id, kind=CHAT_INPUT_COMMAND,
                                   prefix=("data",), viewer_id=handle.user_id, interaction=handle)
        elif kind == DEFERRED_CHANNEL_MESSAGE:
            flags = LOADING | ((data.get("flags") or 0) & EPHEMERAL)
            message = self._create(handle.channel_id, {}, [], author_id=self.bot_user_id, kind=CHAT_INPUT_COMMAND,
                                   viewer_id=handle.user_id, interaction=handle, extra_flags=flags)
        elif kind == UPDATE_MESSAGE:
            message = self._edit(self.messages[handle.message_id], data, [])  # type: ignore[index]
        elif kind == MODAL:
            handle.modal = data
        handle.response_type, handle.responded_at = kind, now
        if message is not None and kind != UPDATE_MESSAGE:
            handle.original_id = message.id
            handle.response_flags = message.flags
        self.notify()
        response: dict[str, Any] = {"interaction": {"id": str(handle.id), "type": handle.kind}}
        if message is not None:
            response["interaction"].update({"response_message_id": str(message.id),
                                            "response_message_loading": message.loading,
                                            "response_message_ephemeral": message.ephemeral})
            if kind in (CHANNEL_MESSAGE, UPDATE_MESSAGE):
                response["resource"] = {"type": kind, "message": self.payload(message)}
        return response

    def _webhook(self, webhook_id: int, token: str) -> InteractionHandle:
        if webhook_id != self.application_id:
            raise error(E.UNKNOWN_WEBHOOK)
        handle = self._by_token.get(token)
        if handle is None or self.clock() >= handle.expires_at:
            raise error(E.INVALID_WEBHOOK_TOKEN)
        return handle

    def _webhook_message(self, handle: InteractionHandle, message_id: str) -> StoredMessage:
        if message_id == "@original":
            target = handle.original_id
        else:
            target = int(message_id) if message_id.isdigit() else None
            if target not in handle.followup_ids and target != handle.original_id:
                target = None
        message = self.messages.get(target) if target is not None else None
        if message is None or message.deleted_at:
            raise error(E.UNKNOWN_MESSAGE)
        return message

    def followup(self, webhook_id: int, token: str, body: dict[str, Any],
                 files: list[dict[str, Any]]) -> StoredMessage:
        handle = self._webhook(webhook_id, token)
        if not handle.acknowledged:
            raise error(E.UNKNOWN_WEBHOOK)
        original = self.messages.get(handle.original_id) if handle.original_id else None
        if original is not None and original.loading and not original.deleted_at:
            # Discord's documented compatibility rule: the first follow-up after a deferred response edits
            # the "thinking…" message instead of creating one, and keeps the defer's ephemerality.
            return self._edit(original, {k: v for k, v in body.items() if k != "flags"}, files)
        message = self._create(handle.channel_id, body, files, author_id=self.bot_user_id, kind=DEFAULT,
                               viewer_id=handle.user_id, interaction=handle)
        handle.followup_ids.append(message.id)
        self.notify()
        return message

    def get_webhook_message(self, webhook_id: int, token: str, message_id: str) -> StoredMessage:
        return self._webhook_message(self._webhook(webhook_id, token), message_id)

    def edit_webhook_message(self, webhook_id: int, token: str, message_id: str, body: dict[str, Any],
                             files: list[dict[str, Any]]) -> StoredMessage:
        message = self._webhook_message(self._webhook(webhook_id, token), message_id)
        return self._edit(message, body, files)  # apply() keeps ephemerality, as Discord does

    def delete_webhook_message(self, webhook_id: int, token: str, message_id: str) -> None:
        self._delete(self._webhook_message(self._webhook(webhook_id, token), message_id))

    def expire(self, handle: InteractionHandle) -> None:
        handle.expires_at = min(handle.expires_at, self.clock())
        self.notify()
