"""Register one certificate as an AWS IoT thing with the fewest IoT calls.

A new certificate costs exactly ``3 + P + G`` calls (P policies, G thing groups), in this order:
``RegisterCertificateWithoutCA`` (status ACTIVE), ``CreateThing``, ``AttachThingPrincipal``,
``AttachPolicy`` per policy and ``AddThingToThingGroup`` per group. Nothing is read before a write;
the certificate ARN is computed locally from the function's partition, region and account. Reads
happen only on conflict paths: ``DescribeCertificate`` when the certificate exists already (to refuse
a revoked or inactive one) and ``DescribeThing`` when ``CreateThing`` reports a thing with another
configuration (to report a thing-type conflict, or merge the attributes with one ``UpdateThing``).

Every call is a :func:`layer_utils.protected.protected_call`: it waits for the rate limiter, runs
through its circuit breaker ``iot:<Operation>`` (of the registry passed in) and turns AWS errors into
typed errors. The outcome says
whether the certificate was imported, must be retried later (throttled, transient, circuit open) or
failed for good (with one English sentence naming the entry and the API that failed). Everything is
idempotent, so a retried or redelivered entry can be imported again safely. AWS errors are logged
by ``handle_aws_error``; reporting the outcome is the caller's business.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from layer_utils.cert_utils import certificate_arn, parse_function_arn, thing_arn
from layer_utils.circuit import CircuitOpenError
from layer_utils.errors import AwsOperationError, ErrorClass
from layer_utils.messages import ImportEntry, MessageSettings
from layer_utils.protected import Limiter, protected_call

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient

    from layer_utils.circuit import CircuitRegistry

ALREADY_EXISTS_CODE = "ResourceAlreadyExistsException"
ACTIVE = "ACTIVE"

CONFLICT = "conflict"
"""Error class of a certificate or thing that exists in AWS IoT in a state Thingpress must not touch."""

CIRCUIT_OPEN = "circuit_open"
"""Error class of an entry that was not tried because a circuit breaker was open."""


@dataclass(frozen=True)
class ArnContext:
    """Where the importer runs: the partition, region and account its IoT resources live in."""

    partition: str
    region: str
    account: str

    @classmethod
    def from_function_arn(cls, arn: str) -> ArnContext:
        """Build the context from ``context.invoked_function_arn``; raises ``ValueError`` if malformed."""
        partition, region, account = parse_function_arn(arn)
        return cls(partition=partition, region=region, account=account)

    def certificate_arn(self, certificate_id: str) -> str:
        """Return the ARN of the IoT certificate with this id (SHA-256 fingerprint)."""
        return certificate_arn(
            certificate_id, region=self.region, account=self.account, partition=self.partition
        )

    def thing_arn(self, thing_name: str) -> str:
        """Return the ARN of the IoT thing with this name."""
        return thing_arn(thing_name, region=self.region, account=self.account, partition=self.partition)


class OutcomeStatus(enum.StrEnum):
    """What became of one certificate."""

    IMPORTED = "imported"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class ImportOutcome:
    """The outcome of ``import_certificate`` for one entry.

    ``calls`` counts the IoT calls made (attempted). For RETRY and FAILED, ``api`` is the IoT
    operation that failed (None when no call was involved), ``error_class`` the
    ``layer_utils.aws_utils.ErrorClass`` value, ``conflict`` or ``circuit_open``, and ``reason`` one
    English sentence that names the entry's locator and the failing API (for RETRY: what failed
    this time; the caller decides whether and when to try again).
    """

    entry: ImportEntry
    status: OutcomeStatus
    calls: int
    api: str | None = None
    error_class: str | None = None
    reason: str | None = None

    @property
    def retryable(self) -> bool:
        """Whether the entry should be tried again later."""
        return self.status is OutcomeStatus.RETRY


class _Refused(Exception):
    """A permanent conflict found on a conflict path; ``str()`` is the reason."""

    def __init__(self, api: str, reason: str) -> None:
        self.api = api
        super().__init__(reason)


class _Retry(Exception):
    """A retryable condition found on a conflict path that is not an AWS error."""

    def __init__(self, api: str, reason: str) -> None:
        self.api = api
        super().__init__(reason)


@dataclass(frozen=True)
class _AlreadyExists:
    """The call answered ResourceAlreadyExistsException; the parsed error response."""

    response: Mapping[str, Any]


class _Calls:
    """Makes the IoT calls of one entry: rate limit, circuit breaker, typed errors and a call count."""

    def __init__(
        self, iot: IoTClient, limiter: Limiter, registry: CircuitRegistry, entry: ImportEntry
    ) -> None:
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
            The response, or ``_AlreadyExists`` when ``exists_ok`` and the resource exists.

        """
        self.api = api
        context = {"locator": self.entry.locator, "thing_name": self.entry.thing_name}

        def call() -> Any:
            self.count += 1
            try:
                return method(**params)
            except ClientError as error:
                if exists_ok and error.response.get("Error", {}).get("Code") == ALREADY_EXISTS_CODE:
                    return _AlreadyExists(error.response)
                raise

        return protected_call(self.registry, f"iot:{api}", call, limiter=self.limiter, context=context)


