"""A corpus of generated hostile manifests through the whole local pipeline at once.

Every manifest is uploaded to one local stack (trusted CAs configured under ``trusted/<vendor>/``,
a Microchip signer under ``verifiers/microchip/``); the SQS event-source-mapping emulator then runs
the real ManifestProvider and BulkImporter until every queue is empty. For each manifest the job
must reach a final status, each bad entry must be listed with its precise reason, each good sibling
must be imported (the thing exists in IoT), and no function may crash, time out or dead-letter.
The corpus is built by tests/testing/hostile_corpus.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from layer_utils.jobs import FINAL_STATUSES, JobStore, latest_report_key
from testing.hostile_corpus import Case, Material, build_corpus
from thingpress.local import LocalStack
from thingpress.local.faults import FaultyEmulator
from thingpress.local.layers import MotoLock, mark_harness_client
from thingpress.localrun import LOCAL_IOT_TPS

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
TRUSTED_PREFIX = "trusted/"
VERIFIER_PREFIX = "verifiers/microchip/"
UNLIMITED_TPS = json.dumps(LOCAL_IOT_TPS)


# --- the run ----------------------------------------------------------------------------------------


@dataclass
class CorpusRun:
    cases: dict[str, Case]
    jobs: dict[str, Any]
    reports: dict[str, dict[str, Any]]
    things: frozenset[str]
    stats: Any
    invocation_errors: list[BaseException]
    dead_letters: dict[str, int]


@pytest.fixture(scope="module")
def corpus_run() -> Iterator[CorpusRun]:
    material = Material()
    cases = build_corpus(material)
    parameters = {"IotApiTps": UNLIMITED_TPS, "TrustedCaPrefix": TRUSTED_PREFIX}
    with LocalStack(TEMPLATE, parameters=parameters, stack_name="hostile") as stack, MotoLock():
        s3 = mark_harness_client(stack.client("s3"))
        for vendor in ("espressif", "generated", "infineon", "microchip"):
            s3.put_object(
                Bucket=stack.bucket, Key=f"{TRUSTED_PREFIX}{vendor}/ca.pem", Body=material.ca.pem().encode()
            )
        s3.put_object(
            Bucket=stack.bucket, Key=f"{VERIFIER_PREFIX}signer.pem", Body=material.signer.pem().encode()
        )
        for case in cases:
            s3.put_object(Bucket=stack.bucket, Key=case.key, Body=case.body, Metadata=dict(case.metadata))
        emulator = FaultyEmulator(stack, max_concurrency=None)
        stats = emulator.run_until_idle(max_seconds=600)
        dynamodb = mark_harness_client(stack.client("dynamodb"))
        store = JobStore(stack.physical_id("JobsTable"), dynamodb=dynamodb, s3=s3)
        jobs = {job.key: job for job in store.list_jobs()}
        reports = {}
        for case in cases:
            if case.key in jobs:
                body = s3.get_object(Bucket=stack.bucket, Key=latest_report_key(case.key))["Body"].read()
                reports[case.key] = json.loads(body)
        iot = mark_harness_client(stack.client("iot"))
        things = frozenset(
            thing["thingName"]
            for page in iot.get_paginator("list_things").paginate()
            for thing in page["things"]
        )
        sqs = mark_harness_client(stack.client("sqs"))
        dead = {}
        for logical_id in ("IntakeDLQ", "ImportDLQ"):
            attributes = sqs.get_queue_attributes(
                QueueUrl=stack.physical_id(logical_id), AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            dead[logical_id] = int(attributes["ApproximateNumberOfMessages"])
        errors = [invocation.error for invocation in emulator.invocations if invocation.error is not None]
        yield CorpusRun({case.name: case for case in cases}, jobs, reports, things, stats, errors, dead)


def test_the_corpus_has_at_least_thirty_manifests(corpus_run: CorpusRun) -> None:
    assert len(corpus_run.cases) >= 30


def test_no_function_crashed_timed_out_or_dead_lettered(corpus_run: CorpusRun) -> None:
    assert corpus_run.stats.idle
    assert corpus_run.invocation_errors == []
    assert corpus_run.stats.errors == 0
    assert corpus_run.dead_letters == {"IntakeDLQ": 0, "ImportDLQ": 0}


def corpus_names() -> list[str]:
    return [
        "jws-bad-signature",
        "jws-tampered",
        "jws-mismatch",
        "jws-none-alg",
        "jws-unknown-signer",
        "truncated-json",
        "json-object-not-array",
        "json-nested-too-deep",
        "json-trailing-comma",
        "csv-wrong-header",
        "csv-missing-column",
        "csv-bom",
        "csv-utf16",
        "csv-cn-mismatch",
        "illegal-and-overlong-thing-names",
        "binary-junk-with-csv-suffix",
        "pem-garbage-block",
        "private-key-block",
        "expired-certificate",
        "not-yet-valid-certificate",
        "wrong-ca",
        "rsa-1024-key",
        "duplicate-entries",
        "shared-cn",
        "base64-not-a-certificate",
        "ten-megabyte-single-line",
        "crlf-line-endings",
        "key-needing-url-encoding",
        "whitespace-only-file",
        "zero-byte-file",
        "unknown-vendor-override",
        "infineon-garbage-member",
        "infineon-repeated-and-long-member-names",
        "seven-zip-bomb",
        "seven-zip-nested-too-deep",
        "wrong-bundle-type",
        "seven-zip-not-an-archive",
        "seven-zip-long-names-header",
        "seven-zip-many-members-header",
        "seven-zip-huge-declared-header",
    ]


def test_every_built_case_is_checked(corpus_run: CorpusRun) -> None:
    assert sorted(corpus_run.cases) == sorted(corpus_names())


@pytest.mark.parametrize("name", corpus_names())
def test_manifest_outcome(corpus_run: CorpusRun, name: str) -> None:
    case = corpus_run.cases[name]
    job = corpus_run.jobs.get(case.key)
    assert job is not None, f"{name}: the manifest never became a job"
    assert str(job.status) in FINAL_STATUSES
    assert str(job.status) in case.status, (job.status, job.reason)
    report = corpus_run.reports[case.key]
    assert report["status"] == str(job.status)
    if job.status == "FAILED":
        assert isinstance(job.reason, str)
        assert "Traceback" not in job.reason
    for fragment in case.reason:
        assert fragment in (job.reason or ""), f"{fragment!r} not in {job.reason!r}"
    imported = {entry["thing_name"] for entry in report["imported_entries"]}
    assert imported == set(case.good)
    assert set(case.good) <= corpus_run.things
    failures = {failure["locator"]: failure["reason"] for failure in report["failures"]}
    assert set(failures) == set(case.bad), failures
    for locator, fragments in case.bad.items():
        assert failures[locator].startswith(f"{locator}: "), failures[locator]
        for fragment in fragments:
            assert fragment in failures[locator], f"{fragment!r} not in {failures[locator]!r}"
    duplicates = {entry["locator"]: entry["reason"] for entry in report["duplicate_entries"]}
    assert set(duplicates) == set(case.duplicates), duplicates
    for locator, fragments in case.duplicates.items():
        for fragment in fragments:
            assert fragment in duplicates[locator]
    assert report["imported"] == len(case.good)
    assert report["failed"] == len(case.bad)
    assert report["duplicates"] == len(case.duplicates)
    if job.status != "FAILED" or job.total:
        assert job.total == report["imported"] + report["failed"] + report["duplicates"]
