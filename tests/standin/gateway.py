"""The gateway: HELLO, IDENTIFY → READY + GUILD_CREATE, heartbeats, RESUME with replay, op 7 RECONNECT.

Sharding as on Discord: an IDENTIFY with ``shard: [id, count]`` receives only the guilds with
``(guild_id >> 22) % count == id``, and those guilds' events; an invalid shard closes with 4010, and more than
2,500 guilds on one connection with 4011 (sharding required). Several sessions may hold the same shard (a
rolling restart): guild events go to each, an interaction to one of them (see ``delivery``).

Frames are uncompressed JSON text even when the client asks for zlib-stream: discord.py decompresses only
binary frames and reads text frames as they are. A session outlives its socket so a RESUME can replay what
was dispatched while the client was away, with the original sequence numbers.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from typing import Any, Callable

from aiohttp import WSMsgType, web

from .state import StandInState

HELLO, HEARTBEAT, IDENTIFY, RESUME, RECONNECT, REQUEST_MEMBERS, INVALID_SESSION, HEARTBEAT_ACK = 10, 1, 2, 6, 7, 8, 9, 11
DISPATCH = 0
BUFFER = 1000  # dispatches kept per session for RESUME
INVALID_SHARD, SHARDING_REQUIRED = 4010, 4011
MAX_GUILDS_PER_SHARD = 2500


class Connection:
    """One websocket; a single writer task keeps frames in the order they were queued."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.out: asyncio.Queue[str | None] = asyncio.Queue()
        self.writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        while (frame := await self.out.get()) is not None:
            if self.ws.closed:
                continue  # the session buffer still has it for a RESUME
            try:
                await self.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                pass

    def send(self, payload: dict[str, Any] | str) -> None:
        self.out.put_nowait(payload if isinstance(payload, str) else json.dumps(payload))

    async def close(self, code: int) -> None:
        self.out.put_nowait(None)
        await self.writer
        await self.ws.close(code=code)


class Session:
    def __init__(self, *, intents: int, shard: tuple[int, int] | None, guild_ids: list[int]) -> None:
        self.id = secrets.token_hex(16)
        self.intents = intents
        self.shard = shard
        self.guild_ids = guild_ids
        self.seq = 0
        self.buffer: deque[tuple[int, str]] = deque(maxlen=BUFFER)
        self.conn: Connection | None = None
        self.resumable = True

    def dispatch(self, event: str, data: dict[str, Any]) -> int:
        self.seq += 1
        frame = json.dumps({"op": DISPATCH, "t": event, "s": self.seq, "d": data})
        self.buffer.append((self.seq, frame))
        if self.conn is not None:
            self.conn.send(frame)
        return self.seq


