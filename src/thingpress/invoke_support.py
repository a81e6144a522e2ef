"""What surrounds a ``thingpress invoke`` handler call.

The function's environment against an external endpoint, the build-output freshness warning, the
manifests an event's S3 notifications (direct or inside SQS record bodies) name and that are
uploaded first, the Microchip verifiers uploaded with them, the job that unsigned sample import
messages need (created and signed for here), and the jobs the event started or names, looked up in
the JobsTable afterwards.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thingpress.cfn import NO_VALUE, Resolver, TemplateError, load_template
from thingpress.console import CliError

if TYPE_CHECKING:
    from thingpress.invoke_spec import FunctionSpec


def s3_notifications(event: Any) -> list[dict[str, Any]]:
    """Return the S3 notification records of ``event``, direct or inside SQS record bodies."""
    records = event.get("Records") if isinstance(event, dict) else None
    found: list[dict[str, Any]] = []
    for record in records if isinstance(records, list) else []:
        if isinstance(record, dict) and isinstance((record.get("s3") or {}).get("object"), dict):
            found.append(record)
        elif isinstance(record, dict) and isinstance(record.get("body"), str):
            try:
                body = json.loads(record["body"])
            except json.JSONDecodeError:
                continue
            found.extend(s3_notifications(body))
    return found


def prepare_uploads(event: Any, s3: Any, bucket: str, sources: list[Path], upload: Path | None) -> Any:
    """Upload the manifest each S3 notification of ``event`` names and return the event pointing at it.

    The file is ``upload`` when given, else the first of ``sources`` (directories) holding a file
    with the key's base name; a notification without a file is left as it is. Notifications inside
    SQS bodies are rewritten in their body.

    Args:
        event: The event (bucket placeholder already replaced).
        s3: An S3 client of the target.
        bucket: The bucket to upload to.
        sources: Directories to look for a file named like the key.
        upload: A file to upload for every notification.

    Returns:
        The event with each uploaded object's versionId, eTag and size.

    """
    event = json.loads(json.dumps(event))

    def patch(record: dict[str, Any]) -> None:
        s3_object = record["s3"]["object"]
        key = urllib.parse.unquote_plus(str(s3_object.get("key", "")))
        name = Path(key).name
        candidates = [upload] if upload is not None else [directory / name for directory in sources]
        path = next((candidate for candidate in candidates if name and candidate.is_file()), None)
        if path is None:
            return
        body = path.read_bytes()
        put = s3.put_object(Bucket=bucket, Key=key, Body=body)
        s3_object.update(size=len(body), eTag=put["ETag"].strip('"'))
        if put.get("VersionId"):
            s3_object["versionId"] = put["VersionId"]
        print(f"Uploaded {path} to s3://{bucket}/{key}.", file=sys.stderr)

    for record in event.get("Records") or []:
        if s3_notifications({"Records": [record]}) == [record]:
            patch(record)
        elif isinstance(record.get("body"), str) and s3_notifications({"Records": [record]}):
            body = json.loads(record["body"])
            for inner in s3_notifications(body):
                patch(inner)
            record["body"] = json.dumps(body)
    return event


INVOKE_OWNER = "thingpress-invoke"
"""The parse-lease owner of the jobs `prepare_import_jobs` creates."""


def upload_verifiers(s3: Any, bucket: str, prefix: str, directory: Path) -> list[str]:
    """Upload every ``.crt``/``.pem`` file of ``directory`` under the Microchip verifier ``prefix``.

    Returns:
        The keys written.

    """
    keys: list[str] = []
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix.lower() in {".crt", ".pem"}:
            key = f"{prefix}{path.name}"
            s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            keys.append(key)
    print(f"Uploaded {len(keys)} verifier(s) from {directory} to s3://{bucket}/{prefix}.", file=sys.stderr)
    return keys


def prepare_import_jobs(event: Any, store: Any, iot: Any, bucket: str) -> Any:
    """Give the unsigned import messages of ``event`` the job they need, and sign them for it.

    A live import message is acted on only when its job exists and is importing, and when it carries
    the ``mac`` that job's secret gives (issue 12). A sample cannot carry either, so for each job id
    whose messages are all unsigned and which is not in the JobsTable, this creates a job (key
    ``invoke/<sample job id>``, a fresh version each run), takes it through parsing to IMPORTING with
    the messages' entry count, rewrites the messages to its id and signs them with its secret. The
    policies, thing groups and thing type the messages' settings name are created when absent. Signed
    messages, and messages for a job that exists, are left as they are: they are judged as sent.

    Args:
        event: The event (SQS records whose bodies may be import messages).
        store: The ``layer_utils`` JobStore of the target.
        iot: An IoT client of the target.
        bucket: The intake bucket the jobs are recorded under.

    Returns:
        The event with the prepared messages replaced.

    """
    from layer_utils.messages import (  # noqa: PLC0415 - the layer loads only when needed
        ImportMessage,
        decode_message,
        encode_import_message,
        sign_import_message,
    )
    from thingpress.localrun import ensure_iot_resources  # noqa: PLC0415 - loads boto's IoT model

    event = json.loads(json.dumps(event))
    records = [record for record in event.get("Records") or [] if isinstance(record, dict)]
    messages: dict[int, ImportMessage] = {}
    for index, record in enumerate(records):
        try:
            message = decode_message(str(record.get("body", "")))
        except ValueError:
            continue
        if isinstance(message, ImportMessage):
            messages[index] = message
    by_job: dict[str, list[int]] = {}
    for index, message in messages.items():
        by_job.setdefault(message.job_id, []).append(index)
    for sample_id, indexes in by_job.items():
        if any(messages[index].mac for index in indexes) or store.get_job(sample_id) is not None:
            continue
        total = sum(len(messages[index].entries) for index in indexes)
        _, job = store.create_job(bucket, f"invoke/{sample_id}", uuid.uuid4().hex)
        store.claim_parse(job.job_id, INVOKE_OWNER, datetime.now(UTC) + timedelta(minutes=5))
        store.mark_parsed(job.job_id, INVOKE_OWNER, total, {"entries_done": total})
        secret = store.get_job(job.job_id).secret
        for index in indexes:
            message = messages[index]
            settings = message.settings
            ensure_iot_resources(
                iot,
                policies=settings.policies,
                thing_groups=settings.thing_groups,
                thing_type=settings.thing_type,
            )
            signed = sign_import_message(replace(message, job_id=job.job_id), secret)
            records[index]["body"] = encode_import_message(signed)
        print(
            f"Created job {job.job_id} ({total} entries) for the sample's job {sample_id} and signed "
            f"its {len(indexes)} import message(s) with the job's secret.",
            file=sys.stderr,
        )
    return event


def event_jobs(event: Any, store: Any) -> tuple[tuple[Any, ...], tuple[str, ...]]:
    """Look up the jobs ``event`` refers to in ``store`` (a ``layer_utils`` JobStore).

    Those its S3 notifications started, and those its SQS messages name by ``job_id``.

    Returns:
        The jobs found, and the ids of named jobs that do not exist.

    """
    from layer_utils.jobs import job_id_for  # noqa: PLC0415 - the layer loads only when needed

    ids: list[str] = []
    for record in s3_notifications(event):
        s3_object = record["s3"]["object"]
        key = urllib.parse.unquote_plus(str(s3_object.get("key", "")))
        ids.append(
            job_id_for(
                str((record["s3"].get("bucket") or {}).get("name", "")),
                key,
                str(s3_object.get("versionId", "")),
            )
        )
    named: list[str] = []
    for record in (event.get("Records") if isinstance(event, dict) else None) or []:
        try:
            body = json.loads(record.get("body", ""))
        except (AttributeError, json.JSONDecodeError):
            continue
        if isinstance(body, dict) and isinstance(body.get("job_id"), str) and body["job_id"] not in named:
            named.append(body["job_id"])
    jobs = [job for job in map(store.get_job, ids) if job is not None]
    unknown: list[str] = []
    for job_id in named:
        job = store.get_job(job_id)
        if job is None:
            unknown.append(job_id)
        elif job.job_id not in {known.job_id for known in jobs}:
            jobs.append(job)
    return tuple(jobs), tuple(unknown)


def environment_for_endpoint(
    template_path: Path, spec: FunctionSpec, caller: Mapping[str, str]
) -> dict[str, str]:
    """Return the function's environment for a run against an external endpoint.

    Template values that do not depend on stack resources are resolved locally; a variable set in
    ``caller`` wins.

    Args:
        template_path: The template.
        spec: The function spec.
        caller: The caller's environment.

    Returns:
        The environment.

    Raises:
        CliError: A variable refers to a stack resource and is not set by the caller (the first is
            named).

    """
    resolver = Resolver(load_template(template_path))
    resolved: dict[str, str] = {}
    for name, value in spec.environment.items():
        if name in caller:
            resolved[name] = caller[name]
            continue
        try:
            result = resolver.resolve(value, where=f"{spec.logical_id}.Environment.Variables.{name}")
        except TemplateError as error:
            raise CliError(
                f"{name} of {spec.logical_id} refers to a stack resource; set {name} in the environment "
                f"to run against {caller.get('AWS_ENDPOINT_URL', 'the endpoint')}."
            ) from error
        if result is NO_VALUE:
            continue
        resolved[name] = result if isinstance(result, str) else json.dumps(result)
    return resolved


def stale_build_files(spec: FunctionSpec) -> list[Path]:
    """Return the source ``.py`` files whose copy in the build output is missing or different.

    Empty when the function runs from the source tree or the build output is current.
    """
    if not spec.from_build:
        return []
    stale: list[Path] = []
    for source, built in zip(spec.source_dirs, (spec.code_dir, *spec.layer_dirs), strict=True):
        for path in sorted(source.rglob("*.py")):
            copy = built / path.relative_to(source)
            if not copy.is_file() or copy.read_bytes() != path.read_bytes():
                stale.append(path)
    return stale


def warn_if_source(spec: FunctionSpec, build_dir: Path) -> None:
    """Warn on stderr when the function runs from the source tree or from stale build output."""
    if not spec.from_build:
        print(
            f"warning: no build output at {build_dir / spec.logical_id}; running {spec.logical_id} "
            "from the source tree (run `sam build` to test the packaged code).",
            file=sys.stderr,
        )
        return
    stale = stale_build_files(spec)
    if stale:
        print(
            f"warning: the build output of {spec.logical_id} is older than the source ({len(stale)} files "
            f"differ, e.g. {stale[0]}); run `sam build` to run the current code.",
            file=sys.stderr,
        )


def invocation_problem(outcome: Any) -> str | None:
    """Return one sentence saying why an ``Invocation`` did not succeed, or None when it did.

    It failed when the handler raised, the response lists ``batchItemFailures``, the event names a
    job that does not exist, or a job it started or names ended FAILED or has failed entries.
    """
    if outcome.error is not None:
        return f"The {outcome.spec.logical_id} handler raised {outcome.error.get('errorType')}."
    failures = outcome.response.get("batchItemFailures") if isinstance(outcome.response, dict) else None
    if failures:
        ids = ", ".join(str(item.get("itemIdentifier")) for item in failures)
        return f"{len(failures)} record(s) of the event failed (batchItemFailures: {ids})."
    if outcome.unknown_jobs:
        return (
            f"The event names job {outcome.unknown_jobs[0]}, which is not in the JobsTable, so its "
            "messages were dropped (a live message needs its job, and an import message its signature)."
        )
    for job in outcome.jobs:
        if job.status == "FAILED":
            return f"Job {job.job_id} for {job.key} ended FAILED: {job.reason}"
        if job.failed:
            return f"Job {job.job_id} for {job.key} has {job.failed} failed entries (status {job.status})."
    return None
