"""What the WebSockets (the dashboard's, the playground's) share: who may open one. The Origin is
checked before a consumer runs (blaze_site/asgi.py: AllowedHostsOriginValidator)."""

from typing import Any

from channels.db import database_sync_to_async

REFUSED = 4403  # a WebSocket close code in the application range: "forbidden"


async def may_see_engines(scope: dict[str, Any]) -> bool:
    """Whether the socket's user is signed in with a role that sees engines."""
    user = scope.get("user")
    return bool(user is not None and user.is_authenticated
                and await database_sync_to_async(user.has_perm)("engines.view_engine"))
