"""One inference request as the serving path carries it, whichever entry it came through (/v1's views
or the playground's socket: engines/openai/inference.py fills it in for both)."""

import math
import time
from dataclasses import dataclass, field
from typing import Any

from engines.contract import InferPayload
from engines.serving.plan import Plan
from usage import events as usage_events

BLAZE_FIELDS = ("priority",)  # Blaze's own request fields: a remote host is not sent them


@dataclass
class InferenceRequest:
    """Who asks for what, then (`inference.prepare`) what it resolved to and how it validated.

    `endpoint`: chat, completion, embedding, image or image_edit. `body`: the client's request as
    sent, which a remote host is relayed (less `files` and BLAZE_FIELDS). `client_key`: who asks, for
    the routes that keep a client on one target. `generation`: the lookups generation the request
    reads its plan under (`lookups.generation()`; None: Redis did not answer, nothing is cached).
    `deadline`: time.monotonic() by which an answer must have begun, set as serving starts
    (`failover.serve`). `fallback`: set once served, the fallback of the route that answered.
    `user_id`, `api_key_id`, `team_id`, `source` (v1 or playground): whom its usage is counted for
    (usage/events.py); `source` "": no usage is recorded (Blaze's own canaries)."""

    endpoint: str
    body: dict[str, Any]
    client_key: str = ""
    priority: int = 0
    stream: bool = False
    files: dict[str, Any] | None = None
    generation: str | None = None
    deadline: float = math.inf
    plan: Plan | None = None
    data: dict[str, Any] = field(default_factory=dict)
    fallback: str | None = None
    user_id: int | None = None
    api_key_id: int | None = None
    team_id: int | None = None
    source: str = ""
    hold: Any = None  # its budget reservation (usage/budgets.py:Hold), settled when its usage is stored

    @property
    def model(self) -> str | None:
        """The name the request resolved to (None before, or when it named nothing Blaze serves)."""
        return self.plan.name if self.plan is not None else None

    @property
    def payload(self) -> InferPayload:
        """What a local engine runs: the validated request."""
        return self.data["payload"]

    def relayed_body(self) -> dict[str, Any]:
        """What a remote host is sent: the client's body less uploads and Blaze's own fields."""
        return {k: v for k, v in self.body.items() if k not in (self.files or {}) and k not in BLAZE_FIELDS}

    def usage_tags(self, route: str | None) -> dict[str, Any] | None:
        """Who asked and through what, for the usage record of an attempt at `route`'s target (None:
        this request records none)."""
        if not self.source:
            return None
        tags = usage_events.tags(user_id=self.user_id, api_key_id=self.api_key_id, team_id=self.team_id,
                                 source=self.source, endpoint=self.endpoint, route=route)
        if self.hold is not None:
            tags["hold"] = {"id": self.hold.id, "budgets": self.hold.budgets}
        return tags

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()
