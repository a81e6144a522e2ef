"""import_certificate on moto: the exact IoT calls per certificate, the end state and every failure path."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from bulk_importer.iot_import import ArnContext, ImportOutcome, OutcomeStatus, import_certificate
from layer_utils.circuit import CircuitRegistry
from layer_utils.iot_names import OWNER_ATTRIBUTE
from layer_utils.messages import ImportEntry, MessageSettings
from testing.helpers import mock_aws_with_valid_certs
from thingpress.certfactory import Issued, make_ca, make_device_cert
from thingpress.local.server import MotoFidelity

ARNS = ArnContext(partition="aws", region="us-east-1", account="123456789012")
HAPPY = ["RegisterCertificateWithoutCA", "CreateThing", "AttachThingPrincipal"]


class RecordingLimiter:
    """Grants every call at once and remembers which APIs asked."""

    def __init__(self) -> None:
        self.apis: list[str] = []

    def acquire(self, api: str) -> float:
        self.apis.append(api)
        return 0.0


class Recorder:
    """Counts the IoT calls a client makes, by operation name, through a botocore event hook."""

    def __init__(self, client: Any) -> None:
        self.calls: list[str] = []
        client.meta.events.register("before-call.iot.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca("Thingpress Test CA")


@pytest.fixture
def iot() -> Iterator[Any]:
    with mock_aws_with_valid_certs():
        yield boto3.client("iot", region_name="us-east-1")


def entry_for(cert: Issued, thing_name: str, locator: str = "row 1") -> ImportEntry:
    return ImportEntry(
        locator=locator,
        thing_name=thing_name,
        certificate_id=hashlib.sha256(cert.der()).hexdigest(),
        certificate_pem=cert.pem(),
    )


def make_policy(iot: Any, name: str) -> None:
    iot.create_policy(
        policyName=name,
        policyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}]}',
    )


def run(
    iot: Any,
    entry: ImportEntry,
    settings: MessageSettings,
    registry: CircuitRegistry | None = None,
    *,
    adopt: bool = False,
) -> tuple[ImportOutcome, list[str]]:
    limiter = RecordingLimiter()
    outcome = import_certificate(
        iot, entry, settings, arns=ARNS, limiter=limiter, registry=registry or CircuitRegistry(), adopt=adopt
    )
    assert outcome.calls == len(limiter.apis)
    return outcome, limiter.apis


@pytest.mark.parametrize(("policies", "groups"), [(1, 1), (2, 3), (0, 0)])
def test_new_certificate_costs_exactly_3_plus_p_plus_g_calls(
    iot: Any, ca: Issued, policies: int, groups: int
) -> None:
    policy_names = tuple(f"policy-{i}" for i in range(policies))
    group_names = tuple(f"group-{i}" for i in range(groups))
    for name in policy_names:
        make_policy(iot, name)
    for name in group_names:
        iot.create_thing_group(thingGroupName=name)
    typed = policies > 0
    if typed:
        iot.create_thing_type(thingTypeName="sensor")
    settings = MessageSettings(
        policies=policy_names,
        thing_groups=group_names,
        thing_type="sensor" if typed else None,
        attributes={"batch": "42", "vendor": "espressif"} if typed else {},
    )
    entry = entry_for(make_device_cert("dev-1", ca), "dev-1")
    recorder = Recorder(iot)

    outcome, limited = run(iot, entry, settings)

    expected = HAPPY + ["AttachPolicy"] * policies + ["AddThingToThingGroup"] * groups
    assert outcome.status is OutcomeStatus.IMPORTED
    assert outcome.reason is None
    assert recorder.calls == expected
    assert len(expected) == 3 + policies + groups
    assert limited == expected  # every call went through the rate limiter

    cert_arn = ARNS.certificate_arn(entry.certificate_id)
    certificate = iot.describe_certificate(certificateId=entry.certificate_id)["certificateDescription"]
    assert certificate["status"] == "ACTIVE"
    assert certificate["certificateArn"] == cert_arn
    thing = iot.describe_thing(thingName="dev-1")
    assert thing.get("thingTypeName") == settings.thing_type
    assert thing["attributes"] == {**settings.attributes, OWNER_ATTRIBUTE: entry.certificate_id}
    assert iot.list_thing_principals(thingName="dev-1")["principals"] == [cert_arn]
    attached = {p["policyName"] for p in iot.list_attached_policies(target=cert_arn)["policies"]}
    assert attached == set(policy_names)
    for group in group_names:
        assert iot.list_things_in_thing_group(thingGroupName=group)["things"] == ["dev-1"]


def test_reimport_of_the_same_certificate_costs_three_reads_more(iot: Any, ca: Issued) -> None:
    make_policy(iot, "p")
    iot.create_thing_group(thingGroupName="g")
    settings = MessageSettings(policies=("p",), thing_groups=("g",))
    entry = entry_for(make_device_cert("dev-2", ca), "dev-2")
    assert run(iot, entry, settings)[0].status is OutcomeStatus.IMPORTED
    recorder = Recorder(iot)

    outcome, _ = run(iot, entry, settings)

    assert outcome.status is OutcomeStatus.IMPORTED
    assert recorder.calls == [
        "RegisterCertificateWithoutCA",
        "DescribeCertificate",
        "ListPrincipalThings",
        "ListAttachedPolicies",
        "CreateThing",
        "AttachThingPrincipal",
        "AttachPolicy",
        "AddThingToThingGroup",
    ]
    cert_arn = ARNS.certificate_arn(entry.certificate_id)
    assert iot.list_thing_principals(thingName="dev-2")["principals"] == [cert_arn]
    assert [p["policyName"] for p in iot.list_attached_policies(target=cert_arn)["policies"]] == ["p"]
    assert iot.list_things_in_thing_group(thingGroupName="g")["things"] == ["dev-2"]


@pytest.mark.parametrize("status", ["REVOKED", "INACTIVE"])
def test_revoked_or_inactive_certificate_is_refused(iot: Any, ca: Issued, status: str) -> None:
    entry = entry_for(make_device_cert("dev-3", ca), "dev-3", locator="line 17")
    iot.register_certificate_without_ca(certificatePem=entry.certificate_pem, status="ACTIVE")
    iot.update_certificate(certificateId=entry.certificate_id, newStatus=status)
    recorder = Recorder(iot)

    outcome, _ = run(iot, entry, MessageSettings(policies=("p",)))

    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error_class == "conflict"
    assert outcome.api == "DescribeCertificate"
    assert outcome.reason == (
        f"line 17: certificate {entry.certificate_id} is {status} in AWS IoT; "
        "refusing to attach it to thing dev-3."
    )
    assert recorder.calls == ["RegisterCertificateWithoutCA", "DescribeCertificate"]
    assert iot.list_things()["things"] == []


def test_certificate_id_that_is_not_the_fingerprint_is_refused(iot: Any, ca: Issued) -> None:
    real = entry_for(make_device_cert("dev-4", ca), "dev-4")
    entry = ImportEntry(real.locator, real.thing_name, "0" * 64, real.certificate_pem)

    outcome, calls = run(iot, entry, MessageSettings())

    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error_class == "conflict"
    assert outcome.api == "RegisterCertificateWithoutCA"
    assert real.certificate_id in (outcome.reason or "")
    assert "0" * 64 in (outcome.reason or "")
    assert calls == ["RegisterCertificateWithoutCA"]
    assert iot.list_things()["things"] == []


class AwsLikeIot:
    """Wraps the moto client: CreateThing on a thing with another configuration raises
    ResourceAlreadyExistsException as AWS does (moto overwrites), and chosen operations can be made
    to fail with a given error. Records every operation called through it."""

    def __init__(self, client: Any, failures: dict[str, BaseException] | None = None) -> None:
        self._client = client
        self._failures = failures or {}
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append(name)
            if name in self._failures:
                raise self._failures[name]
            return method(**kwargs)

        return call

    def create_thing(self, **kwargs: Any) -> Any:
        self.calls.append("create_thing")
        try:
            current = self._client.describe_thing(thingName=kwargs["thingName"])
        except self._client.exceptions.ResourceNotFoundException:
            return self._client.create_thing(**kwargs)
        wanted = kwargs.get("attributePayload", {}).get("attributes", {})
        if current.get("thingTypeName") != kwargs.get("thingTypeName") or current.get("attributes") != wanted:
            raise ClientError(
                {
                    "Error": {"Code": "ResourceAlreadyExistsException", "Message": "Thing already exists"},
                    "ResponseMetadata": {"HTTPStatusCode": 409},
                    "resourceId": current["thingId"],
                    "resourceArn": current["thingArn"],
                },
                "CreateThing",
            )
        return {
            "thingName": current["thingName"],
            "thingArn": current["thingArn"],
            "thingId": current["thingId"],
        }


def client_error(code: str, message: str, status: int, operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


def test_existing_thing_with_another_type_is_a_conflict(iot: Any, ca: Issued) -> None:
    iot.create_thing_type(thingTypeName="gateway")
    iot.create_thing_type(thingTypeName="sensor")
    entry = entry_for(make_device_cert("dev-5", ca), "dev-5", locator="uniqueId 0123ABCD")
    mark = {"attributes": {OWNER_ATTRIBUTE: entry.certificate_id}}  # Thingpress made it, as a gateway
    iot.create_thing(thingName="dev-5", thingTypeName="gateway", attributePayload=mark)
    wrapped = AwsLikeIot(iot)

    outcome, _ = run(wrapped, entry, MessageSettings(thing_type="sensor", policies=("p",)))  # type: ignore[arg-type]

    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error_class == "conflict"
    assert outcome.api == "CreateThing"
    assert outcome.reason == (
        "uniqueId 0123ABCD: thing dev-5 exists with thing type gateway, expected sensor. Left in AWS IoT: "
        f"certificate {entry.certificate_id} (ACTIVE, attached to no thing, with no policy)."
    )
    assert wrapped.calls == ["register_certificate_without_ca", "create_thing", "describe_thing"]
    assert iot.describe_thing(thingName="dev-5")["thingTypeName"] == "gateway"


def test_existing_thing_without_type_is_a_conflict_when_a_type_is_wanted(iot: Any, ca: Issued) -> None:
    iot.create_thing_type(thingTypeName="sensor")
    iot.create_thing(thingName="dev-6")
    entry = entry_for(make_device_cert("dev-6", ca), "dev-6")

    outcome, _ = run(AwsLikeIot(iot), entry, MessageSettings(thing_type="sensor"), adopt=True)  # type: ignore[arg-type]

    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.reason is not None
    assert outcome.reason.startswith(
        "row 1: thing dev-6 exists with no thing type, expected sensor. Left in AWS IoT:"
    )


def test_adopted_thing_with_other_attributes_is_merged_with_one_update(iot: Any, ca: Issued) -> None:
    iot.create_thing_type(thingTypeName="sensor")
    iot.create_thing(
        thingName="dev-7",
        thingTypeName="sensor",
        attributePayload={"attributes": {"site": "lyon", "batch": "1"}},
    )
    wrapped = AwsLikeIot(iot)
    entry = entry_for(make_device_cert("dev-7", ca), "dev-7")
    settings = MessageSettings(thing_type="sensor", attributes={"batch": "2", "vendor": "infineon"})

    outcome, limited = run(wrapped, entry, settings, adopt=True)  # type: ignore[arg-type]

    assert outcome.status is OutcomeStatus.IMPORTED
    assert wrapped.calls == [
        "register_certificate_without_ca",
        "create_thing",
        "describe_thing",
        "update_thing",
        "attach_thing_principal",
    ]
    assert limited == [
        "RegisterCertificateWithoutCA",
        "CreateThing",
        "DescribeThing",
        "UpdateThing",
        "AttachThingPrincipal",
    ]
    thing = iot.describe_thing(thingName="dev-7")
    # An adopted thing gets no ownership attribute: Thingpress did not create it.
    assert thing["attributes"] == {"site": "lyon", "batch": "2", "vendor": "infineon"}
    assert thing["thingTypeName"] == "sensor"


def test_existing_identical_thing_needs_no_extra_call(iot: Any, ca: Issued) -> None:
    entry = entry_for(make_device_cert("dev-8", ca), "dev-8")
    mark = {"attributes": {"a": "1", OWNER_ATTRIBUTE: entry.certificate_id}}
    iot.create_thing(thingName="dev-8", attributePayload=mark)
    wrapped = AwsLikeIot(iot)

    outcome, _ = run(wrapped, entry, MessageSettings(attributes={"a": "1"}))  # type: ignore[arg-type]

    assert outcome.status is OutcomeStatus.IMPORTED
    assert wrapped.calls == ["register_certificate_without_ca", "create_thing", "attach_thing_principal"]


def test_throttling_is_retryable(iot: Any, ca: Issued) -> None:
    make_policy(iot, "p1")
    throttled = client_error("ThrottlingException", "Rate exceeded", 400, "AttachPolicy")
    wrapped = AwsLikeIot(iot, {"attach_policy": throttled})
    entry = entry_for(make_device_cert("dev-9", ca), "dev-9", locator="row 9")

    outcome, _ = run(wrapped, entry, MessageSettings(policies=("p1",)))  # type: ignore[arg-type]

    assert outcome.status is OutcomeStatus.RETRY
    assert outcome.retryable
    assert outcome.error_class == "throttled"
    assert outcome.api == "AttachPolicy"
    assert outcome.reason == (
        "row 9: AttachPolicy for policy p1 failed (ThrottlingException: Rate exceeded)."
    )


def test_network_failure_is_retryable(iot: Any, ca: Issued) -> None:
    down = EndpointConnectionError(endpoint_url="https://iot.us-east-1.amazonaws.com")
    wrapped = AwsLikeIot(iot, {"create_thing": down})
    wrapped.create_thing = wrapped.__getattr__("create_thing")  # type: ignore[method-assign]
    entry = entry_for(make_device_cert("dev-10", ca), "dev-10")

    outcome, _ = run(wrapped, entry, MessageSettings())  # type: ignore[arg-type]

    assert outcome.status is OutcomeStatus.RETRY
    assert outcome.error_class == "transient"
    assert outcome.api == "CreateThing"


def test_missing_policy_is_a_permanent_not_found_naming_the_policy(iot: Any, ca: Issued) -> None:
    make_policy(iot, "exists")
    entry = entry_for(make_device_cert("dev-11", ca), "dev-11", locator="row 4")

    outcome, calls = run(iot, entry, MessageSettings(policies=("exists", "deleted-policy")))

    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error_class == "not_found"
    assert outcome.api == "AttachPolicy"
    assert outcome.reason is not None
    assert outcome.reason.startswith(
        "row 4: AttachPolicy for policy deleted-policy failed (ResourceNotFoundException"
    )
    assert calls == [*HAPPY, "AttachPolicy", "AttachPolicy"]
    assert outcome.reason.endswith(
        f" Left in AWS IoT: certificate {entry.certificate_id} (ACTIVE, attached to thing dev-11, with"
        " policies exists); thing dev-11 (created by this import)."
    )


def test_missing_thing_type_is_a_permanent_not_found(iot: Any, ca: Issued) -> None:
    entry = entry_for(make_device_cert("dev-12", ca), "dev-12")

    outcome, _ = run(iot, entry, MessageSettings(thing_type="nosuchtype"))

    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error_class == "not_found"
    assert outcome.api == "CreateThing"
    assert "thing dev-12 of type nosuchtype" in (outcome.reason or "")


def test_access_denied_is_permanent(iot: Any, ca: Issued) -> None:
    denied = client_error("AccessDeniedException", "not authorized", 403, "AddThingToThingGroup")
    wrapped = AwsLikeIot(iot, {"add_thing_to_thing_group": denied})
    entry = entry_for(make_device_cert("dev-13", ca), "dev-13")

    outcome, _ = run(wrapped, entry, MessageSettings(thing_groups=("g",)))  # type: ignore[arg-type]

    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error_class == "access_denied"
    assert outcome.reason == (
        "row 1: AddThingToThingGroup for thing group g failed (AccessDeniedException: not authorized)."
        f" Left in AWS IoT: certificate {entry.certificate_id} (ACTIVE, attached to thing dev-13, with no"
        " policy); thing dev-13 (created by this import)."
    )


def test_open_circuit_fails_fast_and_is_retryable(iot: Any, ca: Issued) -> None:
    registry = CircuitRegistry()
    registry.configure("iot:CreateThing", threshold=1)
    registry.record_failure("iot:CreateThing")
    entry = entry_for(make_device_cert("dev-14", ca), "dev-14")
    recorder = Recorder(iot)

    outcome, _ = run(iot, entry, MessageSettings(), registry)

    assert outcome.status is OutcomeStatus.RETRY
    assert outcome.error_class == "circuit_open"
    assert outcome.api == "CreateThing"
    assert recorder.calls == ["RegisterCertificateWithoutCA"]
    assert "circuit iot:CreateThing is open" in (outcome.reason or "")


def test_repeated_throttles_open_the_circuit(iot: Any, ca: Issued) -> None:
    registry = CircuitRegistry()
    registry.configure("iot:RegisterCertificateWithoutCA", threshold=2)
    throttled = client_error("ThrottlingException", "Rate exceeded", 400, "RegisterCertificateWithoutCA")
    wrapped = AwsLikeIot(iot, {"register_certificate_without_ca": throttled})
    results = [
        run(wrapped, entry_for(make_device_cert(f"d{i}", ca), f"d{i}"), MessageSettings(), registry)[0]  # type: ignore[arg-type]
        for i in range(3)
    ]
    assert [r.error_class for r in results] == ["throttled", "throttled", "circuit_open"]
    assert wrapped.calls == ["register_certificate_without_ca"] * 2


def test_arn_context_from_function_arn() -> None:
    arns = ArnContext.from_function_arn("arn:aws-cn:lambda:cn-north-1:210987654321:function:importer:live")
    assert arns == ArnContext("aws-cn", "cn-north-1", "210987654321")
    assert arns.certificate_arn("ab" * 32) == f"arn:aws-cn:iot:cn-north-1:210987654321:cert/{'ab' * 32}"
    assert arns.thing_arn("dev") == "arn:aws-cn:iot:cn-north-1:210987654321:thing/dev"
    with pytest.raises(ValueError, match="not-an-arn"):
        ArnContext.from_function_arn("not-an-arn")


# --- never take over ------------------------------------------------------------------------------


@pytest.fixture
def aws_iot() -> Iterator[Any]:
    """moto with the local stack's fidelity patches (CreateThing conflicts, EXCLUSIVE_THING), as AWS."""
    fidelity = MotoFidelity()
    with mock_aws_with_valid_certs():
        fidelity.apply()
        try:
            yield boto3.client("iot", region_name="us-east-1")
        finally:
            fidelity.restore()


