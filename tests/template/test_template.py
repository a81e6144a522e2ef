"""Static checks of template.yaml: queues, IAM least privilege, storage hardening, dashboard, alarms."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from bulk_importer.admission import BAD_MAC, NOT_IMPORTING, UNKNOWN_JOB
from testing.helpers import TEMPLATE_PATH, as_list, branches

# Actions AWS offers no resource-level permission for; only these may use Resource "*".
NO_RESOURCE_LEVEL_ACTIONS = {
    "iot:RegisterCertificateWithoutCA",
    "iot:AttachThingPrincipal",
    "iot:ListPrincipalThings",
    "iot:ListAttachedPolicies",
    "iot:DetachThingPrincipal",
    "iot:ListThingPrincipals",
    "cloudwatch:PutMetricData",
}
NO_RESOURCE_LEVEL_PREFIXES = ("xray:",)

CIRCUITS = [
    "iot:RegisterCertificateWithoutCA",
    "iot:CreateThing",
    "iot:AttachThingPrincipal",
    "iot:AttachPolicy",
    "iot:AddThingToThingGroup",
    "iot:DescribeCertificate",
    "iot:DescribeThing",
    "iot:UpdateThing",
    "sqs:SendMessageBatch",
]
UNDO_CIRCUITS = [  # the undo's own (its DescribeCertificate and DescribeThing are the import's above)
    "iot:ListPrincipalThings",
    "iot:ListAttachedPolicies",
    "iot:ListThingPrincipals",
    "iot:DetachPolicy",
    "iot:RemoveThingFromThingGroup",
    "iot:DetachThingPrincipal",
    "iot:UpdateCertificate",
    "iot:DeleteCertificate",
    "iot:DeleteThing",
]
IOT_WRITE_CIRCUITS = CIRCUITS[:5]
ERROR_CLASSES = [
    "invalid_input",
    "conflict",
    "not_found",
    "access_denied",
    "send_failed",
    "exhausted",
    "unknown",
]
INTAKE_PREFIXES = {"microchip/", "infineon/", "espressif/", "generated/", "incoming/"}

COMMON_ENV = {
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
    "THINGPRESS_JOBS_TABLE",
    "THINGPRESS_BUCKET",
    "THINGPRESS_IMPORT_QUEUE_URL",
    "THINGPRESS_CIRCUIT_CONFIG",
    "THINGPRESS_CIRCUIT_TABLE",
    "THINGPRESS_RETRY_MODE",
    "THINGPRESS_MAX_ATTEMPTS",
    "THINGPRESS_CONNECT_TIMEOUT",
    "THINGPRESS_READ_TIMEOUT",
    "THINGPRESS_MAX_POOL_CONNECTIONS",
}
PROVIDER_ENV = {
    "THINGPRESS_INTAKE_QUEUE_URL",
    "THINGPRESS_POLICIES",
    "THINGPRESS_THING_GROUPS",
    "THINGPRESS_THING_TYPE",
    "THINGPRESS_THING_ATTRIBUTES",
    "THINGPRESS_THING_NAME_SOURCE",
    "THINGPRESS_THING_NAME_PREFIX",
    "THINGPRESS_INFINEON_BUNDLE_TYPE",
    "THINGPRESS_UPLOADER_ALLOWED_POLICIES",
    "THINGPRESS_UPLOADER_ALLOWED_THING_GROUPS",
    "THINGPRESS_UPLOADER_ALLOWED_THING_TYPES",
    "THINGPRESS_UPLOADER_ALLOWED_ATTRIBUTE_KEYS",
    "THINGPRESS_UPLOADER_ALLOWED_NAME_PREFIXES",
    "THINGPRESS_MICROCHIP_VERIFIER_PREFIX",
    "THINGPRESS_TRUSTED_CA_PREFIX",
    "THINGPRESS_ALLOW_EXPIRED",
    "THINGPRESS_CERTS_PER_MESSAGE",
    "THINGPRESS_MAX_RECEIVE_COUNT",
    "THINGPRESS_MAX_MANIFEST_BYTES",
    "THINGPRESS_MAX_ARCHIVE_UNCOMPRESSED_BYTES",
    "THINGPRESS_MAX_ARCHIVE_ENTRIES",
    "THINGPRESS_MAX_ARCHIVE_DEPTH",
    "THINGPRESS_MAX_COMPRESSION_RATIO",
    "THINGPRESS_MAX_CSV_FIELD_BYTES",
    "THINGPRESS_MAX_JSON_DEPTH",
    "THINGPRESS_MAX_LINE_BYTES",
    "THINGPRESS_MAX_ENTRY_BYTES",
}
SWEEPER_ENV = {"THINGPRESS_STALLED_JOB_MINUTES", "THINGPRESS_MAX_LEASE_EXPIRIES"}
IMPORTER_ENV = {
    "THINGPRESS_IOT_TPS",
    "THINGPRESS_MAX_CONCURRENCY",
    "THINGPRESS_RATE_BUDGET_TABLE",
    "THINGPRESS_IMPORT_THREADS",
    "THINGPRESS_MAX_ENTRY_ATTEMPTS",
    "THINGPRESS_ADOPT_EXISTING_THINGS",
}
PSEUDO_PARAMETERS = {
    "AWS::AccountId",
    "AWS::Partition",
    "AWS::Region",
    "AWS::StackId",
    "AWS::StackName",
    "AWS::URLSuffix",
    "AWS::NoValue",
}


def resources_of(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == type_}


def statements(template: dict[str, Any], function: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement of the function's execution role (an AWS::IAM::Role with inline policies)."""
    assert "Policies" not in function["Properties"], "permissions live in the function's explicit role"
    role_name, attribute = function["Properties"]["Role"]["Fn::GetAtt"]
    assert attribute == "Arn"
    role = template["Resources"][role_name]
    assert role["Type"] == "AWS::IAM::Role"
    found: list[dict[str, Any]] = []
    for policy in role["Properties"]["Policies"]:
        document = policy["PolicyDocument"]
        assert isinstance(document, dict) and "Statement" in document, "only inline policy documents are used"
        for item in document["Statement"]:
            found.extend(branches(item))
    return found


