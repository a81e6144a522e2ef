"""`make bench`: Thingpress's cost and throughput figures on the embedded local stack.

Prints one JSON document on stdout and writes it to bench/results.json. Everything runs on the
local stack (moto in-process); AWS calls are counted server side by the quota emulator, so every
figure counts real requests of the real handlers. Figures:

* IoT calls per new and per re-imported certificate (1 policy, 1 thing group, 1 thing type);
* SQS calls per 1,000 certificates fanned out, fan-out rate and peak RSS of the ManifestProvider on a
  100,000-certificate manifest (the provider runs in a subprocess, so its RSS is its own);
* end-to-end certificates per second for 10,000 certificates (quota emulator counting only);
* at the default AWS IoT quotas, the achieved RegisterCertificateWithoutCA rate as a share of the
  10/s ceiling, and the certificates lost to throttling;
* the import time of each handler module (the cold-start cost of the code);
* a local import (as ``thingpress local import``, IoT quotas lifted) at 1,000 and 10,000 certificates
  (100,000 with ``--full``): seconds per 1,000 certificates at each size, and the registration time of
  the first and the last 1,000 certificates of each run: flat figures mean the run measures our code;
* the ManifestProvider's own cost per 10,000 entries at 10k and 100k certificates (and 1M with
  ``--full``) with a continuation every 20 s of work, and its peak RSS (``bench/provider_scaling.py``);
* the machine and the date.

Time figures are measured, not asserted: moto serves every call from this process, so the local
rates say more about moto than about AWS. Handler output (logs, EMF) goes to /dev/null; progress
goes to stderr. Options: ``--quick`` runs every figure on smaller inputs; ``--full`` adds the
largest inputs (the 100,000-certificate local import and the 1,000,000-certificate provider scaling
run, about 0.8 GB of manifest on disk); ``--only FIGURE...`` runs those figures alone.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bulk_importer.rate_limit import DEFAULT_IOT_TPS

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
RESULTS = ROOT / "bench" / "results.json"
PROVIDER = "ManifestProviderFunction"
IMPORTER = "BulkImporterFunction"
POLICY, GROUP, THING_TYPE = "bench-policy", "bench-group", "bench-type"
TARGET_PARAMETERS = {"PolicyNames": POLICY, "ThingGroupNames": GROUP, "ThingTypeName": THING_TYPE}
"""The stack's own targets: set as the operator would, not per upload (uploader metadata is allowlisted)."""
UNLIMITED_TPS = {api: 100_000 for api in DEFAULT_IOT_TPS}
HANDLER_MODULES = ("manifest_provider.app", "bulk_importer.app")


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[Any]:
    """Point file descriptor 1 at /dev/null; yield a stream on the real stdout for the result."""
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        sys.stdout.flush()
        os.dup2(devnull.fileno(), 1)
    try:
        with os.fdopen(os.dup(saved), "w") as real:
            yield real
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# --- the local pipeline ---------------------------------------------------------------------------


class Pipeline:
    """A local stack with the quota emulator in front (enforcing or counting only) and the IoT targets."""

    def __init__(self, *, parameters: Mapping[str, str], quotas: Mapping[str, float] | None) -> None:
        from thingpress.local import LocalStack
        from thingpress.local.layers import MotoLock, mark_harness_client
        from thingpress.local.quota import QuotaEmulator

        self.stack = LocalStack(TEMPLATE, parameters={**TARGET_PARAMETERS, **parameters}, stack_name="bench")
        # Without quotas the emulator only counts the calls.
        self.quota = QuotaEmulator(quotas) if quotas is not None else QuotaEmulator(enabled=False)
        self.lock = MotoLock()
        self._mark = mark_harness_client

    def __enter__(self) -> Pipeline:
        self.stack.start()
        self.lock.install()
        self.quota.install()
        self.iot = self._mark(self.stack.client("iot"))
        self.s3 = self._mark(self.stack.client("s3"))
        self.sqs = self._mark(self.stack.client("sqs"))
        self.dynamodb = self._mark(self.stack.client("dynamodb"))
        self.iot.create_policy(
            policyName=POLICY,
            policyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}],
                }
            ),
        )
        self.iot.create_thing_group(thingGroupName=GROUP)
        self.iot.create_thing_type(thingTypeName=THING_TYPE)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.quota.uninstall()
        self.lock.uninstall()
        self.stack.stop()

    def upload(self, key: str, body: bytes | Path) -> None:
        data = body.read_bytes() if isinstance(body, Path) else body
        self.s3.put_object(Bucket=self.stack.bucket, Key=key, Body=data)

    def run(self, max_seconds: float = 3600.0) -> Any:
        from thingpress.local.faults import FaultyEmulator

        emulator = FaultyEmulator(self.stack, max_concurrency=None)
        stats = emulator.run_until_idle(max_seconds=max_seconds)
        if not stats.idle:
            raise RuntimeError(f"The local pipeline did not drain within {max_seconds} seconds.")
        return stats

    def job(self, key: str) -> Any:
        from layer_utils.jobs import JobStore

        store = JobStore(self.stack.physical_id("JobsTable"), dynamodb=self.dynamodb, s3=self.s3)
        (job,) = [job for job in store.list_jobs() if job.key == key]
        return job

    def certificate_count(self) -> int:
        paginator = self.iot.get_paginator("list_certificates")
        return sum(
            len(page["certificates"]) for page in paginator.paginate(PaginationConfig={"PageSize": 250})
        )


