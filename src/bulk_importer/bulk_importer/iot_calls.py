"""The IoT calls of one entry, and what an attempt changed in AWS IoT.

``IotCalls`` runs each call through :func:`layer_utils.protected.protected_call` (rate limiter,
circuit breaker ``iot:<Operation>``, typed errors) and counts it; ``Effects`` records what an
attempt did and found, for :mod:`bulk_importer.leftovers`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from layer_utils.jobstore.ledger import ATTACHED, CREATED, FOUND, REGISTERED, LedgerMarks
from layer_utils.messages import ImportEntry
from layer_utils.protected import Limiter, protected_call

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient

    from layer_utils.circuit import CircuitRegistry

ALREADY_EXISTS_CODE = "ResourceAlreadyExistsException"


@dataclass(frozen=True)
class AlreadyExists:
    """The call answered ResourceAlreadyExistsException; the parsed error response."""

    response: Mapping[str, Any]


class IotCalls:
    """Makes the IoT calls of one entry: rate limit, circuit breaker, typed errors and a call count."""

    def __init__(
        self, iot: IoTClient, limiter: Limiter, registry: CircuitRegistry, entry: ImportEntry
    ) -> None:
        """Take the client, the rate limiter, the circuit registry and the entry; no call is made yet."""
        self.iot = iot
        self.limiter = limiter
        self.registry = registry
        self.entry = entry
        self.count = 0
        self.api: str | None = None

    def invoke(self, api: str, method: Callable[..., Any], *, exists_ok: bool = False, **params: Any) -> Any:
        """Call ``method(**params)`` as the IoT operation ``api``, protected.

        Args:
            api: the IoT operation name, e.g. ``CreateThing``.
            method: the client method.
            exists_ok: whether ResourceAlreadyExistsException is an answer rather than an error.
            **params: the call's parameters.

        Returns:
            The response, or ``AlreadyExists`` when ``exists_ok`` and the resource exists.

        """
        self.api = api
        context = {"locator": self.entry.locator, "thing_name": self.entry.thing_name}

        def call() -> Any:
            self.count += 1
            try:
                return method(**params)
            except ClientError as error:
                if exists_ok and error.response.get("Error", {}).get("Code") == ALREADY_EXISTS_CODE:
                    return AlreadyExists(error.response)
                raise

        return protected_call(self.registry, f"iot:{api}", call, limiter=self.limiter, context=context)


@dataclass
class Effects:
    """What one attempt did to AWS IoT, so that a permanent failure can be undone or told.

    ``registered``: the attempt registered the certificate (it did not exist). ``thing_created``: it
    created the thing. ``attached``: it attached the certificate to the thing. ``policies`` and
    ``groups``: the policies it attached and the groups it added the thing to. ``updated``: it merged
    attributes into an existing thing. ``had_policies``: the policies an existing certificate had;
    ``already_attached``: the existing certificate was attached to the thing before;
    ``certificate_active``: the certificate is known to be registered and ACTIVE. ``thing_found``:
    the thing existed (and was not created by this attempt); ``groups_before``: the groups an existing
    thing was read to be in (None when not read: its groups then count as found).
    """

    registered: bool = False
    thing_created: bool = False
    attached: bool = False
    policies: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    updated: bool = False
    had_policies: frozenset[str] = frozenset()
    already_attached: bool = False
    certificate_active: bool = False
    thing_found: bool = False
    groups_before: frozenset[str] | None = None

    def ledger_marks(self) -> LedgerMarks:
        """Return what the attempt made and found, for the job's ledger."""
        added = [
            group
            for group in self.groups
            if self.thing_created or (self.groups_before is not None and group not in self.groups_before)
        ]
        return LedgerMarks(
            certificate=REGISTERED if self.registered else (FOUND if self.certificate_active else None),
            thing=CREATED if self.thing_created else (FOUND if self.thing_found else None),
            principal=ATTACHED if self.attached else (FOUND if self.already_attached else None),
            policies_attached=list(self.policies),
            policies_found=sorted(self.had_policies),
            groups_added=added,
            groups_found=[group for group in self.groups if group not in added],
        )
