"""What an uploader's S3 metadata may override: the stack's own settings and the operator's allowlists."""

from __future__ import annotations

import pytest

from manifest_provider.config import ProviderConfig
from manifest_provider.overrides import UploaderAllowlist
from manifest_provider.prepare import choose_parser
from manifest_provider.settings import METADATA_KEYS, ImportSettings

OWN = ImportSettings(
    policies=("DevicePolicy",),
    thing_groups=("Fleet",),
    thing_type="Sensor",
    attributes={"tenant": "acme", "site": "plant-1"},
    thing_name_prefix="acme-",
)
ALLOWED = UploaderAllowlist(
    policies=frozenset({"TelemetryPolicy"}),
    thing_groups=frozenset({"Line7", "Line8"}),
    thing_types=frozenset({"Gateway"}),
    attribute_keys=frozenset({"site", "batch"}),
    name_prefixes=frozenset({"acme-lab-"}),
)


def refusals(metadata: dict[str, str], allowlist: UploaderAllowlist = ALLOWED) -> list[str]:
    return allowlist.refusals(OWN, OWN.with_overrides(metadata))


def test_no_metadata_and_the_stacks_own_values_need_no_allowlist() -> None:
    assert refusals({}, UploaderAllowlist()) == []
    own_again = {
        "thingpress-policies": "DevicePolicy",
        "thingpress-thing-groups": "Fleet",
        "thingpress-thing-type": "Sensor",
        "thingpress-attributes": '{"site": "plant-1", "tenant": "acme"}',
        "thingpress-thing-name-prefix": "acme-",
    }
    assert refusals(own_again, UploaderAllowlist()) == []


def test_the_keys_that_only_choose_how_the_manifest_is_read_need_no_allowlist() -> None:
    harmless = {
        "thingpress-vendor": "generated",
        "thingpress-bundle-type": "E0E2",
        "thingpress-thing-name-source": "fingerprint",
    }
    assert refusals(harmless, UploaderAllowlist()) == []


def test_allowlisted_overrides_are_accepted() -> None:
    metadata = {
        "thingpress-policies": "DevicePolicy,TelemetryPolicy",
        "thingpress-thing-groups": "Line8,Fleet,Line7",
        "thingpress-thing-type": "Gateway",
        "thingpress-attributes": '{"tenant": "acme", "batch": "b-17"}',  # site is allowlisted: may go
        "thingpress-thing-name-prefix": "acme-lab-",
    }
    assert refusals(metadata) == []


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        (
            {"thingpress-policies": "DevicePolicy,AdminPolicy,Other"},
            "S3 metadata 'thingpress-policies' asks for policies 'AdminPolicy', 'Other', "
            "not in UploaderAllowedPolicies.",
        ),
        (
            {"thingpress-policies": "TelemetryPolicy"},
            "S3 metadata 'thingpress-policies' leaves out the stack's own policy 'DevicePolicy'.",
        ),
        (
            {"thingpress-policies": ""},
            "S3 metadata 'thingpress-policies' leaves out the stack's own policy 'DevicePolicy'.",
        ),
        (
            {"thingpress-thing-groups": "Quarantine"},
            "S3 metadata 'thingpress-thing-groups' asks for thing group 'Quarantine', not in "
            "UploaderAllowedThingGroups; leaves out the stack's own thing group 'Fleet'.",
        ),
        (
            {"thingpress-thing-type": "Admin"},
            "S3 metadata 'thingpress-thing-type' asks for thing type 'Admin', "
            "not in UploaderAllowedThingTypes.",
        ),
        (
            {"thingpress-thing-type": ""},
            "S3 metadata 'thingpress-thing-type' clears the stack's own thing type 'Sensor'.",
        ),
        (
            {"thingpress-attributes": '{"tenant": "other", "role": "admin", "site": "x"}'},
            "S3 metadata 'thingpress-attributes' sets attribute 'role', not in UploaderAllowedAttributeKeys; "
            "changes the stack's own attribute 'tenant'.",
        ),
        (
            {"thingpress-attributes": "{}"},
            "S3 metadata 'thingpress-attributes' leaves out the stack's own attribute 'tenant'.",
        ),
        (
            {"thingpress-thing-name-prefix": "admin-"},
            "S3 metadata 'thingpress-thing-name-prefix' asks for thing-name prefix 'admin-', "
            "not in UploaderAllowedNamePrefixes.",
        ),
        (
            {"thingpress-thing-name-prefix": ""},
            "S3 metadata 'thingpress-thing-name-prefix' asks for thing-name prefix '', "
            "not in UploaderAllowedNamePrefixes.",
        ),
        (
            # Exact prefixes only: an allowlisted prefix does not allow a longer or a shorter one.
            {"thingpress-thing-name-prefix": "acme-lab-2-"},
            "S3 metadata 'thingpress-thing-name-prefix' asks for thing-name prefix 'acme-lab-2-', "
            "not in UploaderAllowedNamePrefixes.",
        ),
    ],
)
def test_an_override_outside_the_allowlist_is_refused_with_the_key_and_values(
    metadata: dict[str, str], reason: str
) -> None:
    assert refusals(metadata) == [reason]