def generated_manifest(count: int, path: Path, seed: int) -> Path:
    from thingpress.certfactory import make_ca, make_device_certs
    from thingpress.generate import write_generated

    ca = make_ca(f"Thingpress Bench CA {seed}")
    write_generated(path, make_device_certs(count, ca, cn_format=f"bench-{seed}-{{i}}"), seed=seed)
    return path


def job_summary(job: Any) -> dict[str, Any]:
    return {
        "status": str(job.status),
        "total": job.total,
        "imported": job.succeeded,
        "failed": job.failed,
        "duplicates": job.duplicates,
    }


def per_certificate(
    calls: Mapping[tuple[str, str], int], service: str, certificates: int
) -> dict[str, float]:
    return {
        operation: round(count / certificates, 4)
        for (name, operation), count in sorted(calls.items())
        if name == service
    }


# --- figures --------------------------------------------------------------------------------------


def iot_calls_per_certificate(count: int, workdir: Path) -> dict[str, Any]:
    """Import `count` new certificates, then the same certificates again under another key."""
    progress(f"IoT calls per certificate: {count} new, then re-imported")
    manifest = generated_manifest(count, workdir / "calls.txt", seed=1)
    with Pipeline(parameters={"IotApiTps": json.dumps(UNLIMITED_TPS)}, quotas=None) as pipeline:
        pipeline.upload("incoming/calls-new.txt", manifest)
        pipeline.run()
        new = pipeline.quota.reset_counts()
        pipeline.upload("incoming/calls-again.txt", manifest)
        pipeline.run()
        again = pipeline.quota.reset_counts()
        jobs = {
            "new": job_summary(pipeline.job("incoming/calls-new.txt")),
            "re_imported": job_summary(pipeline.job("incoming/calls-again.txt")),
        }
    return {
        "certificates": count,
        "policies": 1,
        "thing_groups": 1,
        "thing_type": True,
        "target_per_new_certificate": "3 + P + G = 5",
        "iot_calls_per_new_certificate": round(new.service_calls("iot") / count, 4),
        "iot_calls_per_reimported_certificate": round(again.service_calls("iot") / count, 4),
        "new_by_operation": per_certificate(new.calls, "iot", count),
        "reimported_by_operation": per_certificate(again.calls, "iot", count),
        "jobs": jobs,
    }