def statement_actions(statement: dict[str, Any]) -> list[str]:
    return as_list(statement["Action"])


def function_env(template: dict[str, Any], name: str) -> dict[str, Any]:
    env = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    env.update(template["Resources"][name]["Properties"].get("Environment", {}).get("Variables", {}))
    return env


def sqs_events(function: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["Properties"] for e in function["Properties"]["Events"].values() if e["Type"] == "SQS"]


def queue_of(event: dict[str, Any]) -> str:
    queue_ref = event["Queue"]
    assert "Fn::GetAtt" in queue_ref, "event sources reference their queue with GetAtt <Queue>.Arn"
    name, attribute = queue_ref["Fn::GetAtt"]
    assert attribute == "Arn"
    return str(name)


# ----------------------------------------------------------------------------------------------------
# Queues and event sources
# ----------------------------------------------------------------------------------------------------


def test_every_queue_is_encrypted_and_every_work_queue_has_a_dlq(template: dict[str, Any]) -> None:
    queues = resources_of(template, "AWS::SQS::Queue")
    assert set(queues) == {
        "IntakeQueue",
        "IntakeDLQ",
        "ImportQueue",
        "ImportDLQ",
        "UndoQueue",
        "UndoDeadLetterQueue",
    }
    for name, queue in queues.items():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True, name
    for name, dlq in (
        ("IntakeQueue", "IntakeDLQ"),
        ("ImportQueue", "ImportDLQ"),
        ("UndoQueue", "UndoDeadLetterQueue"),
    ):
        redrive = queues[name]["Properties"]["RedrivePolicy"]
        assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq, "Arn"]}
        assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
        assert queues[dlq]["Properties"]["MessageRetentionPeriod"] == {"Ref": "DlqRetentionSeconds"}
    assert template["Parameters"]["MaxReceiveCount"]["Default"] == 5
    assert template["Parameters"]["DlqRetentionSeconds"]["Default"] == 1209600


