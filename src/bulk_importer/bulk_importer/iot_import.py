"""Register one certificate as an AWS IoT thing with the fewest IoT calls, never taking over.

A new certificate costs exactly ``3 + P + G`` calls (P policies, G thing groups), in this order:
``RegisterCertificateWithoutCA`` (status ACTIVE), ``CreateThing`` (with the ownership attribute
``thingpress-cert=<certificate id>``), ``AttachThingPrincipal`` (``EXCLUSIVE_THING``), ``AttachPolicy``
per policy and ``AddThingToThingGroup`` per group. Nothing is read before a write; the certificate
ARN is computed locally from the function's partition, region and account.

Reads happen only on conflict paths. When the certificate exists already: ``DescribeCertificate``
(a revoked or inactive one is refused), ``ListPrincipalThings`` (a certificate attached to another
thing is refused) and ``ListAttachedPolicies`` (more than 10 policies in all is refused), all before
any write. When ``CreateThing`` reports a thing with another configuration: ``DescribeThing``, and when the
settings name thing groups ``ListThingGroupsForThing`` (the ledger tells the groups the import adds
from those the thing was in). A thing
that Thingpress did not create for this certificate (no ownership attribute naming it) is refused
unless the operator allows adopting existing things; a thing of another type is always refused;
otherwise the settings' attributes are merged with one ``UpdateThing``.

Every call is a :func:`layer_utils.protected.protected_call`: it waits for the rate limiter, runs
through its circuit breaker ``iot:<Operation>`` (of the registry passed in) and turns AWS errors into
typed errors. The outcome says whether the certificate was imported, must be retried later
(throttled, transient, circuit open) or failed for good (with one English sentence naming the entry
and the API that failed). The reason of an entry that fails for good after some of its writes
succeeded names what it leaves in AWS IoT (:mod:`bulk_importer.leftovers`). Everything is idempotent, so
a retried or redelivered entry can be imported again safely. AWS errors are logged by
``handle_aws_error``; reporting the outcome is the caller's business.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bulk_importer.iot_calls import AlreadyExists, Effects, IotCalls
from bulk_importer.leftovers import left_in_iot
from layer_utils.cert_utils import certificate_arn, parse_function_arn, thing_arn
from layer_utils.circuit import CircuitOpenError
from layer_utils.errors import AwsOperationError, ErrorClass
from layer_utils.iot_names import OWNER_ATTRIBUTE
from layer_utils.jobstore.ledger import encode
from layer_utils.messages import ImportEntry, MessageSettings
from layer_utils.protected import Limiter

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient

    from layer_utils.circuit import CircuitRegistry

ACTIVE = "ACTIVE"
EXCLUSIVE_THING = "EXCLUSIVE_THING"

MAX_POLICIES_PER_CERTIFICATE = 10
"""AWS IoT attaches at most 10 policies to one certificate, counting those attached already."""

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
    effects: Effects | None = None
    """What the attempt made and found in AWS IoT (the entry's ledger)."""

    def ledger(self, scope: Mapping[str, Any]) -> dict[str, Any] | None:
        """Return the entry's compact ledger over an item's ``scope`` (None when nothing was touched)."""
        return None if self.effects is None else encode(self.effects.ledger_marks(), scope)

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


def _register(
    calls: IotCalls, entry: ImportEntry, settings: MessageSettings, cert_arn: str, effects: Effects
) -> None:
    """Register the certificate ACTIVE, or accept an existing registration Thingpress may use.

    An existing certificate must be ACTIVE, attached to no thing but the entry's, and have room for
    the settings' policies (at most ``MAX_POLICIES_PER_CERTIFICATE`` in all).

    Raises:
        _Refused: the certificate is not one Thingpress may use.

    """
    api = "RegisterCertificateWithoutCA"
    response = calls.invoke(
        api,
        calls.iot.register_certificate_without_ca,
        exists_ok=True,
        certificatePem=entry.certificate_pem,
        status=ACTIVE,
    )
    if not isinstance(response, AlreadyExists):
        _check_id(api, entry, str(response.get("certificateId", "")))
        effects.registered = effects.certificate_active = True
        return
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
    listed = calls.invoke("ListPrincipalThings", calls.iot.list_principal_things, principal=cert_arn)
    others = sorted(name for name in listed.get("things", []) if name != entry.thing_name)
    if others:
        raise _Refused(
            "ListPrincipalThings",
            f"{entry.locator}: certificate {registered_id} is already attached to thing {others[0]}; "
            f"refusing to attach it to thing {entry.thing_name} too.",
        )
    effects.certificate_active = True
    effects.already_attached = entry.thing_name in listed.get("things", [])
    attached = calls.invoke("ListAttachedPolicies", calls.iot.list_attached_policies, target=cert_arn)
    effects.had_policies = frozenset(str(policy["policyName"]) for policy in attached.get("policies", []))
    total = len(effects.had_policies | set(settings.policies))
    if total > MAX_POLICIES_PER_CERTIFICATE:
        raise _Refused(
            "ListAttachedPolicies",
            f"{entry.locator}: certificate {registered_id} has {len(effects.had_policies)} policies "
            f"attached already; with the settings' policies it would have {total}, more than the "
            f"{MAX_POLICIES_PER_CERTIFICATE} AWS IoT allows.",
        )


def _check_id(api: str, entry: ImportEntry, registered_id: str) -> None:
    if registered_id != entry.certificate_id:
        raise _Refused(
            api,
            f"{entry.locator}: AWS IoT identifies the certificate as {registered_id}, but its SHA-256 "
            f"fingerprint is {entry.certificate_id}; refusing to attach it to thing {entry.thing_name}.",
        )


def _create_thing(
    calls: IotCalls, entry: ImportEntry, settings: MessageSettings, adopt: bool, effects: Effects
) -> None:
    """Create the thing marked as Thingpress's, or reconcile an existing thing Thingpress may use."""
    params: dict[str, Any] = {
        "thingName": entry.thing_name,
        "attributePayload": {"attributes": {**settings.attributes, OWNER_ATTRIBUTE: entry.certificate_id}},
    }
    if settings.thing_type:
        params["thingTypeName"] = settings.thing_type
    response = calls.invoke("CreateThing", calls.iot.create_thing, exists_ok=True, **params)
    if not isinstance(response, AlreadyExists):
        # AWS also answers so for an identical thing: one Thingpress created for this certificate.
        effects.thing_created = not effects.already_attached
        effects.thing_found = effects.already_attached
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
    effects.thing_found = True
    current_attributes = existing.get("attributes") or {}
    owner = current_attributes.get(OWNER_ATTRIBUTE)
    if owner != entry.certificate_id and not adopt:
        made_by = (
            f"was created by Thingpress for certificate {owner}" if owner else "was not created by Thingpress"
        )
        raise _Refused(
            "CreateThing",
            f"{entry.locator}: thing {entry.thing_name} already exists and {made_by}; refusing to take it "
            f"over for certificate {entry.certificate_id}.",
        )
    current_type = existing.get("thingTypeName") or None
    if settings.thing_type and current_type != settings.thing_type:
        shown = f"thing type {current_type}" if current_type else "no thing type"
        raise _Refused(
            "CreateThing",
            f"{entry.locator}: thing {entry.thing_name} exists with {shown}, expected {settings.thing_type}.",
        )
    if settings.thing_groups:
        # The ledger must tell the groups this job adds the existing thing to from those it was in.
        listed = calls.invoke(
            "ListThingGroupsForThing",
            calls.iot.list_thing_groups_for_thing,
            thingName=entry.thing_name,
            maxResults=250,
        )
        effects.groups_before = frozenset(str(group["groupName"]) for group in listed.get("thingGroups", []))
    # An adopted thing keeps its own ownership attribute (or none): Thingpress did not create it.
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
        effects.updated = True


def _attach(calls: IotCalls, entry: ImportEntry, cert_arn: str, effects: Effects) -> None:
    """Attach the certificate to the thing exclusively; another thing holding it is a conflict."""
    try:
        calls.invoke(
            "AttachThingPrincipal",
            calls.iot.attach_thing_principal,
            thingName=entry.thing_name,
            principal=cert_arn,
            thingPrincipalType=EXCLUSIVE_THING,
        )
    except AwsOperationError as error:
        if error.code != "InvalidRequestException":
            raise
        raise _Refused(
            "AttachThingPrincipal",
            f"{entry.locator}: certificate {entry.certificate_id} cannot be attached exclusively to thing "
            f"{entry.thing_name} ({error.message or error.code}).",
        ) from error
    effects.attached = not effects.already_attached


def import_certificate(
    iot: IoTClient,
    entry: ImportEntry,
    settings: MessageSettings,
    *,
    arns: ArnContext,
    limiter: Limiter,
    registry: CircuitRegistry,
    adopt: bool = False,
) -> ImportOutcome:
    """Register ``entry``'s certificate and create, attach and group its thing in AWS IoT.

    AWS and circuit-breaker errors become RETRY (throttled, transient, circuit open) or FAILED
    (anything else, including ``access_denied``, which ``handle_aws_error`` logs as an error);
    programming errors propagate. A FAILED entry's reason names what it leaves in AWS IoT.

    Args:
        iot: the IoT client.
        entry: the entry (locator, thing name, certificate id and PEM).
        settings: the import settings (policies, thing groups, thing type, attributes).
        arns: where the resources live.
        limiter: the rate limiter shared by the invocation's threads.
        registry: the function's circuit registry.
        adopt: whether an existing thing Thingpress did not create may be used (the operator's choice).

    Returns:
        The outcome.

    """
    calls = IotCalls(iot, limiter, registry, entry)
    cert_arn = arns.certificate_arn(entry.certificate_id)
    effects = Effects()
    target = f"thing {entry.thing_name}"
    try:
        target = f"certificate {entry.certificate_id}"
        _register(calls, entry, settings, cert_arn, effects)
        target = f"thing {entry.thing_name}" + (
            f" of type {settings.thing_type}" if settings.thing_type else ""
        )
        _create_thing(calls, entry, settings, adopt, effects)
        target = f"thing {entry.thing_name}"
        _attach(calls, entry, cert_arn, effects)
        for policy in settings.policies:
            target = f"policy {policy}"
            calls.invoke("AttachPolicy", iot.attach_policy, policyName=policy, target=cert_arn)
            if policy not in effects.had_policies:
                effects.policies.append(policy)
        for group in settings.thing_groups:
            target = f"thing group {group}"
            calls.invoke(
                "AddThingToThingGroup",
                iot.add_thing_to_thing_group,
                thingGroupName=group,
                thingName=entry.thing_name,
            )
            effects.groups.append(group)
    except _Refused as refused:
        reason = str(refused) + left_in_iot(entry, effects)
        return ImportOutcome(entry, OutcomeStatus.FAILED, calls.count, refused.api, CONFLICT, reason, effects)
    except _Retry as retry:
        return ImportOutcome(
            entry,
            OutcomeStatus.RETRY,
            calls.count,
            retry.api,
            ErrorClass.TRANSIENT.value,
            str(retry),
            effects,
        )
    except CircuitOpenError as error:
        reason = (
            f"{entry.locator}: {calls.api} was not called because the circuit {error.circuit_name} is open."
        )
        return ImportOutcome(
            entry, OutcomeStatus.RETRY, calls.count, calls.api, CIRCUIT_OPEN, reason, effects
        )
    except AwsOperationError as error:
        api = error.operation.removeprefix("iot:")
        detail = f"{error.code}: {error.message}" if error.message else error.code
        reason = f"{entry.locator}: {api} for {target} failed ({detail})."
        if error.retryable:
            return ImportOutcome(
                entry, OutcomeStatus.RETRY, calls.count, api, error.error_class.value, reason, effects
            )
        reason += left_in_iot(entry, effects)
        return ImportOutcome(
            entry, OutcomeStatus.FAILED, calls.count, api, error.error_class.value, reason, effects
        )
    return ImportOutcome(entry, OutcomeStatus.IMPORTED, calls.count, effects=effects)