def end_to_end(count: int, workdir: Path) -> dict[str, Any]:
    """Import `count` certificates with the quota emulator counting only; certificates per second."""
    progress(f"End to end: {count} certificates, quotas off")
    manifest = generated_manifest(count, workdir / "e2e.txt", seed=2)
    key = "incoming/e2e.txt"
    with Pipeline(parameters={"IotApiTps": json.dumps(UNLIMITED_TPS)}, quotas=None) as pipeline:
        started = time.monotonic()
        pipeline.upload(key, manifest)
        stats = pipeline.run()
        elapsed = time.monotonic() - started
        counts = pipeline.quota.counts()
        job = pipeline.job(key)
        registered = pipeline.certificate_count()
    return {
        "certificates": count,
        "seconds": round(elapsed, 1),
        "certificates_per_second": round(count / elapsed, 1),
        "registered": registered,
        "job": job_summary(job),
        "invocations": stats.invocations,
        "iot_calls_per_certificate": round(counts.service_calls("iot") / count, 4),
        "sqs_calls_per_1000_certificates": round(counts.service_calls("sqs") * 1000 / count, 2),
        "sqs_calls_by_operation": {op: n for (svc, op), n in sorted(counts.calls.items()) if svc == "sqs"},
        "dynamodb_calls_per_1000_certificates": round(counts.service_calls("dynamodb") * 1000 / count, 2),
    }


def quota_ceiling(count: int, workdir: Path) -> dict[str, Any]:
    """Import `count` certificates against the DEFAULT AWS IoT quotas, enforced by the emulator."""
    from thingpress.local.quota import DEFAULT_IOT_QUOTAS

    progress(f"Quota ceiling: {count} certificates at the default AWS IoT quotas")
    manifest = generated_manifest(count, workdir / "quota.txt", seed=3)
    key = "incoming/quota.txt"
    with Pipeline(parameters={}, quotas=DEFAULT_IOT_QUOTAS) as pipeline:
        started = time.monotonic()
        pipeline.upload(key, manifest)
        pipeline.run()
        elapsed = time.monotonic() - started
        counts = pipeline.quota.counts()
        job = pipeline.job(key)
        registered = pipeline.certificate_count()
    api = "RegisterCertificateWithoutCA"
    rate = counts.admitted_rate(api) or 0.0
    ceiling = DEFAULT_IOT_QUOTAS[api]
    return {
        "certificates": count,
        "quota_per_second": ceiling,
        "achieved_register_rate_per_second": round(rate, 3),
        "percent_of_quota_ceiling": round(100 * rate / ceiling, 1),
        "end_to_end_seconds": round(elapsed, 1),
        "throttled_by_api": counts.throttled,
        "registered": registered,
        "lost_to_throttling": count - min(registered, job.succeeded),
        "limiter": "the fleet rate budget (RateBudgetTable), one entry per importer invocation",
        "job": job_summary(job),
    }


def undo_rate(count: int, workdir: Path) -> dict[str, Any]:
    """Undo a `count`-certificate job through the UndoQueue at the DEFAULT AWS IoT quotas (enforced).

    The import runs with the emulator counting only; the undo then runs with every quota enforced
    and the UndoFunction at its deployed defaults (UndoApiTps, UndoMaxConcurrency). The ceiling is
    what the quotas allow: for each API the undo called, its quota divided by its calls per entry;
    the smallest of these is the most entries per second any undo could reach.
    """
    from thingpress.local.quota import DEFAULT_IOT_QUOTAS

    progress(f"Undo rate: {count} certificates at the default AWS IoT quotas")
    manifest = generated_manifest(count, workdir / "undo.txt", seed=4)
    key = "incoming/undo.txt"
    with Pipeline(parameters={"IotApiTps": json.dumps(UNLIMITED_TPS)}, quotas=DEFAULT_IOT_QUOTAS) as pipeline:
        pipeline.quota.enabled = False
        pipeline.upload(key, manifest)
        pipeline.run()
        job = pipeline.job(key)
        pipeline.quota.reset_counts()
        pipeline.quota.enabled = True
        started = time.monotonic()
        pipeline.sqs.send_message(
            QueueUrl=pipeline.stack.physical_id("UndoQueue"), MessageBody=json.dumps({"job_id": job.job_id})
        )
        stats = pipeline.run()
        elapsed = time.monotonic() - started
        counts = pipeline.quota.counts()
        undone = pipeline.job(key)
        left = pipeline.certificate_count()
    entries = job.succeeded
    per_entry = {api: n / entries for api, n in sorted(counts.admitted.items())}
    ceilings = {api: DEFAULT_IOT_QUOTAS[api] / calls for api, calls in per_entry.items() if calls}
    bound = min(ceilings, key=lambda api: ceilings[api])
    rate = entries / elapsed
    return {
        "certificates": entries,
        "status": str(undone.status),
        "certificates_left": left,
        "seconds": round(elapsed, 1),
        "undo_certificates_per_second": round(rate, 2),
        "ceiling_certificates_per_second": round(ceilings[bound], 2),
        "ceiling_bound_by": bound,
        "percent_of_ceiling": round(100 * rate / ceilings[bound], 1),
        "calls_per_certificate": {api: round(calls, 3) for api, calls in per_entry.items()},
        "throttled_by_api": counts.throttled,
        "invocations": stats.invocations,
        "limiter": "the UndoFunction's defaults: UndoApiTps divided by UndoMaxConcurrency (2)",
    }


