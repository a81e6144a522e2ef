"""Uploader overrides on the local stack: only the stack's own settings and the operator's allowlists.

The stack is deployed (template parameters) with its own policy, group, type, attribute and name
prefix, and an allowlist of one more of each. An uploader asks, through S3 user metadata, for
everything outside it: an ``iot:*`` policy, a foreign group, another type, an attribute of its own or
a changed one, another prefix, or leaving the stack's own out. Each job FAILS with a reason naming
the metadata key and the refused values, and IoT holds no certificate, thing, attachment or group
membership afterwards. Allowlisted overrides are applied; a stack deployed without allowlists
refuses those too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from layer_utils.iot_names import OWNER_ATTRIBUTE
from testing.pipeline import Pipeline, Result, pipeline
from thingpress.certfactory import Issued, make_ca, make_device_cert

pytestmark = pytest.mark.slow

CA = make_ca("Overrides Test CA")
OWN = {
    "PolicyNames": "DevicePolicy",
    "ThingGroupNames": "Fleet",
    "ThingTypeName": "Sensor",
    "ThingAttributes": json.dumps({"tenant": "acme"}),
    "ThingNamePrefix": "acme-",
}
ALLOWLISTS = {
    "UploaderAllowedPolicies": "TelemetryPolicy",
    "UploaderAllowedThingGroups": "Line7",
    "UploaderAllowedThingTypes": "Gateway",
    "UploaderAllowedAttributeKeys": "batch",
    "UploaderAllowedNamePrefixes": "acme-lab-",
}
EVERYTHING = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}
CONNECT = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}],
}
POLICIES = {"DevicePolicy": CONNECT, "TelemetryPolicy": CONNECT, "AdminPolicy": EVERYTHING}
GROUPS = ("Fleet", "Line7", "OtherTenantFleet")
TYPES = ("Sensor", "Gateway", "Admin")


def manifest(name: str, count: int = 2) -> bytes:
    certificates: list[Issued] = [make_device_cert(f"{name}-{i}", CA) for i in range(count)]
    return "".join(certificate.pem() for certificate in certificates).encode()


def create_targets(run: Pipeline) -> None:
    """Create every policy, group and type the uploads name, the stack's own and foreign ones."""
    for policy, document in POLICIES.items():
        run.iot.create_policy(policyName=policy, policyDocument=json.dumps(document))
    for group in GROUPS:
        run.iot.create_thing_group(thingGroupName=group)
    for thing_type in TYPES:
        run.iot.create_thing_type(thingTypeName=thing_type)


def iot_state(run: Pipeline) -> dict[str, Any]:
    """Return what imports create in IoT: certificates, things, policy targets and group members."""
    return {
        "certificates": run.iot.list_certificates()["certificates"],
        "things": run.things(),
        "policy_targets": {
            policy: run.iot.list_targets_for_policy(policyName=policy)["targets"] for policy in POLICIES
        },
        "group_members": {
            group: run.iot.list_things_in_thing_group(thingGroupName=group)["things"] for group in GROUPS
        },
    }


def assert_refused(result: Result, *sentences: str) -> None:
    assert result.job.status == "FAILED", result.report
    reason = result.report["reason"]
    assert reason == result.job.reason
    assert reason.startswith("The upload may not override these settings: ")
    for sentence in sentences:
        assert sentence in reason, (sentence, reason)
    assert result.report["imported_entries"] == []


@pytest.fixture(scope="class")
def stack() -> Iterator[Pipeline]:
    """The stack with its own settings and allowlists (one per class: one local stack at a time)."""
    with pipeline(**OWN, **ALLOWLISTS) as run:
        create_targets(run)
        yield run


REFUSED = [
    pytest.param(
        {"thingpress-policies": "DevicePolicy,AdminPolicy"},
        ["S3 metadata 'thingpress-policies' asks for policy 'AdminPolicy', not in UploaderAllowedPolicies."],
        id="an iot:* policy",
    ),
    pytest.param(
        {"thingpress-policies": "TelemetryPolicy"},
        ["S3 metadata 'thingpress-policies' leaves out the stack's own policy 'DevicePolicy'."],
        id="leaving out the stack's policy",
    ),
    pytest.param(
        {"thingpress-thing-groups": "Fleet,OtherTenantFleet"},
        [
            "S3 metadata 'thingpress-thing-groups' asks for thing group 'OtherTenantFleet', "
            "not in UploaderAllowedThingGroups."
        ],
        id="a foreign group",
    ),
    pytest.param(
        {"thingpress-thing-type": "Admin"},
        [
            "S3 metadata 'thingpress-thing-type' asks for thing type 'Admin', "
            "not in UploaderAllowedThingTypes."
        ],
        id="another type",
    ),
    pytest.param(
        {"thingpress-attributes": json.dumps({"tenant": "other-tenant", "role": "admin"})},
        [
            "S3 metadata 'thingpress-attributes' sets attribute 'role', not in UploaderAllowedAttributeKeys; "
            "changes the stack's own attribute 'tenant'."
        ],
        id="attributes",
    ),
    pytest.param(
        {"thingpress-thing-name-prefix": "admin-"},
        [
            "S3 metadata 'thingpress-thing-name-prefix' asks for thing-name prefix 'admin-', "
            "not in UploaderAllowedNamePrefixes."
        ],
        id="a prefix",
    ),
    pytest.param(
        {
            "thingpress-policies": "AdminPolicy",
            "thingpress-thing-groups": "OtherTenantFleet",
            "thingpress-thing-type": "",
            "thingpress-attributes": "{}",
            "thingpress-thing-name-prefix": "",
            "thingpress-vendor": "generated",
        },
        [
            "'thingpress-policies' asks for policy 'AdminPolicy'",
            "'thingpress-thing-groups' asks for thing group 'OtherTenantFleet'",
            "'thingpress-thing-type' clears the stack's own thing type 'Sensor'.",
            "'thingpress-attributes' leaves out the stack's own attribute 'tenant'.",
            "'thingpress-thing-name-prefix' asks for thing-name prefix ''",
        ],
        id="everything at once",
    ),
]