def snapshot(iot: Any, thing_name: str) -> dict[str, Any]:
    """What a thing looks like from outside: description, principals and groups."""
    described = iot.describe_thing(thingName=thing_name)
    return {
        "attributes": described.get("attributes"),
        "type": described.get("thingTypeName"),
        "version": described.get("version"),
        "principals": sorted(iot.list_thing_principals(thingName=thing_name)["principals"]),
        "groups": sorted(
            g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=thing_name)["thingGroups"]
        ),
    }


def test_a_foreign_thing_is_not_taken_over(aws_iot: Any, ca: Issued) -> None:
    make_policy(aws_iot, "p")
    aws_iot.create_thing_group(thingGroupName="g")
    aws_iot.create_thing(thingName="dev-20", attributePayload={"attributes": {"owner": "someone"}})
    before = snapshot(aws_iot, "dev-20")
    entry = entry_for(make_device_cert("dev-20", ca), "dev-20", locator="row 3")

    outcome, calls = run(
        aws_iot, entry, MessageSettings(policies=("p",), thing_groups=("g",), attributes={"a": "b"})
    )

    assert outcome.status is OutcomeStatus.FAILED
    assert (outcome.error_class, outcome.api) == ("conflict", "CreateThing")
    assert outcome.reason == (
        "row 3: thing dev-20 already exists and was not created by Thingpress; refusing to take it over for"
        f" certificate {entry.certificate_id}. Left in AWS IoT: certificate {entry.certificate_id} (ACTIVE,"
        " attached to no thing, with no policy)."
    )
    assert calls == ["RegisterCertificateWithoutCA", "CreateThing", "DescribeThing"]
    assert snapshot(aws_iot, "dev-20") == before
    cert_arn = ARNS.certificate_arn(entry.certificate_id)
    assert aws_iot.list_principal_things(principal=cert_arn)["things"] == []
    assert aws_iot.list_attached_policies(target=cert_arn)["policies"] == []