# --- fleet rate budget: share of each quota (issue 15) ---------------------------------------------

QUOTA_SHARE_SCENARIOS: dict[str, tuple[dict[str, str], tuple[int, ...]]] = {
    "single_200": ({}, (200,)),
    "ten_mixed": ({}, (10, 25, 40, 50, 60, 75, 90, 30, 70, 50)),
    "concurrency_10_single_200": ({"ImporterMaxConcurrency": "10"}, (200,)),
}
"""Scenario name → (stack parameters, manifest sizes uploaded together), at the default AWS quotas."""


def quota_share(name: str, workdir: Path) -> dict[str, Any]:
    """Upload the scenario's manifests together against the default AWS IoT quotas, enforced.

    The share of an API is its admitted rate between its first and last admitted call (the quota
    emulator's clock) over its quota; RegisterCertificateWithoutCA, one call per certificate and the
    smallest quota, is the headline. The other APIs are bounded by it (one call per certificate at a
    larger quota), so their share says how much of their quota the workload needed, not what was left.
    """
    from thingpress.local.quota import DEFAULT_IOT_QUOTAS

    parameters, sizes = QUOTA_SHARE_SCENARIOS[name]
    progress(f"Quota share {name}: manifests of {sizes} certificates, parameters {parameters}")
    keys = {f"incoming/share-{name}-{index}.txt": size for index, size in enumerate(sizes)}
    manifests = {
        key: generated_manifest(size, workdir / f"share-{index}.txt", seed=100 + index)
        for index, (key, size) in enumerate(keys.items())
    }
    with Pipeline(parameters=parameters, quotas=DEFAULT_IOT_QUOTAS) as pipeline:
        load = os.getloadavg()[0]
        started = time.monotonic()
        for key, manifest in manifests.items():
            pipeline.upload(key, manifest)
        stats = pipeline.run()
        elapsed = time.monotonic() - started
        counts = pipeline.quota.counts()
        jobs = [pipeline.job(key) for key in keys]
        registered = pipeline.certificate_count()
    total = sum(sizes)
    shares = {
        api: round(100 * rate / DEFAULT_IOT_QUOTAS[api], 1)
        for api in sorted(counts.admitted)
        if api in DEFAULT_IOT_QUOTAS and (rate := counts.admitted_rate(api)) is not None
    }
    headline = "RegisterCertificateWithoutCA"
    return {
        "certificates": total,
        "manifests": len(sizes),
        "parameters": parameters,
        "percent_of_quota": shares.get(headline),
        "percent_of_quota_by_api": shares,
        "admitted_by_api": dict(sorted(counts.admitted.items())),
        "throttled_by_api": counts.throttled,
        "throttles": counts.total_throttled,
        "registered": registered,
        "lost_certificates": total - min(registered, sum(job.succeeded for job in jobs)),
        "failed": sum(job.failed for job in jobs),
        "importer_invocations": stats.invocations.get(IMPORTER, 0),
        "end_to_end_seconds": round(elapsed, 1),
        "load_average_1min": round(load, 1),
    }