class TestAStackWithAllowlists:
    @pytest.mark.parametrize(("metadata", "sentences"), REFUSED)
    def test_an_override_outside_the_allowlist_fails_the_job_and_touches_nothing_in_iot(
        self, stack: Pipeline, request: pytest.FixtureRequest, metadata: dict[str, str], sentences: list[str]
    ) -> None:
        before = iot_state(stack)
        key = f"generated/refused-{request.node.callspec.id.replace(' ', '-')}.pem"
        result = stack.run(key, manifest("refused"), metadata)
        assert_refused(result, *sentences)
        assert iot_state(stack) == before

    def test_a_vendor_override_cannot_contradict_the_keys_vendor_prefix(self, stack: Pipeline) -> None:
        before = iot_state(stack)
        metadata = {"thingpress-vendor": "generated"}
        result = stack.run("microchip/unsigned.json", manifest("unsigned"), metadata)
        assert result.job.status == "FAILED", result.report
        assert result.report["reason"] == (
            "S3 metadata 'thingpress-vendor' asks for 'generated', but a key under 'microchip/' is a "
            "microchip manifest."
        )
        assert iot_state(stack) == before

    def test_allowlisted_overrides_are_applied(self, stack: Pipeline) -> None:
        metadata = {
            "thingpress-policies": "DevicePolicy,TelemetryPolicy",
            "thingpress-thing-groups": "Fleet,Line7",
            "thingpress-thing-type": "Gateway",
            "thingpress-attributes": json.dumps({"tenant": "acme", "batch": "b-17"}),
            "thingpress-thing-name-prefix": "acme-lab-",
        }
        result = stack.run("generated/allowed.pem", manifest("allowed"), metadata)
        assert result.job.status == "COMPLETED", result.report
        names = {"acme-lab-allowed-0", "acme-lab-allowed-1"}
        assert set(result.imported.values()) == names
        for name in names:
            thing = stack.iot.describe_thing(thingName=name)
            assert thing["thingTypeName"] == "Gateway"
            assert thing["attributes"] == {
                "tenant": "acme",
                "batch": "b-17",
                OWNER_ATTRIBUTE: thing["attributes"][OWNER_ATTRIBUTE],
            }
            (certificate,) = result.things[name]
            arn = stack.iot.describe_certificate(certificateId=certificate)["certificateDescription"][
                "certificateArn"
            ]
            attached = {
                policy["policyName"] for policy in stack.iot.list_attached_policies(target=arn)["policies"]
            }
            assert attached == {"DevicePolicy", "TelemetryPolicy"}
        for group in ("Fleet", "Line7"):
            members = set(stack.iot.list_things_in_thing_group(thingGroupName=group)["things"])
            assert names <= members
        assert stack.iot.list_targets_for_policy(policyName="AdminPolicy")["targets"] == []


def test_a_stack_deployed_without_allowlists_refuses_every_override_beyond_its_own_settings() -> None:
    with pipeline(**OWN) as run:
        create_targets(run)
        own_again = {
            "thingpress-policies": "DevicePolicy",
            "thingpress-thing-groups": "Fleet",
            "thingpress-thing-name-prefix": "acme-",
        }
        same = run.run("generated/own.pem", manifest("own", 1), own_again)
        assert same.job.status == "COMPLETED", same.report
        before = iot_state(run)
        refused = run.run(
            "generated/telemetry.pem",
            manifest("telemetry", 1),
            {"thingpress-policies": "DevicePolicy,TelemetryPolicy"},
        )
        assert_refused(
            refused,
            "S3 metadata 'thingpress-policies' asks for policy 'TelemetryPolicy', "
            "not in UploaderAllowedPolicies.",
        )
        assert iot_state(run) == before