def test_visibility_timeout_is_at_least_six_times_the_consumer_timeout(template: dict[str, Any]) -> None:
    queues = resources_of(template, "AWS::SQS::Queue")
    consumed = set()
    for name, function in resources_of(template, "AWS::Serverless::Function").items():
        timeout = function["Properties"]["Timeout"]
        for event in sqs_events(function):
            queue = queue_of(event)
            consumed.add(queue)
            visibility = queues[queue]["Properties"]["VisibilityTimeout"]
            assert visibility >= 6 * timeout, (
                f"{queue} visibility {visibility} < 6 x {name} timeout {timeout}"
            )
    assert consumed == {"IntakeQueue", "ImportQueue", "UndoQueue"}


def test_event_sources_report_batch_item_failures_and_cap_concurrency(template: dict[str, Any]) -> None:
    expected = {
        "ManifestProviderFunction": "ProviderMaxConcurrency",
        "BulkImporterFunction": "ImporterMaxConcurrency",
    }
    for name, parameter in expected.items():
        (event,) = sqs_events(template["Resources"][name])
        assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert event["ScalingConfig"]["MaximumConcurrency"] == {"Ref": parameter}
        assert template["Parameters"][parameter]["MinValue"] == 2
        assert template["Parameters"][parameter]["Default"] == 2
    (provider_event,) = sqs_events(template["Resources"]["ManifestProviderFunction"])
    assert provider_event["BatchSize"] == 1
    (importer_event,) = sqs_events(template["Resources"]["BulkImporterFunction"])
    assert importer_event["BatchSize"] == {"Ref": "ImportBatchSize"}
    assert template["Parameters"]["ImportBatchSize"]["Default"] == 1


