"""Every HTTP attempt of a rate-limited call draws from the rate limiter, botocore's retries too.

:func:`layer_utils.protected.protected_call` draws one token before the call and opens a
:func:`limited_call` scope; the ``before-send`` hook that :func:`install_attempt_draws` puts on every
client (botocore emits ``before-send`` once per HTTP attempt, retries included) draws one more token
for each attempt after the first in that scope. A leaf module: it imports nothing of the layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from botocore.client import BaseClient

_HOOK_ID = "thingpress-attempt-draws"


class Draws(Protocol):
    """What a scope draws from: ``acquire(api)`` blocks until one call of ``api`` is allowed."""

    def acquire(self, api: str) -> float:
        """Block until a call to ``api`` is allowed; return the seconds waited."""
        ...


@dataclass
class _Scope:
    limiter: Draws
    api: str
    sends: int = 0


_SCOPE: ContextVar[_Scope | None] = ContextVar("thingpress_attempt_scope", default=None)


@contextlib.contextmanager
def limited_call(limiter: Draws, api: str) -> Iterator[None]:
    """Mark the block as one rate-limited call of ``api`` whose first attempt is already paid for."""
    token = _SCOPE.set(_Scope(limiter, api))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def _before_send(event_name: str = "", **_kwargs: Any) -> None:
    """Draw a token for every attempt after the first of the scope's API; returns None (send).

    Only sends of the scope's own operation count (``before-send.<service>.<api>``): another request
    made inside the scope, such as the fleet budget renewing its share from within the limiter,
    is not an attempt of the limited call and must not wait on that call's bucket.
    """
    scope = _SCOPE.get()
    if scope is None or event_name.rsplit(".", 1)[-1] != scope.api:
        return
    scope.sends += 1
    if scope.sends > 1:
        scope.limiter.acquire(scope.api)


def install_attempt_draws(client: BaseClient) -> BaseClient:
    """Make the client's retried attempts inside a :func:`limited_call` draw from its limiter.

    Installing twice on the same client is harmless (the hook has a unique id).

    Args:
        client: a boto3 client.

    Returns:
        The same client, for chaining.

    """
    client.meta.events.register("before-send", _before_send, unique_id=_HOOK_ID)
    return client