WORKER_CODE = r"""
import json, os, resource, sys, time, uuid
import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext

class Context(LambdaContext):
    def __init__(self, name, timeout, memory):
        self._function_name = name
        self._function_version = "$LATEST"
        self._invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self._memory_limit_in_mb = memory
        self._aws_request_id = str(uuid.uuid4())
        self._log_group_name = f"/aws/lambda/{name}"
        self._log_stream_name = "bench"
        self._tenant_id = None
        self._deadline = time.monotonic() + timeout
    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

def peak_kb():
    # VmHWM is this process image's own peak: ru_maxrss keeps the parent's peak across fork and exec.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

spec = json.loads(sys.argv[1])
baseline = peak_kb()
import manifest_provider.app as app
after_import = peak_kb()
sqs = boto3.client("sqs")
sqs.meta.events.register("before-send", lambda request, **_: request.headers.__setitem__(spec["header"], "1"))
durations = []
while True:
    messages = sqs.receive_message(QueueUrl=spec["queue"], MaxNumberOfMessages=1, AttributeNames=["All"],
                                   MessageAttributeNames=["All"], WaitTimeSeconds=0).get("Messages", [])
    if not messages:
        break
    message = messages[0]
    record = {"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
              "body": message["Body"], "attributes": message.get("Attributes", {}),
              "messageAttributes": {}, "md5OfBody": message["MD5OfBody"], "eventSource": "aws:sqs",
              "eventSourceARN": spec["arn"], "awsRegion": "us-east-1"}
    started = time.monotonic()
    context = Context(spec["name"], spec["timeout"], spec["memory"])
    response = app.lambda_handler({"Records": [record]}, context)
    durations.append(time.monotonic() - started)
    if response.get("batchItemFailures"):
        sqs.change_message_visibility(QueueUrl=spec["queue"], ReceiptHandle=message["ReceiptHandle"],
                                      VisibilityTimeout=0)
    else:
        sqs.delete_message(QueueUrl=spec["queue"], ReceiptHandle=message["ReceiptHandle"])
peak = peak_kb()
print(json.dumps({"durations": durations, "baseline_kb": baseline, "after_import_kb": after_import,
                  "peak_kb": peak}), file=sys.stderr)
"""


def function_subprocess_env(stack: Any, function: str) -> dict[str, str]:
    spec = stack.functions[function]
    paths = [str(spec.code_dir), *(str(path) for path in spec.layer_dirs), str(ROOT / "src")]
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("THINGPRESS_", "POWERTOOLS_"))
    }
    env.update(stack.function_env(function))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    return env