def _register(calls: _Calls, entry: ImportEntry) -> None:
    """Register the certificate ACTIVE, or accept an existing ACTIVE registration of it."""
    api = "RegisterCertificateWithoutCA"
    response = calls.invoke(
        api,
        calls.iot.register_certificate_without_ca,
        exists_ok=True,
        certificatePem=entry.certificate_pem,
        status=ACTIVE,
    )
    if isinstance(response, _AlreadyExists):
        registered_id = str(response.response.get("resourceId") or entry.certificate_id)
        _check_id(api, entry, registered_id)
        description = calls.invoke(
            "DescribeCertificate", calls.iot.describe_certificate, certificateId=registered_id
        )
        status = str(description.get("certificateDescription", {}).get("status", "UNKNOWN"))
        if status != ACTIVE:
            raise _Refused(
                "DescribeCertificate",
                f"{entry.locator}: certificate {registered_id} is {status} in AWS IoT; refusing to attach "
                f"it to thing {entry.thing_name}.",
            )
        return
    _check_id(api, entry, str(response.get("certificateId", "")))


def _check_id(api: str, entry: ImportEntry, registered_id: str) -> None:
    if registered_id != entry.certificate_id:
        raise _Refused(
            api,
            f"{entry.locator}: AWS IoT identifies the certificate as {registered_id}, but its SHA-256 "
            f"fingerprint is {entry.certificate_id}; refusing to attach it to thing {entry.thing_name}.",
        )


def _create_thing(calls: _Calls, entry: ImportEntry, settings: MessageSettings) -> None:
    """Create the thing, or reconcile an existing thing that has another configuration."""
    params: dict[str, Any] = {"thingName": entry.thing_name}
    if settings.thing_type:
        params["thingTypeName"] = settings.thing_type
    if settings.attributes:
        params["attributePayload"] = {"attributes": dict(settings.attributes)}
    response = calls.invoke("CreateThing", calls.iot.create_thing, exists_ok=True, **params)
    if not isinstance(response, _AlreadyExists):
        return
    try:
        existing = calls.invoke("DescribeThing", calls.iot.describe_thing, thingName=entry.thing_name)
    except AwsOperationError as error:
        if error.error_class is ErrorClass.NOT_FOUND:
            raise _Retry(
                "DescribeThing",
                f"{entry.locator}: thing {entry.thing_name} was reported to exist but disappeared before "
                "it could be described.",
            ) from error
        raise
    current_type = existing.get("thingTypeName") or None
    if settings.thing_type and current_type != settings.thing_type:
        shown = f"thing type {current_type}" if current_type else "no thing type"
        raise _Refused(
            "CreateThing",
            f"{entry.locator}: thing {entry.thing_name} exists with {shown}, expected {settings.thing_type}.",
        )
    current_attributes = existing.get("attributes") or {}
    changed = {
        name: value for name, value in settings.attributes.items() if current_attributes.get(name) != value
    }
    if changed:
        calls.invoke(
            "UpdateThing",
            calls.iot.update_thing,
            thingName=entry.thing_name,
            attributePayload={"attributes": changed, "merge": True},
        )


def import_certificate(
    iot: IoTClient,
    entry: ImportEntry,
    settings: MessageSettings,
    *,
    arns: ArnContext,
    limiter: Limiter,
    registry: CircuitRegistry,
) -> ImportOutcome:
    """Register ``entry``'s certificate and create, attach and group its thing in AWS IoT.

    AWS and circuit-breaker errors become RETRY (throttled, transient, circuit open) or FAILED
    (anything else, including ``access_denied``, which ``handle_aws_error`` logs as an error);
    programming errors propagate.

    Args:
        iot: the IoT client.
        entry: the entry (locator, thing name, certificate id and PEM).
        settings: the import settings (policies, thing groups, thing type, attributes).
        arns: where the resources live.
        limiter: the rate limiter shared by the invocation's threads.
        registry: the function's circuit registry.

    Returns:
        The outcome.

    """
    calls = _Calls(iot, limiter, registry, entry)
    cert_arn = arns.certificate_arn(entry.certificate_id)
    target = f"thing {entry.thing_name}"
    try:
        target = f"certificate {entry.certificate_id}"
        _register(calls, entry)
        target = f"thing {entry.thing_name}" + (
            f" of type {settings.thing_type}" if settings.thing_type else ""
        )
        _create_thing(calls, entry, settings)
        target = f"thing {entry.thing_name}"
        calls.invoke(
            "AttachThingPrincipal", iot.attach_thing_principal, thingName=entry.thing_name, principal=cert_arn
        )
        for policy in settings.policies:
            target = f"policy {policy}"
            calls.invoke("AttachPolicy", iot.attach_policy, policyName=policy, target=cert_arn)
        for group in settings.thing_groups:
            target = f"thing group {group}"
            calls.invoke(
                "AddThingToThingGroup",
                iot.add_thing_to_thing_group,
                thingGroupName=group,
                thingName=entry.thing_name,
            )
    except _Refused as refused:
        return ImportOutcome(entry, OutcomeStatus.FAILED, calls.count, refused.api, CONFLICT, str(refused))
    except _Retry as retry:
        return ImportOutcome(
            entry, OutcomeStatus.RETRY, calls.count, retry.api, ErrorClass.TRANSIENT.value, str(retry)
        )
    except CircuitOpenError as error:
        reason = (
            f"{entry.locator}: {calls.api} was not called because the circuit {error.circuit_name} is open."
        )
        return ImportOutcome(entry, OutcomeStatus.RETRY, calls.count, calls.api, CIRCUIT_OPEN, reason)
    except AwsOperationError as error:
        api = error.operation.removeprefix("iot:")
        detail = f"{error.code}: {error.message}" if error.message else error.code
        reason = f"{entry.locator}: {api} for {target} failed ({detail})."
        if error.retryable:
            return ImportOutcome(
                entry, OutcomeStatus.RETRY, calls.count, api, error.error_class.value, reason
            )
        return ImportOutcome(entry, OutcomeStatus.FAILED, calls.count, api, error.error_class.value, reason)
    return ImportOutcome(entry, OutcomeStatus.IMPORTED, calls.count)
