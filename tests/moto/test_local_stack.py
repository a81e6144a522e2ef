"""The local stack: template loading and resolution, resources created on moto, fidelity patches."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import moto.iot.models
import pytest
from botocore.exceptions import ClientError

from testing.helpers import write_sam_project
from thingpress.certfactory import make_ca, make_device_cert
from thingpress.cfn import NO_VALUE, Resolver, TemplateError, function_properties, load_template
from thingpress.local import FakeLambdaContext, LocalStack, LocalStackError

REPO = Path(__file__).resolve().parents[2]

RESOURCES = """\
AWSTemplateFormatVersion: 2010-09-09
Transform: AWS::Serverless-2016-10-31
Parameters:
  Extra:
    Type: String
    Default: "false"
    AllowedValues: ["true", "false"]
  Names:
    Type: CommaDelimitedList
    Default: "a,b"
  Receives:
    Type: Number
    Default: 3
Conditions:
  WithExtra: !Equals [!Ref Extra, "true"]
Globals:
  Function:
    Runtime: python3.13
    Timeout: 30
    Environment:
      Variables:
        TABLE: !Ref Table
        EXTRA_TABLE: !If [WithExtra, !Ref ExtraTable, !Ref AWS::NoValue]
Resources:
  Bucket:
    Type: AWS::S3::Bucket
    Properties:
      VersioningConfiguration: {Status: Enabled}
      NotificationConfiguration:
        QueueConfigurations:
          - Event: s3:ObjectCreated:*
            Queue: !GetAtt Queue.Arn
            Filter: {S3Key: {Rules: [{Name: prefix, Value: in/}, {Name: suffix, Value: .csv}]}}
  Alarm:
    Type: AWS::CloudWatch::Alarm
    Properties:
      Dimensions: [{Name: QueueName, Value: !GetAtt Queue.QueueName}]
  DLQ:
    Type: AWS::SQS::Queue
    Properties:
      MessageRetentionPeriod: 1209600
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 120
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt DLQ.Arn
        maxReceiveCount: !Ref Receives
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {AttributeName: pk, AttributeType: S}
        - {AttributeName: gsi, AttributeType: S}
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
      GlobalSecondaryIndexes:
        - IndexName: by-gsi
          KeySchema: [{AttributeName: gsi, KeyType: HASH}]
          Projection: {ProjectionType: ALL}
      TimeToLiveSpecification: {AttributeName: expires_at, Enabled: true}
  ExtraTable:
    Type: AWS::DynamoDB::Table
    Condition: WithExtra
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
      KeySchema: [{AttributeName: id, KeyType: HASH}]
  Layer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layer
  Function:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code
      Handler: tp_stack_fn.app.handler
      MemorySize: 512
      Layers: [!Ref Layer]
      Environment:
        Variables:
          QUEUE_URL: !Ref Queue
          NAMES: !Join [",", !Ref Names]
          FLAG: true
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt Queue.Arn
            BatchSize: 7
            MaximumBatchingWindowInSeconds: 2
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig: {MaximumConcurrency: 3}
"""

HANDLER = """\
import os
import sys


def handler(event, context):
    return {
        "queue": os.environ.get("QUEUE_URL"),
        "function": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining": context.get_remaining_time_in_millis(),
        "lambda_name": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
        "event": event,
    }
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sam_project(
        tmp_path_factory.mktemp("stack_project"), RESOURCES, {"code/tp_stack_fn": HANDLER}
    )


@pytest.fixture
def stack(project: Path) -> Any:
    with LocalStack(project / "template.yaml", stack_name="Unit") as local:
        yield local


# --- template loading and resolution ---------------------------------------------------------------


def test_load_template_turns_short_forms_into_long_forms(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "AWSTemplateFormatVersion: 2010-09-09\n"
        "A: !Ref X\n"
        "B: !GetAtt Q.Arn\n"
        "C: !Sub ['${a}', {a: !Ref Y}]\n"
        "D: !If [Cond, !Condition Other, !Base64 text]\n"
        "E: !ImportValue exported\n"
    )

    template = load_template(path)

    assert template["AWSTemplateFormatVersion"] == "2010-09-09"
    assert template["A"] == {"Ref": "X"}
    assert template["B"] == {"Fn::GetAtt": ["Q", "Arn"]}
    assert template["C"] == {"Fn::Sub": ["${a}", {"a": {"Ref": "Y"}}]}
    assert template["D"] == {"Fn::If": ["Cond", {"Condition": "Other"}, {"Fn::Base64": "text"}]}
    assert template["E"] == {"Fn::ImportValue": "exported"}