class Gateway:
    def __init__(self, state: StandInState, *, bot_token: str, url: Callable[[], str],
                 heartbeat_interval_ms: int, application_flags: int, delivery: str = "newest") -> None:
        self.state = state
        self.bot_token = bot_token
        self.url = url
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.application_flags = application_flags
        self.sessions: dict[str, Session] = {}
        self.connections: set[Connection] = set()
        self.identifies = self.resumes = self.heartbeats = self.invalidations = self.replayed = 0
        self.close_codes: list[int | None] = []  # what clients closed with, in order
        self.ready = asyncio.Event()
        self.delivery = delivery  # "newest" or "round_robin" among the sessions holding a guild
        self.delivered: dict[int, str] = {}  # interaction id -> session id
        self._turn = 0

    # -- dispatching ---------------------------------------------------------------------------------
    def _live(self) -> list[Session]:
        """Sessions newest first, attached ones before detached (those only buffer for a RESUME)."""
        ordered = list(self.sessions.values())[::-1]
        return sorted(ordered, key=lambda s: s.conn is None)

    def broadcast(self, event: str, data: dict[str, Any], intent: int) -> None:
        guild_id = int(data["guild_id"]) if data.get("guild_id") else None
        for session in self.sessions.values():
            if intent and not session.intents & intent:
                continue
            if guild_id in session.guild_ids or guild_id is None and (session.shard is None or session.shard[0] == 0):
                session.dispatch(event, data)  # events outside guilds (DMs) go to shard 0, as on Discord

    def dispatch_one(self, event: str, data: dict[str, Any], guild_id: int | None) -> None:
        """Events such as INTERACTION_CREATE go to one session: one whose shard holds the guild (DMs: shard 0).
        With several (a rolling restart), the newest attached one, or each in turn with "round_robin"."""
        holders = [s for s in self._live()
                   if (guild_id is None and (s.shard is None or s.shard[0] == 0)) or guild_id in s.guild_ids]
        if not holders:
            raise RuntimeError("stand-in: no gateway session to dispatch to (has the client connected?)")
        attached = [s for s in holders if s.conn is not None] or holders
        session = attached[0]
        if self.delivery == "round_robin":
            session = attached[self._turn % len(attached)]
            self._turn += 1
        session.dispatch(event, data)
        if "id" in data:
            self.delivered[int(data["id"])] = session.id

    async def reconnect(self, *, resume: bool) -> int:
        """Send op 7 to every attached session; returns how many were asked."""
        asked = 0
        for session in list(self.sessions.values()):
            if session.conn is not None:
                session.resumable = resume
                session.conn.send({"op": RECONNECT, "d": None})
                asked += 1
        return asked

    async def close(self) -> None:
        for conn in list(self.connections):
            await conn.close(1001)

    # -- the socket ----------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        if request.query.get("v", "10") != "10" or request.query.get("encoding", "json") != "json":
            await ws.close(code=4012, message=b"Invalid API version or encoding")
            return ws
        conn = Connection(ws)
        self.connections.add(conn)
        conn.send({"op": HELLO, "s": None, "t": None,
                   "d": {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["discord-standin"]}})
        session: Session | None = None
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    await conn.close(4002)  # decode error: discord.py only sends JSON text
                    break
                payload = json.loads(msg.data)
                op, data = payload.get("op"), payload.get("d")
                if op == HEARTBEAT:
                    self.heartbeats += 1
                    conn.send({"op": HEARTBEAT_ACK, "s": None, "t": None, "d": None})
                elif op == IDENTIFY:
                    if session is not None:
                        await conn.close(4005)  # already authenticated
                        break
                    if (data or {}).get("token") != self.bot_token:
                        await conn.close(4004)  # authentication failed
                        break
                    refusal = self._shard_refusal(data)
                    if refusal:
                        await conn.close(refusal)
                        break
                    session = self._identify(conn, data)
                elif op == RESUME:
                    session = await self._resume(conn, data or {})
                elif session is None and op not in (3, 4):
                    await conn.close(4003)  # not authenticated
                    break
                elif op == REQUEST_MEMBERS:
                    self._members_chunk(session, data or {})
                elif op not in (3, 4):  # presence and voice state updates are accepted and ignored
                    await conn.close(4001)  # unknown opcode
                    break
        finally:
            self.close_codes.append(ws.close_code)
            if session is not None and session.conn is conn:
                session.conn = None
                if ws.close_code in (1000, 1001):  # a clean close ends the session, as on Discord
                    self.sessions.pop(session.id, None)
            conn.out.put_nowait(None)
            self.connections.discard(conn)
            self.state.notify()
        return ws

    def _shard_refusal(self, data: dict[str, Any]) -> int | None:
        """4010 for a shard that cannot exist, 4011 when one connection would hold too many guilds."""
        shard = data.get("shard")
        if shard is not None:
            if not (isinstance(shard, list) and len(shard) == 2 and all(isinstance(x, int) for x in shard)
                    and shard[1] >= 1 and 0 <= shard[0] < shard[1]):
                return INVALID_SHARD
        held = [g for g in self.state.world.guilds if shard is None or (g >> 22) % shard[1] == shard[0]]
        return SHARDING_REQUIRED if len(held) > MAX_GUILDS_PER_SHARD else None

    def _identify(self, conn: Connection, data: dict[str, Any]) -> Session:
        shard = tuple(data["shard"]) if data.get("shard") else None
        guild_ids = [g for g in self.state.world.guilds
                     if shard is None or (g >> 22) % shard[1] == shard[0]]
        session = Session(intents=int(data.get("intents") or 0), shard=shard, guild_ids=guild_ids)  # type: ignore[arg-type]
        session.conn = conn
        self.sessions[session.id] = session
        world = self.state.world
        ready = {
            "v": 10, "user": dict(world.user_payload(self.state.bot_user_id), verified=True, mfa_enabled=False,
                                  email=None),
            "guilds": [{"id": str(g), "unavailable": True} for g in guild_ids], "session_id": session.id,
            "session_type": "normal", "resume_gateway_url": self.url(), "private_channels": [],
            "relationships": [], "presences": [], "guild_join_requests": [], "user_settings": {}, "auth": {},
            "geo_ordered_rtc_regions": ["local"], "_trace": ["discord-standin"],
            "application": {"id": str(self.state.application_id), "flags": self.application_flags},
        }
        if shard is not None:
            ready["shard"] = list(shard)
        session.dispatch("READY", ready)
        for guild_id in guild_ids:
            session.dispatch("GUILD_CREATE", world.guild_payload(guild_id))
        self.identifies += 1
        self.ready.set()
        self.state.notify()
        return session

    async def _resume(self, conn: Connection, data: dict[str, Any]) -> Session | None:
        session = self.sessions.get(data.get("session_id") or "")
        seq = data.get("seq") or 0
        oldest = session.buffer[0][0] if session and session.buffer else 1
        if data.get("token") != self.bot_token or session is None or not session.resumable or seq < oldest - 1:
            if session is not None:
                self.sessions.pop(session.id, None)
            self.invalidations += 1
            conn.send({"op": INVALID_SESSION, "s": None, "t": None, "d": False})
            return None
        if session.conn is not None and session.conn is not conn:
            await session.conn.close(4000)
        session.conn = conn
        for number, frame in list(session.buffer):
            if number > seq:
                conn.send(frame)
                self.replayed += 1
        session.dispatch("RESUMED", {"_trace": ["discord-standin"]})
        self.resumes += 1
        self.state.notify()
        return session

    def _members_chunk(self, session: Session, data: dict[str, Any]) -> None:
        guild_id = int(data.get("guild_id") or 0)
        if guild_id not in session.guild_ids:
            return
        members = [self.state.world.member_payload(guild_id, m.id) for m in self.state.world.guilds[guild_id].members]
        chunk: dict[str, Any] = {"guild_id": str(guild_id), "members": members, "chunk_index": 0,
                                 "chunk_count": 1, "not_found": []}
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        session.dispatch("GUILD_MEMBERS_CHUNK", chunk)