def test_intake_queue_policy_admits_only_this_bucket(template: dict[str, Any]) -> None:
    policy = template["Resources"]["IntakeQueuePolicy"]["Properties"]["PolicyDocument"]
    (allow,) = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"}
    assert allow["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    source_arn = allow["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    bucket_name = template["Resources"]["ManifestBucket"]["Properties"]["BucketName"]["Fn::Sub"]
    # Same name expression on both sides, so the policy matches the bucket without referencing it.
    assert source_arn[0] == "arn:${AWS::Partition}:s3:::" + bucket_name[0]
    assert source_arn[1] == bucket_name[1]
    assert "IntakeQueuePolicy" in as_list(template["Resources"]["ManifestBucket"]["DependsOn"])


# ----------------------------------------------------------------------------------------------------
# IAM
# ----------------------------------------------------------------------------------------------------


def test_no_wildcard_actions(template: dict[str, Any]) -> None:
    for name, function in resources_of(template, "AWS::Serverless::Function").items():
        for statement in statements(template, function):
            assert statement["Effect"] == "Allow"
            for action in statement_actions(statement):
                assert "*" not in action, f"{name} grants wildcard action {action}"


def test_resource_star_only_where_aws_offers_no_resource_level_permission(template: dict[str, Any]) -> None:
    for name, function in resources_of(template, "AWS::Serverless::Function").items():
        for statement in statements(template, function):
            if "*" not in as_list(statement["Resource"]):
                continue
            for action in statement_actions(statement):
                allowed = action in NO_RESOURCE_LEVEL_ACTIONS or action.startswith(NO_RESOURCE_LEVEL_PREFIXES)
                assert allowed, f"{name} grants {action} on Resource '*'"


def test_importer_can_never_delete_or_change_certificates(template: dict[str, Any]) -> None:
    actions = {
        a
        for s in statements(template, template["Resources"]["BulkImporterFunction"])
        for a in statement_actions(s)
    }
    forbidden = [
        a
        for a in actions
        if a.startswith(("iot:Delete", "iot:Detach", "iot:UpdateCertificate", "iot:Reject", "iot:Transfer"))
    ]
    assert forbidden == []
    assert {circuit for circuit in CIRCUITS if circuit.startswith("iot:")} <= actions


def test_provider_only_reads_iot(template: dict[str, Any]) -> None:
    actions = {
        a
        for s in statements(template, template["Resources"]["ManifestProviderFunction"])
        for a in statement_actions(s)
    }
    iot_actions = {a for a in actions if a.startswith("iot:")}
    assert iot_actions == {"iot:GetPolicy", "iot:DescribeThingGroup", "iot:DescribeThingType"}


def test_reports_are_the_only_s3_write_target(template: dict[str, Any]) -> None:
    for name, function in resources_of(template, "AWS::Serverless::Function").items():
        for statement in statements(template, function):
            if "s3:PutObject" in statement_actions(statement):
                assert statement["Resource"] == {"Fn::Sub": "${ManifestBucket.Arn}/reports/*"}, name


# ----------------------------------------------------------------------------------------------------
# Storage
# ----------------------------------------------------------------------------------------------------


def test_bucket_hardening(template: dict[str, Any]) -> None:
    props = template["Resources"]["ManifestBucket"]["Properties"]
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    algorithms = {b["SSEAlgorithm"] for b in branches(rule["ServerSideEncryptionByDefault"])}
    assert algorithms == {"aws:kms", "AES256"}
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    rules = props["LifecycleConfiguration"]["Rules"]
    reports = [r for r in rules if r.get("Prefix") == "reports/"]
    assert reports
    assert reports[0]["ExpirationInDays"] == {"Ref": "ReportRetentionDays"}
    assert any("NoncurrentVersionExpiration" in r for r in rules)


def test_bucket_denies_insecure_transport(template: dict[str, Any]) -> None:
    policy = template["Resources"]["ManifestBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "ManifestBucket"}
    (deny,) = [s for s in policy["PolicyDocument"]["Statement"] if s.get("Sid") == "DenyInsecureTransport"]
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == "*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {"Fn::GetAtt": ["ManifestBucket", "Arn"]} in deny["Resource"]


def test_bucket_notifies_intake_queue_for_manifest_prefixes_only(template: dict[str, Any]) -> None:
    configs = template["Resources"]["ManifestBucket"]["Properties"]["NotificationConfiguration"][
        "QueueConfigurations"
    ]
    prefixes = set()
    for config in configs:
        assert config["Queue"] == {"Fn::GetAtt": ["IntakeQueue", "Arn"]}
        assert config["Event"] == "s3:ObjectCreated:*"
        (rule,) = config["Filter"]["S3Key"]["Rules"]
        assert rule["Name"] == "prefix"
        prefixes.add(rule["Value"])
    assert prefixes == INTAKE_PREFIXES


def test_tables_are_encrypted_with_point_in_time_recovery(template: dict[str, Any]) -> None:
    tables = resources_of(template, "AWS::DynamoDB::Table")
    assert set(tables) == {"JobsTable", "CircuitStateTable", "RateBudgetTable"}
    for name, table in tables.items():
        props = table["Properties"]
        assert props["SSESpecification"]["SSEEnabled"] is True, name
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, name
        assert props["BillingMode"] == "PAY_PER_REQUEST", name
    jobs = tables["JobsTable"]["Properties"]
    assert jobs["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert jobs["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    circuits = tables["CircuitStateTable"]
    assert circuits["Condition"] == "UseFleetWideCircuits"
    assert circuits["Properties"]["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert circuits["Properties"]["TimeToLiveSpecification"] == {
        "AttributeName": "expiration",
        "Enabled": True,
    }


# ----------------------------------------------------------------------------------------------------
# Parameters, code, environment
# ----------------------------------------------------------------------------------------------------


def test_every_parameter_has_description_and_default(template: dict[str, Any]) -> None:
    for name, parameter in template["Parameters"].items():
        assert parameter.get("Description"), f"{name} has no Description"
        assert "Default" in parameter, f"{name} has no Default"
        if "AllowedValues" in parameter:
            assert parameter["Default"] in parameter["AllowedValues"], name


def test_layer_and_runtime(template: dict[str, Any]) -> None:
    layer = template["Resources"]["UtilsLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"] == "src/layer_utils"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Metadata"]["BuildMethod"] == "python3.13"
    assert template["Globals"]["Function"]["Runtime"] == "python3.13"
    assert template["Globals"]["Function"]["Tracing"] == "Active"
    expected = {
        "ManifestProviderFunction": ("src/manifest_provider", "manifest_provider.app.lambda_handler"),
        "BulkImporterFunction": ("src/bulk_importer", "bulk_importer.app.lambda_handler"),
        "JobSweeperFunction": ("src/job_sweeper", "job_sweeper.app.lambda_handler"),
        "UndoFunction": ("src/undo_worker", "undo_worker.app.lambda_handler"),
    }
    for name, (code_uri, handler) in expected.items():
        props = template["Resources"][name]["Properties"]
        assert (props["CodeUri"], props["Handler"]) == (code_uri, handler)
        assert props["Layers"] == [{"Ref": "UtilsLayer"}]
        assert (TEMPLATE_PATH.parent / code_uri / "requirements.txt").is_file()


def test_environment_matches_the_architecture_contract(template: dict[str, Any]) -> None:
    assert set(template["Globals"]["Function"]["Environment"]["Variables"]) == COMMON_ENV
    assert set(function_env(template, "ManifestProviderFunction")) == COMMON_ENV | PROVIDER_ENV
    assert set(function_env(template, "BulkImporterFunction")) == COMMON_ENV | IMPORTER_ENV
    assert set(function_env(template, "JobSweeperFunction")) == COMMON_ENV | SWEEPER_ENV
    globals_env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert globals_env["THINGPRESS_CIRCUIT_TABLE"] == {
        "Fn::If": ["UseFleetWideCircuits", {"Ref": "CircuitStateTable"}, {"Ref": "AWS::NoValue"}]
    }
    importer_env = function_env(template, "BulkImporterFunction")
    assert importer_env["THINGPRESS_MAX_CONCURRENCY"] == {"Ref": "ImporterMaxConcurrency"}
    tps = json.loads(template["Parameters"]["IotApiTps"]["Default"])
    assert tps["RegisterCertificateWithoutCA"] == 10
    json.loads(template["Parameters"]["CircuitBreakerConfig"]["Default"])
    assert json.loads(template["Parameters"]["ThingAttributes"]["Default"]) == {}


def _resolve_default(template: dict[str, Any], value: Any) -> str:
    """Render an environment value with parameter defaults; resources become 128-character strings."""
    if isinstance(value, (str, int)):
        return str(value)
    if "Ref" in value:
        parameter = template["Parameters"].get(value["Ref"])
        if parameter is None:
            return "x" * 128
        default = parameter["Default"]
        return str(default)
    if "Fn::Join" in value:
        separator, items = value["Fn::Join"]
        return separator.join(as_list(_resolve_default(template, items)))
    if "Fn::If" in value:
        return max((_resolve_default(template, b) for b in branches(value)), key=len, default="")
    raise AssertionError(f"unexpected environment value {value}")


def test_environment_fits_lambdas_4_kb_limit_with_defaults(template: dict[str, Any]) -> None:
    for name in ("ManifestProviderFunction", "BulkImporterFunction", "JobSweeperFunction"):
        env = function_env(template, name)
        size = sum(len(k) + len(_resolve_default(template, v)) for k, v in env.items())
        # Leave room for operators' longer policy/group lists and TPS overrides.
        assert size < 3072, f"{name} environment is {size} bytes with defaults"


# ----------------------------------------------------------------------------------------------------
# Dashboard and alarms
# ----------------------------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


@pytest.fixture(scope="module")
def dashboard(template: dict[str, Any]) -> dict[str, Any]:
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    assert isinstance(body, str), "DashboardBody is a single !Sub string"
    for name in PLACEHOLDER.findall(body):
        resource = name.split(".", 1)[0]
        known = (
            name in template["Parameters"] or name in PSEUDO_PARAMETERS or resource in template["Resources"]
        )
        assert known, f"dashboard placeholder ${{{name}}} names nothing in the template"
    return json.loads(PLACEHOLDER.sub(lambda m: f"dummy-{m.group(1)}", body))


def metric_rows(dashboard: dict[str, Any]) -> Iterator[tuple[str, list[Any]]]:
    for widget in dashboard["widgets"]:
        if widget["type"] == "metric":
            for row in widget["properties"]["metrics"]:
                yield widget["properties"]["title"], row


def dimensions(row: list[Any]) -> dict[str, str]:
    plain = [x for x in row[2:] if not isinstance(x, dict)]
    return dict(zip(plain[::2], plain[1::2], strict=True))


def test_dashboard_metrics_use_the_parameterised_namespace_and_service(dashboard: dict[str, Any]) -> None:
    rows = list(metric_rows(dashboard))
    assert rows
    for title, row in rows:
        namespace = row[0]
        if namespace.startswith("AWS/"):
            continue
        assert namespace == "dummy-MetricsNamespace", f"{title}: {row}"
        assert dimensions(row)["service"] == "dummy-ServiceName", f"{title}: {row}"
    for widget in dashboard["widgets"]:
        if widget["type"] == "metric":
            assert widget["properties"]["region"] == "dummy-AWS::Region"


def _custom(dashboard: dict[str, Any], metric: str, dimension: str) -> set[str]:
    return {
        dimensions(row)[dimension]
        for _, row in metric_rows(dashboard)
        if row[0] == "dummy-MetricsNamespace" and row[1] == metric
    }


def test_dashboard_lists_every_circuit_error_class_and_queue(dashboard: dict[str, Any]) -> None:
    assert _custom(dashboard, "CircuitState", "Operation") == {*CIRCUITS, *UNDO_CIRCUITS}
    assert _custom(dashboard, "CircuitOpened", "Operation") == set(CIRCUITS)
    assert _custom(dashboard, "CircuitClosed", "Operation") == set(CIRCUITS)
    assert _custom(dashboard, "CertificatesFailed", "ErrorClass") == set(ERROR_CLASSES)
    apis = {c.split(":", 1)[1] for c in CIRCUITS if c.startswith("iot:")}
    assert _custom(dashboard, "Throttles", "Api") == apis
    assert _custom(dashboard, "Retries", "Api") == apis
    circuit_widgets = [
        w
        for w in dashboard["widgets"]
        if any(r[1] == "CircuitState" for r in w["properties"].get("metrics", []))
    ]
    assert circuit_widgets[0]["properties"]["annotations"]["horizontal"][0]["value"] == 2
    queues = {"dummy-IntakeQueue.QueueName", "dummy-IntakeDLQ.QueueName", "dummy-ImportQueue.QueueName"}
    queues.add("dummy-ImportDLQ.QueueName")
    # The undo widget shows the UndoQueue's waiting and running requests and the UndoDeadLetterQueue.
    undo = {"dummy-UndoQueue.QueueName", "dummy-UndoDeadLetterQueue.QueueName"}
    for metric, extra in (
        ("ApproximateNumberOfMessagesVisible", undo),
        ("ApproximateAgeOfOldestMessage", set()),
        ("ApproximateNumberOfMessagesNotVisible", {"dummy-UndoQueue.QueueName"}),
    ):
        shown = {
            dimensions(r)["QueueName"] for _, r in metric_rows(dashboard) if r[:2] == ["AWS/SQS", metric]
        }
        assert shown == queues | extra, metric
    functions = {
        "dummy-ManifestProviderFunction",
        "dummy-BulkImporterFunction",
        "dummy-JobSweeperFunction",
    }
    for metric in ("Errors", "Duration", "ConcurrentExecutions", "Throttles"):
        shown = {
            dimensions(r)["FunctionName"]
            for _, r in metric_rows(dashboard)
            if r[:2] == ["AWS/Lambda", metric]
        }
        assert shown == functions | ({"dummy-UndoFunction"} if metric == "Errors" else set()), metric
    duration_stats = {r[-1]["stat"] for _, r in metric_rows(dashboard) if r[:2] == ["AWS/Lambda", "Duration"]}
    assert duration_stats == {"p50", "p99"}


def test_every_alarm_notifies_the_alarm_topic(template: dict[str, Any]) -> None:
    alarms = resources_of(template, "AWS::CloudWatch::Alarm")
    assert alarms
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert alarm["Properties"]["AlarmDescription"], name
    dlq_alarms = {
        a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for a in alarms.values()
        if a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
    }
    assert dlq_alarms == {"IntakeDLQ", "ImportDLQ", "UndoDeadLetterQueue"}
    topic = template["Resources"]["AlarmTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": ["AlarmTopicKey", "Arn"]}
    subscription = template["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"


def test_circuit_open_alarm_covers_every_iot_write_circuit(template: dict[str, Any]) -> None:
    props = template["Resources"]["CircuitOpenAlarm"]["Properties"]
    operations = {
        d["Value"]
        for m in props["Metrics"]
        if "MetricStat" in m
        for d in m["MetricStat"]["Metric"]["Dimensions"]
        if d["Name"] == "Operation"
    }
    assert operations == set(IOT_WRITE_CIRCUITS)
    assert props["Threshold"] == 2
    assert props["EvaluationPeriods"] == {"Ref": "CircuitOpenAlarmMinutes"}


def test_stuck_import_alarm_combines_queue_depth_and_progress(template: dict[str, Any]) -> None:
    metrics = template["Resources"]["StuckImportAlarm"]["Properties"]["Metrics"]
    (expression,) = [m["Expression"] for m in metrics if "Expression" in m]
    assert "FILL(imported, 0)" in expression
    names = {m["MetricStat"]["Metric"]["MetricName"] for m in metrics if "MetricStat" in m}
    assert names == {"ApproximateNumberOfMessagesVisible", "CertificatesImported"}


def test_unfinished_jobs_are_failed_by_the_provider_and_swept_on_a_schedule(template: dict[str, Any]) -> None:
    provider_env = function_env(template, "ManifestProviderFunction")
    # The provider knows which delivery is the IntakeQueue's last.
    assert provider_env["THINGPRESS_MAX_RECEIVE_COUNT"] == {"Ref": "MaxReceiveCount"}
    assert template["Resources"]["IntakeQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] == {
        "Ref": "MaxReceiveCount"
    }
    sweeper = template["Resources"]["JobSweeperFunction"]["Properties"]
    (event,) = sweeper["Events"].values()
    assert event["Type"] == "Schedule"
    assert event["Properties"]["Schedule"] == {"Ref": "SweepSchedule"}
    assert re.fullmatch(
        template["Parameters"]["SweepSchedule"]["AllowedPattern"],
        template["Parameters"]["SweepSchedule"]["Default"],
    )
    env = function_env(template, "JobSweeperFunction")
    assert env["THINGPRESS_STALLED_JOB_MINUTES"] == {"Ref": "StalledJobMinutes"}
    assert env["THINGPRESS_MAX_LEASE_EXPIRIES"] == {"Ref": "MaxParseLeaseExpiries"}
    alarm = template["Resources"]["JobsSweptAlarm"]["Properties"]
    assert (alarm["MetricName"], alarm["Namespace"]) == ("JobsSwept", {"Ref": "MetricsNamespace"})
    assert alarm["Dimensions"] == [{"Name": "service", "Value": {"Ref": "ServiceName"}}]


def test_refused_import_messages_alarm_sums_every_reason(template: dict[str, Any]) -> None:
    props = template["Resources"]["ImportMessagesRefusedAlarm"]["Properties"]
    queries = [m for m in props["Metrics"] if "MetricStat" in m]
    reasons = set()
    for query in queries:
        metric = query["MetricStat"]["Metric"]
        assert (metric["MetricName"], metric["Namespace"]) == (
            "ImportMessagesRefused",
            {"Ref": "MetricsNamespace"},
        )
        service, reason = metric["Dimensions"]
        assert service == {"Name": "service", "Value": {"Ref": "ServiceName"}}
        assert reason["Name"] == "Reason"
        reasons.add(reason["Value"])
    assert reasons == {UNKNOWN_JOB, NOT_IMPORTING, BAD_MAC}
    (expression,) = [m["Expression"] for m in props["Metrics"] if "Expression" in m]
    assert all(f"FILL({query['Id']}, 0)" in expression for query in queries)
    assert (props["Threshold"], props["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_the_sweep_waits_for_every_retry_of_a_manifest(template: dict[str, Any]) -> None:
    """With the defaults, a job is only swept once SQS has made every delivery of its intake record."""
    parameters = template["Parameters"]
    visibility = template["Resources"]["IntakeQueue"]["Properties"]["VisibilityTimeout"]
    retries_seconds = int(parameters["MaxReceiveCount"]["Default"]) * int(visibility)
    assert int(parameters["StalledJobMinutes"]["Default"]) * 60 > retries_seconds
    assert int(parameters["MaxParseLeaseExpiries"]["Default"]) > int(parameters["MaxReceiveCount"]["Default"])