def test_load_template_rejects_unknown_tags(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("A: !Bogus x\n")

    with pytest.raises(TemplateError, match="Unknown YAML tag !Bogus at line 1"):
        load_template(path)


def _resolver(**overrides: str) -> Resolver:
    template = {
        "Parameters": {
            "Name": {"Type": "String", "Default": "base"},
            "Mode": {"Type": "String", "Default": "a", "AllowedValues": ["a", "b"]},
            "List": {"Type": "CommaDelimitedList", "Default": "x,y,z"},
            "Required": {"Type": "String"},
        },
        "Mappings": {"Sizes": {"small": {"mb": 128}}},
        "Conditions": {
            "IsB": {"Fn::Equals": [{"Ref": "Mode"}, "b"]},
            "NotB": {"Fn::Not": [{"Condition": "IsB"}]},
            "Both": {"Fn::And": [{"Condition": "NotB"}, {"Fn::Equals": ["1", "1"]}]},
            "Either": {"Fn::Or": [{"Condition": "IsB"}, {"Condition": "NotB"}]},
        },
        "Resources": {"Q": {"Type": "AWS::SQS::Queue"}, "Later": {"Type": "AWS::SQS::Queue"}},
    }
    physical = {"Q": {"Ref": "https://q", "Arn": "arn:aws:sqs:us-east-1:123456789012:q"}}
    return Resolver(template, {"Required": "r", **overrides}, stack_name="st", physical_ids=physical)


def test_resolver_evaluates_intrinsics() -> None:
    resolver = _resolver()

    assert resolver.resolve({"Ref": "Name"}) == "base"
    assert resolver.resolve({"Ref": "List"}) == ["x", "y", "z"]
    assert resolver.resolve({"Ref": "Q"}) == "https://q"
    assert resolver.resolve({"Fn::GetAtt": ["Q", "Arn"]}).endswith(":q")
    assert resolver.resolve({"Fn::GetAtt": "Q.Arn"}).endswith(":q")
    assert resolver.resolve({"Fn::Sub": "${AWS::StackName}-${Name}-${Q.Arn}-${!Literal}"}) == (
        "st-base-arn:aws:sqs:us-east-1:123456789012:q-${Literal}"
    )
    assert resolver.resolve({"Fn::Sub": ["${a}/${AWS::Region}", {"a": {"Ref": "Mode"}}]}) == "a/us-east-1"
    assert resolver.resolve({"Fn::Join": ["-", {"Ref": "List"}]}) == "x-y-z"
    assert resolver.resolve({"Fn::Select": [1, {"Fn::Split": [",", "p,q,r"]}]}) == "q"
    assert resolver.resolve({"Fn::FindInMap": ["Sizes", "small", "mb"]}) == 128
    assert resolver.resolve({"Fn::Base64": "hi"}) == "aGk="
    assert resolver.resolve({"Ref": "AWS::Partition"}) == "aws"
    assert resolver.resolve({"Ref": "AWS::AccountId"}) == "123456789012"
    assert resolver.resolve({"Ref": "AWS::NoValue"}) is NO_VALUE
    assert resolver.condition("NotB") and resolver.condition("Both") and resolver.condition("Either")
    value = {"keep": 1, "drop": {"Fn::If": ["IsB", "b", {"Ref": "AWS::NoValue"}]}}
    assert resolver.resolve(value) == {"keep": 1}
    assert resolver.resolve([1, {"Fn::If": ["IsB", 2, {"Ref": "AWS::NoValue"}]}]) == [1]


def test_resolver_overrides_parameters_and_checks_them() -> None:
    assert _resolver(Mode="b").condition("IsB")
    with pytest.raises(TemplateError, match="not one of"):
        _resolver(Mode="c")
    with pytest.raises(TemplateError, match="Bogus is not declared"):
        _resolver(Bogus="x")
    with pytest.raises(TemplateError, match="Parameter Required has no default"):
        Resolver({"Parameters": {"Required": {"Type": "String"}}})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"Fn::ImportValue": "x"}, "Fn::ImportValue at here is not supported"),
        ({"Ref": "Nothing"}, "neither a parameter nor a resource"),
        ({"Ref": "Later"}, "has not been created locally"),
        ({"Fn::GetAtt": ["Q", "Bogus"]}, "attribute Bogus of Q"),
        ({"Fn::Select": [5, ["a"]]}, "index 5 is not in the list"),
        ({"Fn::If": ["Unknown", 1, 2]}, "Condition Unknown is not declared"),
    ],
)
def test_resolver_errors_name_the_problem(value: Any, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        _resolver().resolve(value, where="here")


def test_function_properties_merge_globals() -> None:
    template = {
        "Globals": {
            "Function": {"Timeout": 3, "Layers": ["g"], "Environment": {"Variables": {"A": 1, "B": 1}}}
        },
        "Resources": {
            "F": {
                "Type": "AWS::Serverless::Function",
                "Properties": {"Timeout": 9, "Layers": ["f"], "Environment": {"Variables": {"B": 2}}},
            }
        },
    }

    merged = function_properties(template, "F")

    assert merged == {"Timeout": 9, "Layers": ["g", "f"], "Environment": {"Variables": {"A": 1, "B": 2}}}


def test_fake_context_counts_down_with_the_injected_clock() -> None:
    now = [10.0]
    context = FakeLambdaContext("fn", timeout_seconds=2, memory_limit_in_mb=256, clock=lambda: now[0])

    assert context.get_remaining_time_in_millis() == 2000
    now[0] = 11.5
    assert context.get_remaining_time_in_millis() == 500
    assert not context.timed_out()
    now[0] = 12.5
    assert context.get_remaining_time_in_millis() == 0
    assert context.timed_out()
    assert context.invoked_function_arn == "arn:aws:lambda:us-east-1:123456789012:function:fn"
    assert context.memory_limit_in_mb == 256
    assert context.aws_request_id


# --- resources --------------------------------------------------------------------------------------


def test_stack_creates_queues_with_redrive_and_attributes(stack: LocalStack) -> None:
    sqs = stack.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=stack.physical_id("Queue"), AttributeNames=["All"])[
        "Attributes"
    ]

    assert attributes["VisibilityTimeout"] == "120"
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": stack.attribute("DLQ", "Arn"),
        "maxReceiveCount": 3,
    }
    dlq = sqs.get_queue_attributes(
        QueueUrl=stack.physical_id("DLQ"), AttributeNames=["MessageRetentionPeriod"]
    )
    assert dlq["Attributes"]["MessageRetentionPeriod"] == "1209600"
    assert stack.attribute("Queue", "QueueName").startswith("Unit-Queue-")


