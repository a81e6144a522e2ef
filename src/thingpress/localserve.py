"""``thingpress local up`` and ``local down``: a local stack that outlives one command.

``local up`` starts the embedded stack (`thingpress.localrun.local_stack`), configures it as the
operator (`OperatorSettings`), writes its state file (`thingpress.localstate`) and then runs the
functions from their queues, as ``local import`` does, until ``local down`` creates the folder's stop
file, SIGTERM arrives, or Ctrl-C. Its moto state lives in that process: it ends when the stack stops
(moto 5 can neither snapshot its backends nor replay a recording without delivering consumed queue
messages again). ``local import``, ``status``, ``report`` and ``reconcile`` reach the stack with
``--local`` over HTTP (`import_to_running`, `thingpress.remote_cli`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layer_utils.cert_utils import DEFAULT_NAME_SOURCES
from layer_utils.jobs import Job, job_id_for
from layer_utils.schema import SCHEMA
from thingpress import remote
from thingpress.check import certificate_files
from thingpress.console import (
    CliError,
    err_console,
    handler_logs_to_stderr,
    out_console,
    print_json,
)
from thingpress.localrun import (
    DEFAULT_VERIFIER_PREFIX,
    LOCAL_IOT_TPS,
    PROVIDER,
    ensure_iot_resources,
    local_stack,
    new_capture,
    operator_settings,
    report_things,
    upload_trusted_cas,
)
from thingpress.localstate import (
    STATE_FILE,
    STOP_FILE,
    RunningStack,
    find_running,
    read_state,
    write_state,
)
from thingpress.progress import JobProgress
from thingpress.runlimit import local_timeout

_IDLE_WAIT_SECONDS = 0.25
_ROUND_SECONDS = 1.0


@dataclass(frozen=True)
class OperatorSettings:
    """What the operator sets on a stack (its template parameters): ``local up``'s and ``local import``'s.

    ``local import`` on a running stack may not change them: an uploader cannot either.
    """

    policies: tuple[str, ...] = ()
    thing_groups: tuple[str, ...] = ()
    thing_type: str | None = None
    allow_expired: bool = False
    trusted_cas: tuple[Path, ...] = ()
    name_sources: tuple[str, ...] = DEFAULT_NAME_SOURCES
    thing_name_prefix: str = ""

    def describe(self) -> dict[str, Any]:
        """Return the settings as the state file keeps them (trust anchors by SHA-256 of their bytes)."""
        return {
            "policies": list(self.policies),
            "thing_groups": list(self.thing_groups),
            "thing_type": self.thing_type or None,
            "allow_expired": self.allow_expired,
            "trusted_cas": sorted(hashlib.sha256(path.read_bytes()).hexdigest() for path in self.trusted_cas),
            "name_sources": list(self.name_sources),
            "thing_name_prefix": self.thing_name_prefix,
        }

    def apply(self, stack: Any) -> None:
        """Configure a started local stack's ManifestProvider and create the named IoT resources."""
        environment = {
            **operator_settings(
                policies=self.policies, thing_groups=self.thing_groups, thing_type=self.thing_type
            ),
            "THINGPRESS_ALLOW_EXPIRED": "true" if self.allow_expired else "false",
            "THINGPRESS_THING_NAME_SOURCE": ",".join(self.name_sources),
            "THINGPRESS_THING_NAME_PREFIX": self.thing_name_prefix,
        }
        if self.trusted_cas:
            environment["THINGPRESS_TRUSTED_CA_PREFIX"] = upload_trusted_cas(stack, self.trusted_cas)
        stack.configure_function(PROVIDER, environment=environment)
        ensure_iot_resources(
            stack.client("iot"),
            policies=self.policies,
            thing_groups=self.thing_groups,
            thing_type=self.thing_type,
        )


def settings_conflict(running: Mapping[str, Any], wanted: OperatorSettings) -> str | None:
    """Return the first setting ``wanted`` gives that the running stack does not have, or None.

    A setting left at its default (no policy, no prefix...) takes the running stack's.
    """
    defaults = OperatorSettings().describe()
    for name, value in wanted.describe().items():
        if value != defaults[name] and running.get(name) != value:
            return name
    return None


def upload_verifier_files(running: RunningStack, directory: Path) -> list[str]:
    """Upload the certificate files of ``directory`` under the running stack's verifier prefix."""
    s3 = running.client("s3")
    keys = []
    for path in certificate_files(directory):
        key = f"{running.verifier_prefix}{path.name}"
        s3.put_object(Bucket=running.deployment.bucket, Key=key, Body=path.read_bytes())
        keys.append(key)
    return keys