def test_a_thing_thingpress_made_for_another_certificate_is_not_taken_over(aws_iot: Any, ca: Issued) -> None:
    first = entry_for(make_device_cert("dev-21", ca), "dev-21")
    second = entry_for(make_device_cert("dev-21b", ca), "dev-21")
    assert run(aws_iot, first, MessageSettings())[0].status is OutcomeStatus.IMPORTED

    outcome, _ = run(aws_iot, second, MessageSettings())

    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.reason is not None
    assert f"was created by Thingpress for certificate {first.certificate_id}" in outcome.reason
    assert aws_iot.list_thing_principals(thingName="dev-21")["principals"] == [
        ARNS.certificate_arn(first.certificate_id)
    ]


def test_adopt_mode_uses_a_foreign_thing_without_marking_it(aws_iot: Any, ca: Issued) -> None:
    aws_iot.create_thing(thingName="dev-22", attributePayload={"attributes": {"owner": "someone"}})
    entry = entry_for(make_device_cert("dev-22", ca), "dev-22")

    outcome, calls = run(aws_iot, entry, MessageSettings(attributes={"a": "b"}), adopt=True)

    assert outcome.status is OutcomeStatus.IMPORTED
    assert calls == [*HAPPY[:2], "DescribeThing", "UpdateThing", HAPPY[2]]
    assert aws_iot.describe_thing(thingName="dev-22")["attributes"] == {"owner": "someone", "a": "b"}
    assert aws_iot.list_thing_principals(thingName="dev-22")["principals"] == [
        ARNS.certificate_arn(entry.certificate_id)
    ]