def test_stack_creates_bucket_with_notification_and_versioning(stack: LocalStack) -> None:
    s3 = stack.client("s3")

    assert stack.bucket.startswith("unit-bucket-")
    assert s3.get_bucket_versioning(Bucket=stack.bucket)["Status"] == "Enabled"
    (configuration,) = s3.get_bucket_notification_configuration(Bucket=stack.bucket)["QueueConfigurations"]
    assert configuration["QueueArn"] == stack.attribute("Queue", "Arn")
    assert configuration["Events"] == ["s3:ObjectCreated:*"]
    rules = {rule["Name"].lower(): rule["Value"] for rule in configuration["Filter"]["Key"]["FilterRules"]}
    assert rules == {"prefix": "in/", "suffix": ".csv"}


def test_bucket_notifications_reach_the_queue_with_aws_key_encoding(stack: LocalStack) -> None:
    s3 = stack.client("s3")
    sqs = stack.client("sqs")
    s3.put_object(Bucket=stack.bucket, Key="in/a dir/x+y.csv", Body=b"1")
    s3.put_object(Bucket=stack.bucket, Key="in/skipped.txt", Body=b"1")
    s3.put_object(Bucket=stack.bucket, Key="out/skipped.csv", Body=b"1")

    messages = sqs.receive_message(QueueUrl=stack.physical_id("Queue"), MaxNumberOfMessages=10)["Messages"]

    bodies = [json.loads(message["Body"]) for message in messages]
    assert bodies[0]["Event"] == "s3:TestEvent"
    assert [body["Records"][0]["s3"]["object"]["key"] for body in bodies[1:]] == ["in/a+dir/x%2By.csv"]