def test_every_refused_key_gets_its_own_sentence_in_metadata_key_order() -> None:
    metadata = {
        "thingpress-thing-name-prefix": "x-",
        "thingpress-policies": "DevicePolicy,AdminPolicy",
        "thingpress-thing-groups": "Fleet,Other",
        "thingpress-thing-type": "Admin",
        "thingpress-attributes": '{"tenant": "acme", "site": "plant-1", "role": "admin"}',
    }
    keyed = [sentence.split("'")[1] for sentence in refusals(metadata)]
    assert keyed == [key for key in METADATA_KEYS if key in metadata]


def test_a_stack_without_settings_refuses_everything_not_allowlisted() -> None:
    own = ImportSettings()
    chosen = own.with_overrides({"thingpress-policies": "TelemetryPolicy,AdminPolicy"})
    assert ALLOWED.refusals(own, chosen) == [
        "S3 metadata 'thingpress-policies' asks for policy 'AdminPolicy', not in UploaderAllowedPolicies."
    ]


def test_allowlists_are_read_from_the_environment_once_into_the_provider_config() -> None:
    environ = {
        "THINGPRESS_JOBS_TABLE": "jobs",
        "THINGPRESS_IMPORT_QUEUE_URL": "https://import",
        "THINGPRESS_INTAKE_QUEUE_URL": "https://intake",
        "THINGPRESS_UPLOADER_ALLOWED_POLICIES": " TelemetryPolicy , ",
        "THINGPRESS_UPLOADER_ALLOWED_THING_GROUPS": "Line7,Line8,Line7",
        "THINGPRESS_UPLOADER_ALLOWED_THING_TYPES": "Gateway",
        "THINGPRESS_UPLOADER_ALLOWED_ATTRIBUTE_KEYS": "site,batch",
        "THINGPRESS_UPLOADER_ALLOWED_NAME_PREFIXES": "acme-lab-",
    }
    assert ProviderConfig.from_env(environ).uploader_allowlist == ALLOWED
    unset = {key: value for key, value in environ.items() if "UPLOADER" not in key}
    assert ProviderConfig.from_env(unset).uploader_allowlist == UploaderAllowlist()


@pytest.mark.parametrize(
    ("suffix", "value", "message"),
    [
        ("POLICIES", "ok,iot:*", "Policy name"),
        ("THING_GROUPS", "a b", "Thing group name"),
        ("THING_TYPES", "t/1", "Thing type name"),
        ("ATTRIBUTE_KEYS", "a=b", "Thing attribute name"),
        ("NAME_PREFIXES", "a/", "Thing name prefix"),
    ],
)
def test_a_bad_allowlist_entry_names_the_variable(suffix: str, value: str, message: str) -> None:
    variable = f"THINGPRESS_UPLOADER_ALLOWED_{suffix}"
    with pytest.raises(ValueError, match=f"^{variable}: {message}"):
        UploaderAllowlist.from_env({variable: value})


def test_a_vendor_override_chooses_the_format_only_where_the_key_does_not() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\n"
    assert choose_parser("generated", "incoming/devices.bin", pem).name == "generated"
    assert choose_parser("microchip", "microchip/m.json", pem).name == "microchip"
    assert choose_parser(None, "microchip/m.pem", pem).name == "microchip"
    with pytest.raises(ValueError, match=r"^S3 metadata 'thingpress-vendor' asks for 'generated', but "):
        choose_parser("generated", "Microchip/m.json", pem)