def test_a_certificate_attached_elsewhere_is_refused_before_any_write(aws_iot: Any, ca: Issued) -> None:
    entry = entry_for(make_device_cert("dev-23", ca), "dev-23", locator="row 8")
    cert_arn = aws_iot.register_certificate_without_ca(certificatePem=entry.certificate_pem, status="ACTIVE")[
        "certificateArn"
    ]
    aws_iot.create_thing(thingName="elsewhere")
    aws_iot.attach_thing_principal(thingName="elsewhere", principal=cert_arn)

    outcome, calls = run(aws_iot, entry, MessageSettings())

    assert (outcome.status, outcome.error_class, outcome.api) == (
        OutcomeStatus.FAILED,
        "conflict",
        "ListPrincipalThings",
    )
    assert outcome.reason == (
        f"row 8: certificate {entry.certificate_id} is already attached to thing elsewhere; refusing to"
        " attach it to thing dev-23 too."
    )
    assert calls == ["RegisterCertificateWithoutCA", "DescribeCertificate", "ListPrincipalThings"]
    assert aws_iot.list_principal_things(principal=cert_arn)["things"] == ["elsewhere"]
    assert aws_iot.list_things()["things"] == [
        {"thingName": "elsewhere"} | aws_iot.list_things()["things"][0]
    ]
    assert [t["thingName"] for t in aws_iot.list_things()["things"]] == ["elsewhere"]


