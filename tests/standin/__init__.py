"""A local stand-in for Discord (REST API v10 + gateway) that the real, unmodified discord.py talks to.

Point discord.py at it before the client logs in (and restore afterwards)::

    import discord, yarl
    from discord.gateway import DiscordWebSocket
    discord.http.Route.BASE = standin.api_base_url
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(standin.gateway_url)

It is the server side only: nothing in this package imports discord.py.
"""

from .errors import DiscordError
from .interactions import InteractionHandle
from .messages import MessageView, Revision
from .model import (DEFAULT_BOT_PERMISSIONS, DEFAULT_EVERYONE_PERMISSIONS, ChannelSpec, GuildSpec, MemberSpec,
                    Overwrite, RoleSpec)
from .ratelimit import Limits
from .rest import RequestRecord
from .server import DiscordStandIn

__all__ = [
    "DiscordStandIn", "GuildSpec", "ChannelSpec", "RoleSpec", "MemberSpec", "Overwrite", "Limits",
    "InteractionHandle", "MessageView", "Revision", "RequestRecord", "DiscordError",
    "DEFAULT_BOT_PERMISSIONS", "DEFAULT_EVERYONE_PERMISSIONS",
]