def test_stack_creates_table_with_ttl_and_index_and_honours_conditions(stack: LocalStack) -> None:
    dynamodb = stack.client("dynamodb")
    table = dynamodb.describe_table(TableName=stack.physical_id("Table"))["Table"]

    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == ["by-gsi"]
    ttl = dynamodb.describe_time_to_live(TableName=stack.physical_id("Table"))["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    assert "ExtraTable" not in stack.physical_ids
    assert dynamodb.list_tables()["TableNames"] == [stack.physical_id("Table")]
    assert stack.skipped_resources == {"Alarm": "AWS::CloudWatch::Alarm"}


def test_condition_parameter_enables_a_resource(project: Path) -> None:
    with LocalStack(project / "template.yaml", parameters={"Extra": "true"}) as local:
        assert local.functions["Function"].environment["EXTRA_TABLE"] == local.physical_id("ExtraTable")
        assert len(local.client("dynamodb").list_tables()["TableNames"]) == 2


def test_function_spec_and_event_source(stack: LocalStack, project: Path) -> None:
    spec = stack.functions["Function"]

    assert spec.handler == "tp_stack_fn.app.handler"
    assert spec.code_dir == project / "code"
    assert spec.layer_dirs == (project / "layer",)
    assert (spec.timeout, spec.memory_size, spec.runtime) == (30, 512, "python3.13")
    assert spec.environment == {
        "TABLE": stack.physical_id("Table"),
        "QUEUE_URL": stack.physical_id("Queue"),
        "NAMES": "a,b",
        "FLAG": "true",
    }
    assert spec.arn == f"arn:aws:lambda:us-east-1:123456789012:function:{spec.name}"
    (source,) = stack.event_sources
    assert (source.function, source.name, source.queue) == ("Function", "Work", "Queue")
    assert source.queue_url == stack.physical_id("Queue")
    assert (source.batch_size, source.maximum_batching_window_seconds, source.maximum_concurrency) == (
        7,
        2,
        3,
    )
    assert source.report_batch_item_failures
    assert (source.dead_letter_queue_url, source.max_receive_count) == (stack.physical_id("DLQ"), 3)


def test_environment_points_boto3_at_the_stack_and_is_restored(project: Path) -> None:
    before = os.environ.get("AWS_ENDPOINT_URL")
    with LocalStack(project / "template.yaml") as local:
        assert os.environ["AWS_ENDPOINT_URL"] == local.endpoint_url
        assert local.endpoint_url.startswith("http://127.0.0.1:")
        assert os.environ["AWS_DEFAULT_REGION"] == os.environ["AWS_REGION"] == "us-east-1"
        assert moto.core.config.default_user_config["iot"] == {"use_valid_cert": True}
        assert str(project / "code") in sys.path
    assert os.environ.get("AWS_ENDPOINT_URL") == before
    assert str(project / "code") not in sys.path


def test_invoke_runs_the_handler_with_its_environment_and_context(stack: LocalStack) -> None:
    stack.configure_function("Function", timeout=4)
    now = [50.0]
    context = stack.make_context("Function", clock=lambda: now[0])

    response = stack.invoke("Function", {"hello": 1}, context)

    assert response["queue"] == stack.physical_id("Queue")
    assert response["function"] == response["lambda_name"] == stack.functions["Function"].name
    assert response["memory"] == 512
    assert response["remaining"] == 4000
    assert response["event"] == {"hello": 1}
    assert "QUEUE_URL" not in os.environ
    assert stack.function_env("Function")["AWS_ENDPOINT_URL"] == stack.endpoint_url


def test_only_one_stack_at_a_time(stack: LocalStack, project: Path) -> None:
    with pytest.raises(LocalStackError, match="already running"):
        LocalStack(project / "template.yaml").start()
    assert os.environ["AWS_ENDPOINT_URL"] == stack.endpoint_url


def test_unknown_resources_and_functions_raise(stack: LocalStack) -> None:
    with pytest.raises(LocalStackError, match="ExtraTable was not created"):
        stack.physical_id("ExtraTable")
    with pytest.raises(LocalStackError, match="Function Nope is not in the local stack"):
        stack.invoke("Nope", {})


def test_build_dir_code_and_layer_locations(project: Path, tmp_path: Path) -> None:
    build = tmp_path / ".aws-sam" / "build"
    (build / "Function" / "tp_stack_built").mkdir(parents=True)
    (build / "Function" / "tp_stack_built" / "__init__.py").write_text("")
    (build / "Function" / "tp_stack_built" / "app.py").write_text(
        "def handler(event, context):\n    return 'built'\n"
    )
    (build / "Layer" / "python").mkdir(parents=True)
    template = tmp_path / "template.yaml"
    template.write_text(RESOURCES.replace("tp_stack_fn.app.handler", "tp_stack_built.app.handler"))

    with LocalStack(template, build_dir=build) as local:
        spec = local.functions["Function"]
        assert spec.code_dir == build / "Function"
        assert spec.layer_dirs == (build / "Layer" / "python",)
        assert local.invoke("Function", {}) == "built"


def test_handler_imported_from_elsewhere_is_refused(stack: LocalStack, tmp_path: Path) -> None:
    stack.invoke("Function", {})  # imports tp_stack_fn from the project's code directory
    other = tmp_path / "copy"
    other.mkdir()
    stack.functions["Function"] = replace(stack.functions["Function"], code_dir=other)

    with pytest.raises(LocalStackError, match="already imported from"):
        stack.handler("Function")


# --- fidelity patches -------------------------------------------------------------------------------


def test_create_thing_conflicts_like_aws(stack: LocalStack) -> None:
    iot = stack.client("iot")
    iot.create_thing_type(thingTypeName="sensor")
    iot.create_thing_type(thingTypeName="gateway")
    created = iot.create_thing(
        thingName="dev-1", thingTypeName="sensor", attributePayload={"attributes": {"k": "v"}}
    )

    again = iot.create_thing(
        thingName="dev-1", thingTypeName="sensor", attributePayload={"attributes": {"k": "v"}}
    )
    assert again["thingId"] == created["thingId"]
    with pytest.raises(ClientError) as other_type:
        iot.create_thing(
            thingName="dev-1", thingTypeName="gateway", attributePayload={"attributes": {"k": "v"}}
        )
    assert other_type.value.response["Error"]["Code"] == "ResourceAlreadyExistsException"
    with pytest.raises(ClientError) as other_attributes:
        iot.create_thing(thingName="dev-1", thingTypeName="sensor")
    assert other_attributes.value.response["Error"]["Code"] == "ResourceAlreadyExistsException"
    assert iot.describe_thing(thingName="dev-1")["thingTypeName"] == "sensor"


def test_exclusive_attach_refuses_a_principal_attached_elsewhere_like_aws(stack: LocalStack) -> None:
    iot = stack.client("iot")
    device = make_device_cert("device-1", make_ca("Local Stack Test CA"))
    cert_arn = iot.register_certificate_without_ca(certificatePem=device.pem(), status="ACTIVE")[
        "certificateArn"
    ]
    for name in ("foreign", "mine", "third"):
        iot.create_thing(thingName=name)
    iot.attach_thing_principal(thingName="foreign", principal=cert_arn)  # NON_EXCLUSIVE_THING by default

    with pytest.raises(ClientError) as refused:
        iot.attach_thing_principal(thingName="mine", principal=cert_arn, thingPrincipalType="EXCLUSIVE_THING")

    assert refused.value.response["Error"]["Code"] == "InvalidRequestException"
    assert iot.list_principal_things(principal=cert_arn)["things"] == ["foreign"]
    # Exclusive on the thing that holds it already is fine; then no other thing may have it.
    iot.attach_thing_principal(thingName="foreign", principal=cert_arn, thingPrincipalType="EXCLUSIVE_THING")
    with pytest.raises(ClientError) as non_exclusive:
        iot.attach_thing_principal(thingName="third", principal=cert_arn)
    assert non_exclusive.value.response["Error"]["Code"] == "InvalidRequestException"
    assert iot.list_principal_things(principal=cert_arn)["things"] == ["foreign"]
    # Once detached, the principal is free again.
    iot.detach_thing_principal(thingName="foreign", principal=cert_arn)
    iot.attach_thing_principal(thingName="mine", principal=cert_arn, thingPrincipalType="EXCLUSIVE_THING")
    assert iot.list_principal_things(principal=cert_arn)["things"] == ["mine"]


def test_fidelity_patches_are_removed_on_stop(project: Path) -> None:
    original = moto.iot.models.IoTBackend.create_thing
    with LocalStack(project / "template.yaml"):
        assert moto.iot.models.IoTBackend.create_thing is not original
    assert moto.iot.models.IoTBackend.create_thing is original


def test_certificate_id_is_the_sha256_of_the_der(stack: LocalStack) -> None:
    device = make_device_cert("device-1", make_ca("Local Stack Test CA"))

    response = stack.client("iot").register_certificate_without_ca(
        certificatePem=device.pem(), status="ACTIVE"
    )

    assert response["certificateId"] == hashlib.sha256(device.der()).hexdigest()
    assert (
        response["certificateArn"] == f"arn:aws:iot:us-east-1:123456789012:cert/{response['certificateId']}"
    )


# --- the real template ------------------------------------------------------------------------------


@pytest.fixture
def real_stack() -> Any:
    with LocalStack.from_template(REPO / "template.yaml") as local:
        yield local


def test_real_template_creates_the_pipeline(real_stack: LocalStack) -> None:
    sqs = real_stack.client("sqs")
    queues = real_stack.resources_of_type("AWS::SQS::Queue")
    assert sorted(queues) == [
        "ImportDLQ",
        "ImportQueue",
        "IntakeDLQ",
        "IntakeQueue",
        "UndoDeadLetterQueue",
        "UndoQueue",
    ]
    for queue, dlq in (("IntakeQueue", "IntakeDLQ"), ("ImportQueue", "ImportDLQ")):
        attributes = sqs.get_queue_attributes(
            QueueUrl=real_stack.physical_id(queue), AttributeNames=["RedrivePolicy"]
        )
        redrive = json.loads(attributes["Attributes"]["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == real_stack.attribute(dlq, "Arn")
        assert redrive["maxReceiveCount"] == 5
    assert sorted(real_stack.resources_of_type("AWS::DynamoDB::Table")) == ["JobsTable", "RateBudgetTable"]
    notifications = real_stack.client("s3").get_bucket_notification_configuration(Bucket=real_stack.bucket)
    prefixes = {
        configuration["Filter"]["Key"]["FilterRules"][0]["Value"]
        for configuration in notifications["QueueConfigurations"]
        if configuration["QueueArn"] == real_stack.attribute("IntakeQueue", "Arn")
    }
    assert {"microchip/", "infineon/", "espressif/", "generated/", "incoming/"} <= prefixes


def test_real_template_functions_and_event_sources(real_stack: LocalStack) -> None:
    provider = real_stack.functions["ManifestProviderFunction"]
    importer = real_stack.functions["BulkImporterFunction"]

    assert provider.handler == "manifest_provider.app.lambda_handler"
    assert importer.handler == "bulk_importer.app.lambda_handler"
    assert provider.code_dir == REPO / "src" / "manifest_provider"
    assert provider.layer_dirs == (REPO / "src" / "layer_utils",)
    for spec in (provider, importer):
        assert spec.environment["THINGPRESS_IMPORT_QUEUE_URL"] == real_stack.physical_id("ImportQueue")
        assert spec.environment["THINGPRESS_JOBS_TABLE"] == real_stack.physical_id("JobsTable")
        assert spec.environment["THINGPRESS_BUCKET"] == real_stack.bucket
        assert "THINGPRESS_CIRCUIT_TABLE" not in spec.environment
    assert importer.environment["THINGPRESS_RATE_BUDGET_TABLE"] == real_stack.physical_id("RateBudgetTable")
    assert provider.environment["THINGPRESS_INTAKE_QUEUE_URL"] == real_stack.physical_id("IntakeQueue")
    sources = {source.queue: source for source in real_stack.event_sources}
    assert sources["IntakeQueue"].function == "ManifestProviderFunction"
    assert sources["IntakeQueue"].batch_size == 1
    assert sources["ImportQueue"].function == "BulkImporterFunction"
    assert sources["UndoQueue"].function == "UndoFunction"
    assert all(source.report_batch_item_failures for source in sources.values())
    assert sources["ImportQueue"].maximum_concurrency == int(
        importer.environment["THINGPRESS_MAX_CONCURRENCY"]
    )


def test_real_template_fleet_wide_circuits_add_the_state_table() -> None:
    with LocalStack.from_template(REPO / "template.yaml", parameters={"FleetWideCircuits": "true"}) as local:
        table = local.physical_id("CircuitStateTable")
        assert local.functions["BulkImporterFunction"].environment["THINGPRESS_CIRCUIT_TABLE"] == table
        key = local.client("dynamodb").describe_table(TableName=table)["Table"]["KeySchema"]
        assert key == [{"AttributeName": "id", "KeyType": "HASH"}]