def test_the_exclusive_attach_refuses_a_certificate_attached_meanwhile(aws_iot: Any, ca: Issued) -> None:
    """The race the pre-check cannot see: another thing took the certificate before the attach."""
    entry = entry_for(make_device_cert("dev-24", ca), "dev-24")
    cert_arn = ARNS.certificate_arn(entry.certificate_id)
    aws_iot.create_thing(thingName="racer")

    class Racing:
        def __getattr__(self, name: str) -> Any:
            return getattr(aws_iot, name)

        def create_thing(self, **kwargs: Any) -> Any:
            aws_iot.attach_thing_principal(thingName="racer", principal=cert_arn)
            return aws_iot.create_thing(**kwargs)

    outcome, _ = run(Racing(), entry, MessageSettings())

    assert (outcome.status, outcome.error_class, outcome.api) == (
        OutcomeStatus.FAILED,
        "conflict",
        "AttachThingPrincipal",
    )
    assert outcome.reason is not None
    assert "cannot be attached exclusively to thing dev-24" in outcome.reason
    assert outcome.reason.endswith(
        f"Left in AWS IoT: certificate {entry.certificate_id} (ACTIVE, attached to no thing, with no policy);"
        " thing dev-24 (created by this import)."
    )
    assert aws_iot.list_principal_things(principal=cert_arn)["things"] == ["racer"]