# --- thingpress local up -----------------------------------------------------------------------------


def stack_deployment(stack: Any) -> remote.Deployment:
    """Return the deployment of a started local stack (its UndoQueue only when the template has one)."""
    from thingpress.local import LocalStackError  # noqa: PLC0415 - loads moto

    try:
        undo_queue: str | None = stack.physical_id("UndoQueue")
    except LocalStackError:  # a template without the deployed undo path
        undo_queue = None
    return remote.Deployment(
        bucket=stack.bucket,
        table=stack.physical_id("JobsTable"),
        intake_queue=stack.physical_id("IntakeQueue"),
        intake_dlq=stack.physical_id("IntakeDLQ"),
        import_queue=stack.physical_id("ImportQueue"),
        import_dlq=stack.physical_id("ImportDLQ"),
        undo_queue=undo_queue,
    )


@contextlib.contextmanager
def _stop_on_sigterm(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGTERM while the block runs (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _FinishedJobs:
    """Prints each job once, when it reaches a final status."""

    def __init__(self, store: Any, console: Any) -> None:
        self.store = store
        self.console = console
        self.seen: set[str] = set()

    def print_new(self) -> None:
        for job in self.store.list_jobs():
            if job.is_final and job.job_id not in self.seen:
                self.seen.add(job.job_id)
                self.console.print(
                    f"job {job.job_id} {job.key}: {job.status} "
                    f"({job.succeeded} imported, {job.failed} failed, {job.duplicates} duplicates)"
                )


def up_command(
    folder: Path,
    settings: OperatorSettings,
    *,
    verifiers: Path | None = None,
    template: Path | None = None,
    stop: threading.Event | None = None,
    as_json: bool = False,
) -> int:
    """Run ``thingpress local up``: serve a local stack from ``folder`` until stopped.

    Stops when ``folder``'s stop file appears (``local down``), on SIGTERM, on Ctrl-C, or when
    ``stop`` is set; the state file is removed on the way out.

    Args:
        folder: The state folder.
        settings: The operator settings of the stack's functions.
        verifiers: Microchip signer certificates to upload.
        template: The template (default: found from the current directory).
        stop: Set to stop (for callers that run the stack in a thread).
        as_json: Print the state document as one JSON line when ready, instead of text.

    Returns:
        0 after a clean stop.

    Raises:
        CliError: A stack already runs from ``folder``, or the stack cannot start.

    """
    from thingpress.local import EventSourceMappingEmulator  # noqa: PLC0415 - loads moto

    existing = find_running(folder)
    if existing is not None:
        raise CliError(
            f"A local stack already runs from {folder} at {existing.endpoint} (process {existing.pid});"
            " stop it with `thingpress local down`."
        )
    stop = stop or threading.Event()
    (folder / STOP_FILE).unlink(missing_ok=True)
    console = out_console()
    with local_stack(template, quiet=as_json) as stack, handler_logs_to_stderr(), _stop_on_sigterm(stop):
        settings.apply(stack)
        prefix = (
            stack.function_env(PROVIDER).get("THINGPRESS_MICROCHIP_VERIFIER_PREFIX")
            or DEFAULT_VERIFIER_PREFIX
        )
        running = RunningStack(
            pid=os.getpid(),
            endpoint=stack.endpoint_url,
            region=stack.region,
            deployment=stack_deployment(stack),
            settings=settings.describe(),
            verifier_prefix=prefix,
        )
        if verifiers is not None:
            upload_verifier_files(running, verifiers)
        stack.handler(PROVIDER)  # import the handlers (and their loggers) before serving
        stack.handler("BulkImporterFunction")
        try:
            path = write_state(folder, running)
            if as_json:
                print_json({"schema": SCHEMA, **running.to_json(), "state": str(path)})
            else:
                console.print(f"Local stack serving at {running.endpoint} (region {running.region}).")
                console.print(f"State: {path}. Stop with `thingpress local down` or Ctrl-C.")
            finished = _FinishedJobs(remote.job_store(running.deployment, **_store_clients(running)), console)
            emulator = EventSourceMappingEmulator(stack, max_concurrency=None)
            with new_capture():  # the handlers' EMF metrics go to the capture, not to stdout
                _serve(emulator, folder, stop, after_round=finished.print_new if not as_json else None)
        except KeyboardInterrupt:
            pass
        finally:
            (folder / STATE_FILE).unlink(missing_ok=True)
            (folder / STOP_FILE).unlink(missing_ok=True)
    if not as_json:
        console.print("Local stack stopped.")
    return 0


def _store_clients(running: RunningStack) -> dict[str, Any]:
    return {"dynamodb": running.client("dynamodb"), "s3": running.client("s3")}


def _serve(
    emulator: Any, folder: Path, stop: threading.Event, *, after_round: Callable[[], None] | None
) -> None:
    """Run the functions from their queues, a round at a time, until asked to stop."""
    while not stop.is_set() and not (folder / STOP_FILE).exists():
        stats = emulator.run_until_idle(max_seconds=_ROUND_SECONDS)
        emulator.invocations.clear()  # a long-running stack keeps no history of invocations
        if stats.total_invocations and after_round is not None:
            after_round()
        if stats.idle:
            stop.wait(_IDLE_WAIT_SECONDS)


# --- thingpress local down ---------------------------------------------------------------------------


def down_command(
    folder: Path,
    *,
    timeout: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run ``thingpress local down``: ask the stack running from ``folder`` to stop and wait until it has.

    A state file whose process is gone is removed. Nothing running is not an error.

    Returns:
        0 when no stack runs from ``folder`` any more.

    Raises:
        CliError: The stack is still running after ``timeout`` seconds.

    """
    console = out_console()
    state = read_state(folder)
    running = find_running(folder)
    if running is None:
        if state is not None:
            (folder / STATE_FILE).unlink(missing_ok=True)
            console.print(f"The local stack of {folder} (process {state.pid}) was gone; removed its state.")
        else:
            console.print(f"No local stack runs from {folder}.")
        return 0
    (folder / STOP_FILE).touch()
    deadline = clock() + timeout
    while (folder / STATE_FILE).exists():
        if clock() >= deadline:
            raise CliError(
                f"The local stack of {folder} (process {running.pid}) did not stop within"
                f" {timeout:.0f} seconds."
            )
        sleep(0.1)
    console.print(f"Stopped the local stack at {running.endpoint} (process {running.pid}).")
    return 0


# --- thingpress local import on a running stack -----------------------------------------------------


def import_to_running(
    running: RunningStack,
    manifest: Path,
    *,
    key: str,
    metadata: Mapping[str, str],
    settings: OperatorSettings,
    verifiers: Path | None,
    show_progress: bool,
    max_seconds: float | None = None,
    verify: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Upload ``manifest`` to a running local stack, wait for its job to end and return its report.

    The import's operator settings must be the stack's or left at their defaults (`settings_conflict`).

    The report is `thingpress.remote.job_report` plus ``things`` (`thingpress.localrun.report_things`:
    from the job's outcomes, or read back from IoT with ``verify``). The wait is limited to
    ``max_seconds``, by default `thingpress.runlimit.local_timeout` of the job's entries.

    Returns:
        The report.

    Raises:
        CliError: ``settings`` differ from the running stack's (the operator's), or the job has not
            ended after ``max_seconds``.

    """
    conflict = settings_conflict(running.settings, settings)
    if conflict is not None:
        raise CliError(
            f"The running local stack has another {conflict.replace('_', ' ')} setting; it is the"
            " operator's: pass it to `thingpress local up`, or stop the stack with `thingpress local down`."
        )
    if show_progress:
        err_console().print(f"Importing into the local stack at {running.endpoint} (process {running.pid}).")
    s3 = running.client("s3")
    if verifiers is not None:
        upload_verifier_files(running, verifiers)
    bucket = running.deployment.bucket
    put = s3.put_object(Bucket=bucket, Key=key, Body=manifest.read_bytes(), Metadata=dict(metadata))
    job_id = job_id_for(bucket, key, put.get("VersionId") or str(put.get("ETag", "")).strip('"'))
    store = remote.job_store(running.deployment, **_store_clients(running))
    started = clock()
    job: Job | None = None
    with JobProgress(enabled=show_progress) as progress:
        while True:
            job = store.get_job(job_id)
            if job is None:
                progress.update(key, 0, None, "waiting")
            else:
                progress.update(key, job.settled, job.total, str(job.status))
                if job.is_final:
                    break
            limit = max_seconds
            if limit is None:
                limit = local_timeout(job.total or 0 if job is not None else 0, LOCAL_IOT_TPS)
            if clock() - started >= limit:
                raise CliError(
                    f"The job of {key} has not ended after {limit:.0f} seconds;"
                    " see `thingpress status --local`."
                )
            sleep(0.2)
    return report_things(running.client("iot"), remote.job_report(store, job), verify=verify)
