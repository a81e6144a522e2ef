"""Child process of the provider's peak-memory test: each manifest through the real ManifestProvider.

Run as ``python -m testing.provider_peak DIRECTORY``. ``DIRECTORY/cases.json`` lists the manifests
(name, key, body file, S3 metadata); ``ca.pem`` is trusted for every vendor under ``trusted/``,
``signer.pem`` is the Microchip signer. One local stack (template defaults) serves every case: the
manifest is uploaded, the S3 notification is delivered to the ManifestProvider's handler by the
event-source-mapping emulator (continuations too), and the import messages are dropped unread (the
BulkImporter is not measured). Before each case the process's peak RSS (VmHWM) is reset to its
current RSS (``/proc/self/clear_refs``), so a case's peak is its own plus what the process already
holds: this stack's moto server included, which makes the figure an over-estimate of the Lambda's.

Prints one JSON line per case: name, ``start_kb`` (RSS after the reset), ``peak_kb``, the job's
``status`` after the provider and the handler ``errors``;
first a line with the ``baseline_kb`` (RSS before the first case); each line starts with ``PEAK``.
"""

from __future__ import annotations

import ctypes
import gc
import json
import re
import sys
from pathlib import Path
from typing import Any

from layer_utils.jobs import JobStore
from thingpress.local import LocalStack
from thingpress.local.esm import EventSourceMappingEmulator
from thingpress.local.layers import MotoLock, mark_harness_client

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
TRUSTED_PREFIX = "trusted/"
VENDORS = ("espressif", "generated", "infineon", "microchip")
MARK = "PEAK"
"""Starts each line this module prints (the handler logs to stdout too)."""
_LIBC = ctypes.CDLL("libc.so.6")


def status_kb(field: str) -> int:
    """Return a ``/proc/self/status`` memory field (``VmHWM``, ``VmRSS``) in kB."""
    with open("/proc/self/status", encoding="ascii") as status:
        found = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    assert found is not None, field
    return int(found.group(1))


def reset_peak() -> None:
    """Give freed memory back to the system, then reset VmHWM to the current RSS."""
    gc.collect()
    _LIBC.malloc_trim(0)
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
        clear_refs.write("5")


def drop_messages(sqs: Any, url: str) -> None:
    """Delete every visible message of a queue (PurgeQueue allows one call a minute)."""
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)


def main(directory: Path) -> None:
    """Run every case of ``directory/cases.json`` and print its peak."""
    cases: list[dict[str, Any]] = json.loads((directory / "cases.json").read_text())
    parameters = {"TrustedCaPrefix": TRUSTED_PREFIX}
    with LocalStack(TEMPLATE, parameters=parameters, stack_name="peak") as stack, MotoLock():
        s3 = mark_harness_client(stack.client("s3"))
        sqs = mark_harness_client(stack.client("sqs"))
        ca = (directory / "ca.pem").read_bytes()
        for vendor in VENDORS:
            s3.put_object(Bucket=stack.bucket, Key=f"{TRUSTED_PREFIX}{vendor}/ca.pem", Body=ca)
        signer = (directory / "signer.pem").read_bytes()
        s3.put_object(Bucket=stack.bucket, Key="verifiers/microchip/signer.pem", Body=signer)
        store = JobStore(
            stack.physical_id("JobsTable"), dynamodb=mark_harness_client(stack.client("dynamodb")), s3=s3
        )
        emulator = EventSourceMappingEmulator(stack)
        (intake,) = (source for source in emulator.sources if source.queue == "IntakeQueue")
        import_url = stack.physical_id("ImportQueue")
        stack.handler(intake.function)  # the cold start's imports, as Lambda's init
        reset_peak()
        print(MARK, json.dumps({"baseline_kb": status_kb("VmRSS")}), flush=True)
        for case in cases:
            s3.put_object(
                Bucket=stack.bucket,
                Key=case["key"],
                Body=(directory / case["file"]).read_bytes(),
                Metadata=case["metadata"],
            )
            reset_peak()
            start = status_kb("VmRSS")
            errors = []
            while messages := emulator.receive(intake):
                errors += [str(i.error) for i in emulator.deliver(intake, messages) if i.error]
            peak = status_kb("VmHWM")
            (job,) = (job for job in store.list_jobs() if job.key == case["key"])
            drop_messages(sqs, import_url)
            s3.delete_object(Bucket=stack.bucket, Key=case["key"])
            line = {
                "name": case["name"],
                "start_kb": start,
                "peak_kb": peak,
                "status": str(job.status),
                "errors": errors,
            }
            print(MARK, json.dumps(line), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