def test_more_than_ten_policies_on_an_existing_certificate_are_refused_before_any_write(
    aws_iot: Any, ca: Issued
) -> None:
    entry = entry_for(make_device_cert("dev-25", ca), "dev-25", locator="row 2")
    cert_arn = aws_iot.register_certificate_without_ca(certificatePem=entry.certificate_pem, status="ACTIVE")[
        "certificateArn"
    ]
    for index in range(9):
        make_policy(aws_iot, f"old-{index}")
        aws_iot.attach_policy(policyName=f"old-{index}", target=cert_arn)
    make_policy(aws_iot, "new-a")
    make_policy(aws_iot, "new-b")

    outcome, calls = run(aws_iot, entry, MessageSettings(policies=("old-0", "new-a", "new-b")))

    assert (outcome.status, outcome.error_class, outcome.api) == (
        OutcomeStatus.FAILED,
        "conflict",
        "ListAttachedPolicies",
    )
    assert outcome.reason == (
        f"row 2: certificate {entry.certificate_id} has 9 policies attached already; with the settings'"
        " policies it would have 11, more than the 10 AWS IoT allows."
    )
    assert calls[-1] == "ListAttachedPolicies"
    assert len(aws_iot.list_attached_policies(target=cert_arn)["policies"]) == 9
    assert aws_iot.list_things()["things"] == []
    # Exactly 10 in all is fine (old-0 is attached already).
    assert (
        run(aws_iot, entry, MessageSettings(policies=("old-0", "new-a")))[0].status is OutcomeStatus.IMPORTED
    )