def fan_out(count: int, workdir: Path) -> dict[str, Any]:
    """Fan a `count`-certificate manifest out with the provider in a subprocess; rate and peak RSS."""
    from thingpress.local.layers import HARNESS_HEADER

    progress(f"Fan-out: generating a {count}-certificate manifest")
    manifest = generated_manifest(count, workdir / "fanout.txt", seed=4)
    key = "incoming/fanout.txt"
    with Pipeline(parameters={}, quotas=None) as pipeline:
        stack = pipeline.stack
        spec = stack.functions[PROVIDER]
        pipeline.upload(key, manifest)
        size = manifest.stat().st_size
        manifest.unlink()
        worker = {
            "queue": stack.physical_id("IntakeQueue"),
            "arn": stack.attribute("IntakeQueue", "Arn"),
            "name": spec.name,
            "timeout": spec.timeout,
            "memory": spec.memory_size,
            "header": HARNESS_HEADER,
        }
        progress(f"Fan-out: provider subprocess on {size / 1e6:.0f} MB")
        started = time.monotonic()
        completed = subprocess.run(
            [sys.executable, "-c", WORKER_CODE, json.dumps(worker)],
            env=function_subprocess_env(stack, PROVIDER),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        elapsed = time.monotonic() - started
        if completed.returncode != 0:
            raise RuntimeError(f"The provider subprocess failed:\n{completed.stderr[-4000:]}")
        measured = json.loads(completed.stderr.strip().splitlines()[-1])
        counts = pipeline.quota.counts()
        job = pipeline.job(key)
        attributes = pipeline.sqs.get_queue_attributes(
            QueueUrl=stack.physical_id("ImportQueue"), AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
    durations = measured["durations"]
    busy = sum(durations)
    return {
        "certificates": count,
        "manifest_bytes": size,
        "provider_invocations": len(durations),
        "longest_invocation_seconds": round(max(durations), 1),
        "function_timeout_seconds": spec.timeout,
        "timed_out": max(durations) >= spec.timeout,
        "fan_out_seconds": round(busy, 1),
        "certificates_per_second": round(count / busy, 1),
        "subprocess_seconds": round(elapsed, 1),
        "peak_rss_mb": round(measured["peak_kb"] / 1024, 1),
        "peak_rss_after_imports_mb": round(measured["after_import_kb"] / 1024, 1),
        "rss_measure": "VmHWM of the provider process (ru_maxrss would include the parent's peak)",
        "memory_size_mb": spec.memory_size,
        "import_messages": int(attributes["ApproximateNumberOfMessages"]),
        "sqs_calls": counts.service_calls("sqs"),
        "sqs_calls_per_1000_certificates": round(counts.service_calls("sqs") * 1000 / count, 2),
        "sqs_calls_by_operation": {op: n for (svc, op), n in sorted(counts.calls.items()) if svc == "sqs"},
        "job": job_summary(job),
    }


def import_times(runs: int) -> dict[str, Any]:
    """Import each handler module in fresh interpreters (-X importtime); cumulative milliseconds."""
    from thingpress.local import LocalStack

    progress("Handler import times")
    results: dict[str, Any] = {}
    with LocalStack(TEMPLATE, stack_name="benchimport") as stack:
        for function, module in ((PROVIDER, "manifest_provider.app"), (IMPORTER, "bulk_importer.app")):
            env = function_subprocess_env(stack, function)
            samples = []
            for _ in range(runs):
                completed = subprocess.run(
                    [sys.executable, "-X", "importtime", "-c", f"import {module}"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                pattern = re.compile(rf"^import time:\s+\d+\s+\|\s+(\d+)\s+\|\s*{re.escape(module)}$", re.M)
                match = pattern.search(completed.stderr)
                if match is None:
                    raise RuntimeError(f"No import time for {module} in:\n{completed.stderr[-2000:]}")
                samples.append(int(match.group(1)) / 1000)
            results[module] = {
                "median_ms": round(statistics.median(samples), 1),
                "min_ms": round(min(samples), 1),
                "runs": runs,
            }
    return results


# --- local import cost per 1,000 certificates (issue 15, item 5) ------------------------------------


def _registration_times(iot: Any) -> list[float]:
    """Return the creation time of every registered certificate, in seconds, in order."""
    paginator = iot.get_paginator("list_certificates")
    return sorted(
        certificate["creationDate"].timestamp()
        for page in paginator.paginate(PaginationConfig={"PageSize": 250})
        for certificate in page["certificates"]
    )


def local_import_one(count: int, workdir: Path) -> dict[str, Any]:
    """Run one `count`-certificate manifest through `LocalRun` (as `local import`), IoT quotas lifted."""
    from thingpress.local import LocalStack
    from thingpress.localrun import LocalRun, Upload, ensure_iot_resources

    progress(f"Local import: generating {count} certificates")
    manifest = generated_manifest(count, workdir / f"local-{count}.txt", seed=5)
    parameters = {**TARGET_PARAMETERS, "IotApiTps": json.dumps(UNLIMITED_TPS)}
    with LocalStack(TEMPLATE, parameters=parameters, stack_name="bench") as stack:
        iot = stack.client("iot")
        ensure_iot_resources(iot, policies=[POLICY], thing_groups=[GROUP], thing_type=THING_TYPE)
        progress(f"Local import: {count} certificates")
        started = time.monotonic()
        (report,) = LocalRun(stack, show_progress=False, timeout=24 * 3600.0).run(
            [Upload("incoming/local-import.txt", manifest.read_bytes())]
        )
        elapsed = time.monotonic() - started
        registered = _registration_times(iot)
    figures: dict[str, Any] = {
        "certificates": count,
        "seconds": round(elapsed, 1),
        "seconds_per_1000": round(elapsed * 1000 / count, 2),
        "status": report["status"],
        "imported": report["imported"],
        "registered": len(registered),
    }
    if len(registered) >= 2000:  # a first and a last thousand that do not overlap
        figures["first_1000_registration_seconds"] = round(registered[999] - registered[0], 2)
        figures["last_1000_registration_seconds"] = round(registered[-1] - registered[-1000], 2)
    return figures


def local_import_cost(sizes: tuple[int, ...], workdir: Path) -> dict[str, Any]:
    """Seconds per 1,000 certificates of a local import at each size; flat means our code, not moto."""
    runs = [local_import_one(count, workdir) for count in sizes]
    return {
        "runs": runs,
        "seconds_per_1000_by_size": {str(run["certificates"]): run["seconds_per_1000"] for run in runs},
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


PROVIDER_INVOCATION_SECONDS = 20.0
"""Work per provider invocation in the scaling figure: short, so large manifests cross many continuations."""


def provider_scaling(sizes: list[int], workdir: Path) -> dict[str, Any]:
    """The provider alone (moto in-process) at each size: CPU seconds per 10,000 entries, peak RSS."""
    sys.path.insert(0, str(ROOT / "bench"))
    from provider_scaling import measure

    from thingpress.generate import write_generated

    runs = []
    for count in sizes:
        progress(f"Provider scaling: generating a {count}-certificate manifest")
        manifest = workdir / f"scaling-{count}.txt"
        write_generated(manifest, count, seed=7)  # a count is streamed; an iterable would be listed
        progress(f"Provider scaling: {count} certificates")
        runs.append(measure(count, manifest, PROVIDER_INVOCATION_SECONDS))
        manifest.unlink()
    smallest, largest = runs[0], runs[-1]
    return {
        "invocation_seconds": PROVIDER_INVOCATION_SECONDS,
        "runs": runs,
        "cost_ratio_largest_to_smallest": round(
            largest["cpu_seconds_per_10000_entries"] / smallest["cpu_seconds_per_10000_entries"], 2
        ),
        "load_average": os.getloadavg(),
    }


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


FIGURES = (
    "handler_import_time",
    "iot_calls",
    "fan_out",
    "end_to_end",
    "quota",
    "undo",
    "quota_share",
    "local_import",
    "provider_scaling",
)
"""Every figure, in the order the bench runs them."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run, not saved)")
    parser.add_argument("--full", action="store_true", help="add the largest inputs (100k local import)")
    parser.add_argument(
        "--only", nargs="+", choices=FIGURES, help="run only these figures and print them (not saved)"
    )
    parser.add_argument(
        "--share",
        nargs="*",
        choices=sorted(QUOTA_SHARE_SCENARIOS),
        default=sorted(QUOTA_SHARE_SCENARIOS),
        help="the fleet-budget quota-share scenarios to run (default all)",
    )
    arguments = parser.parse_args()
    chosen = set(arguments.only or FIGURES)
    sizes = (
        {"calls": 50, "e2e": 500, "quota": 100, "undo": 50, "fanout": 5_000, "import_runs": 2}
        if arguments.quick
        else {"calls": 200, "e2e": 10_000, "quota": 500, "undo": 200, "fanout": 100_000, "import_runs": 5}
    )
    local_sizes: tuple[int, ...] = (200, 1_000) if arguments.quick else (1_000, 10_000)
    provider_sizes = [1_000, 10_000] if arguments.quick else [10_000, 100_000]
    if arguments.full:
        local_sizes = (*local_sizes, 100_000)
        provider_sizes.append(1_000_000)
    started = time.monotonic()
    with quiet_stdout() as out, tempfile.TemporaryDirectory(prefix="thingpress-bench-") as tmp:
        workdir = Path(tmp)
        runs: dict[str, Callable[[], Any]] = {
            "handler_import_time": lambda: import_times(sizes["import_runs"]),
            "iot_calls": lambda: iot_calls_per_certificate(sizes["calls"], workdir),
            "fan_out": lambda: fan_out(sizes["fanout"], workdir),
            "end_to_end": lambda: end_to_end(sizes["e2e"], workdir),
            "quota": lambda: quota_ceiling(sizes["quota"], workdir),
            "undo": lambda: undo_rate(sizes["undo"], workdir),
            "quota_share": lambda: {name: quota_share(name, workdir) for name in arguments.share},
            "local_import": lambda: local_import_cost(local_sizes, workdir),
            "provider_scaling": lambda: provider_scaling(provider_sizes, workdir),
        }
        results: dict[str, Any] = {"machine": machine()}
        for figure in FIGURES:
            if figure in chosen:
                results[figure] = runs[figure]()
        results["bench_seconds"] = round(time.monotonic() - started, 1)
        document = json.dumps(results, indent=2)
        if not arguments.quick and arguments.only is None:
            RESULTS.write_text(document + "\n")
        print(document, file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
