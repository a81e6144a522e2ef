"""Provider cost per entry as manifests grow: seconds per 10,000 entries and peak RSS, our code only.

Each size runs in its own process (so VmHWM is that run's own peak) with moto in-process: the
ManifestProvider domain (``provider.handle_intake_body``) is driven through every continuation, each
invocation given ``invocation_seconds`` of CPU time before it must hand over (a Lambda timeout of
that length plus the provider's time margin, counted in CPU seconds so that the machine's load does
not change where continuations fall), so a large manifest crosses many continuation boundaries.
Only the provider's calls are timed (CPU seconds of the process, so that a shared machine's load
does not count, and wall seconds); generating the manifest is not. Two requests are answered client
side, after botocore has built them as usual, because moto would otherwise hold the data in this
process and the RSS would be moto's: ``SendMessageBatch`` on the import queue (every entry accepted)
and ``GetObject`` of the manifest (streamed from the file on disk). Everything else (the job table,
the findings object, continuation messages) goes through moto.

Run by ``bench/run.py`` (``provider_scaling``); the worker mode is
``python bench/provider_scaling.py '<json spec>'``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCE_PATHS = ["src/layer_utils", "src/manifest_provider", "src"]


def peak_kb() -> int:
    """Return this process's peak resident set (VmHWM), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def serve_manifest(key: str, path: str) -> Any:
    """Return a botocore before-call hook that answers GetObject of ``key`` from the file ``path``."""
    from botocore.awsrequest import AWSResponse
    from botocore.response import StreamingBody

    size = os.path.getsize(path)

    def hook(params: Any, **_kwargs: Any) -> Any:
        if not params["url_path"].split("?")[0].endswith(key):
            return None
        body = StreamingBody(open(path, "rb"), size)  # noqa: SIM115 - read to the end by the spool
        parsed = {"Body": body, "ContentLength": size, "ETag": '"bench"', "Metadata": {}}
        return AWSResponse(params["url"], 200, {}, None), parsed

    return hook


def accept_import_batches(import_url: str) -> Any:
    """Return a botocore before-call hook that answers SendMessageBatch on ``import_url`` itself.

    The request is serialised as usual; moto's SQS would keep every message (and walks the whole
    queue on each send).
    """
    from botocore.awsrequest import AWSResponse

    def hook(params: Any, **_kwargs: Any) -> Any:
        payload = json.loads(params["body"])
        if payload.get("QueueUrl") != import_url:
            return None
        successful = [
            {
                "Id": entry["Id"],
                "MessageId": str(uuid.uuid4()),
                "MD5OfMessageBody": hashlib.md5(
                    entry["MessageBody"].encode(), usedforsecurity=False
                ).hexdigest(),
            }
            for entry in payload["Entries"]
        ]
        return AWSResponse(params["url"], 200, {}, None), {"Successful": successful, "Failed": []}

    return hook


class CpuDeadline:
    """Remaining milliseconds of an invocation given ``seconds`` of CPU time (plus the time margin).

    The CPU clock is read at most every 50 ms of wall time: on a loaded VM one read can take a
    millisecond.
    """

    def __init__(self, seconds: float, margin_ms: int) -> None:
        self.deadline = time.process_time() + seconds
        self.margin_ms = margin_ms
        self.checked = time.monotonic()
        self.left_ms = int(seconds * 1000)

    def __call__(self) -> int:
        now = time.monotonic()
        if now - self.checked > 0.05:
            self.checked = now
            self.left_ms = int((self.deadline - time.process_time()) * 1000)
        return max(0, self.margin_ms + self.left_ms)


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Drive the provider over one manifest through all its continuations; seconds and peak RSS."""
    import boto3
    from moto import mock_aws

    from layer_utils.jobs import JobStore
    from manifest_provider import provider as p
    from manifest_provider.limits import Limits

    baseline = peak_kb()
    region = "us-east-1"
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name=region)
        ddb.create_table(
            TableName="Jobs",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        s3 = boto3.client("s3", region_name=region)
        s3.create_bucket(Bucket="bench")
        sqs = boto3.client("sqs", region_name=region)
        import_url = sqs.create_queue(QueueName="import")["QueueUrl"]
        intake_url = sqs.create_queue(QueueName="intake")["QueueUrl"]
        sqs.meta.events.register("before-call.sqs.SendMessageBatch", accept_import_batches(import_url))
        key = "generated/scaling.txt"
        s3.meta.events.register("before-call.s3.GetObject", serve_manifest(key, spec["manifest"]))
        size = os.path.getsize(spec["manifest"])
        record = {
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "bench"}, "object": {"key": key, "size": size, "eTag": "bench"}},
        }
        config = p.ProviderConfig(
            jobs_table="Jobs",
            import_queue_url=import_url,
            intake_queue_url=intake_url,
            trust_bucket="bench",
            limits=Limits(max_manifest_bytes=4 * 1024**3),
        )
        services = p.Services(
            s3=s3,
            sqs=sqs,
            iot=boto3.client("iot", region_name=region),
            jobs=JobStore("Jobs", dynamodb=ddb, s3=s3),
            emit=lambda *_args: None,
        )
        after_setup = peak_kb()
        bodies = [json.dumps({"Records": [record]})]
        durations: list[float] = []
        cpu: list[float] = []
        outcomes: list[str] = []
        while bodies:
            body = bodies.pop(0)
            started, started_cpu = time.monotonic(), time.process_time()
            remaining_ms = CpuDeadline(spec["invocation_seconds"], config.time_margin_ms)
            results = p.handle_intake_body(
                body, services, config, owner=str(uuid.uuid4()), remaining_ms=remaining_ms
            )
            durations.append(time.monotonic() - started)
            cpu.append(time.process_time() - started_cpu)
            outcomes.extend(result.outcome for result in results)
            received = sqs.receive_message(QueueUrl=intake_url, MaxNumberOfMessages=10).get("Messages", [])
            bodies.extend(message["Body"] for message in received)
            for message in received:
                sqs.delete_message(QueueUrl=intake_url, ReceiptHandle=message["ReceiptHandle"])
        job = services.jobs.list_jobs()[0]
    return {
        "durations": durations,
        "cpu": cpu,
        "outcomes": outcomes,
        "total": job.total,
        "status": str(job.status),
        "baseline_kb": baseline,
        "after_setup_kb": after_setup,
        "peak_kb": peak_kb(),
    }


def measure(count: int, manifest: Path, invocation_seconds: float) -> dict[str, Any]:
    """Run the worker on a ``count``-certificate manifest file; the figures of that size."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(ROOT / path) for path in SOURCE_PATHS)
    env["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    spec = {"manifest": str(manifest), "invocation_seconds": invocation_seconds}
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"The provider scaling worker failed:\n{completed.stderr[-4000:]}")
    measured = json.loads(completed.stdout.strip().splitlines()[-1])
    busy = sum(measured["durations"])
    cpu = sum(measured["cpu"])
    return {
        "certificates": count,
        "manifest_bytes": manifest.stat().st_size,
        "invocations": len(measured["durations"]),
        "continuations": measured["outcomes"].count("continued"),
        "provider_cpu_seconds": round(cpu, 1),
        "cpu_seconds_per_10000_entries": round(cpu * 10_000 / count, 2),
        "provider_wall_seconds": round(busy, 1),
        "wall_seconds_per_10000_entries": round(busy * 10_000 / count, 2),
        "peak_rss_mb": round(measured["peak_kb"] / 1024, 1),
        "rss_before_upload_mb": round(measured["baseline_kb"] / 1024, 1),
        "job": {"status": measured["status"], "total": measured["total"]},
    }


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
