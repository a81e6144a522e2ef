"""``thingpress invoke``: run one function's handler on an event, like ``sam local invoke`` without Docker.

The function is read from the SAM template (CodeUri, Handler, Layers, Environment, Timeout,
MemorySize). Its code comes from the ``sam build`` output (``<build dir>/<LogicalId>``, with every
layer's ``<build dir>/<LayerId>/python`` on the path as ``/opt/python`` would be); without build
output it falls back to the source tree with a warning. The handler runs in a subprocess whose
``PYTHONPATH`` starts with the code and layer directories, so the built code, not the editable
install, is what runs. Its JSON response goes to stdout; its logs go to stderr with ``-v`` (and
when the process dies without a result), and are dropped otherwise.

AWS calls go to the endpoint in ``AWS_ENDPOINT_URL`` when it is set; otherwise a local stack
(:mod:`thingpress.local`) is started for the call. The function's environment comes from the
template, resolved against the local stack; against an endpoint, variables that refer to stack
resources must be set in the caller's environment (as with ``sam local invoke --env-vars``), and
any of the function's variables set in the caller's environment override the template.

Sample events name the bucket ``thingpress-manifests-example``; that name is replaced by the
function's ``THINGPRESS_BUCKET`` before the call. The manifests an S3 event names are uploaded first
(with the Microchip verifiers, for a function that reads them), unsigned sample import messages get
a job and its signature, and the outcome is judged with the jobs the event started or names
(:mod:`thingpress.invoke_support`).
"""

from __future__ import annotations

import json
import os
import subprocess  # only our own interpreter is run  # nosec B404
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from thingpress.console import CliError, print_json
from thingpress.invoke_spec import FunctionSpec, resolve_function
from thingpress.invoke_support import (
    environment_for_endpoint,
    event_jobs,
    invocation_problem,
    prepare_import_jobs,
    prepare_uploads,
    upload_verifiers,
    warn_if_source,
)

EXAMPLE_BUCKET = "thingpress-manifests-example"
"""The bucket name used by the sample events in ``events/``; replaced by the real bucket at invoke time."""

DEFAULT_TEMPLATE = Path("template.yaml")
DEFAULT_BUILD_DIR = Path(".aws-sam/build")

# Runs inside the subprocess: import the handler, call it with the event and a Lambda-like context,
# and write {"response": ...} or {"errorType", "errorMessage", "stackTrace"} to the result file.
_CHILD = r"""
import importlib, json, sys, time, traceback, uuid

handler, event_path, result_path, name, arn, memory, timeout = sys.argv[1:8]
deadline = time.monotonic() + float(timeout)


class Context:
    function_name = name
    function_version = "$LATEST"
    invoked_function_arn = arn
    memory_limit_in_mb = int(memory)
    aws_request_id = str(uuid.uuid4())
    log_group_name = "/aws/lambda/" + name
    log_stream_name = "local/[$LATEST]" + uuid.uuid4().hex

    @staticmethod
    def get_remaining_time_in_millis():
        return max(0, int((deadline - time.monotonic()) * 1000))


module_name, _, function_name = handler.rpartition(".")
with open(event_path, encoding="utf-8") as stream:
    event = json.load(stream)
try:
    module = importlib.import_module(module_name)
    response = getattr(module, function_name)(event, Context())
    document = {"response": response, "module_file": module.__file__}
    status = 0
except Exception as error:
    document = {
        "errorType": type(error).__name__,
        "errorMessage": str(error),
        "stackTrace": traceback.format_exception(error),
    }
    status = 1
with open(result_path, "w", encoding="utf-8") as stream:
    json.dump(document, stream, default=str)
sys.exit(status)
"""


@dataclass(frozen=True)
class Invocation:
    """The outcome of one handler call.

    ``response`` is the handler's return value (None when it raised); ``error`` the Lambda-style
    error document when it raised; ``module_file`` the file the handler module was loaded from.
    """

    response: Any
    error: Mapping[str, Any] | None
    module_file: str | None
    spec: FunctionSpec
    jobs: tuple[Any, ...] = ()
    """The ``layer_utils`` jobs the event names or started, looked up after the call."""
    unknown_jobs: tuple[str, ...] = ()
    """Job ids the event's messages name that are not in the JobsTable after the call."""

    @property
    def document(self) -> Any:
        """What ``sam local invoke`` prints: the response, or the error document."""
        return self.error if self.error is not None else self.response

    @property
    def problem(self) -> str | None:
        """One sentence saying why the invocation did not succeed, or None when it did."""
        return invocation_problem(self)


def rewrite_event(event: Any, bucket: str | None) -> Any:
    """Return ``event`` with the sample bucket name replaced by ``bucket`` (unchanged when None).

    The replacement is textual over the JSON document, so it also reaches SQS bodies that embed the
    bucket name (continuation messages).
    """
    if not bucket:
        return event
    return json.loads(json.dumps(event).replace(EXAMPLE_BUCKET, bucket))


def run_handler(
    spec: FunctionSpec,
    event: Any,
    environment: Mapping[str, str],
    *,
    function_name: str | None = None,
    function_arn: str | None = None,
    python: str = sys.executable,
    echo_logs: bool = True,
) -> Invocation:
    """Run the handler of ``spec`` on ``event`` in a subprocess and return the outcome.

    The handler's output (logs) goes to this process's stderr when ``echo_logs`` or when the process
    died without writing a result; it is dropped otherwise.

    Args:
        spec: The function spec.
        event: The event.
        environment: The function's environment, added to a copy of this process's environment with
            ``PYTHONPATH`` replaced by the code and layer directories.
        function_name: The function name for the context.
        function_arn: The function ARN for the context.
        python: The interpreter.
        echo_logs: Copy the handler's output to stderr.

    Returns:
        The outcome.

    Raises:
        CliError: The subprocess died without writing a result.

    """
    name = function_name or spec.logical_id
    region = environment.get("AWS_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    arn = function_arn or f"arn:aws:lambda:{region}:123456789012:function:{name}"
    child_env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    child_env.update(environment)
    child_env.update(
        {
            "PYTHONPATH": os.pathsep.join(str(path) for path in (spec.code_dir, *spec.layer_dirs)),
            "PYTHONNOUSERSITE": "1",
            "AWS_SAM_LOCAL": "true",
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(int(spec.timeout)),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "LAMBDA_TASK_ROOT": str(spec.code_dir),
            "AWS_REGION": region,
        }
    )
    with tempfile.TemporaryDirectory(prefix="thingpress-invoke-") as scratch:
        event_path = Path(scratch) / "event.json"
        result_path = Path(scratch) / "result.json"
        event_path.write_text(json.dumps(event), encoding="utf-8")
        command = [python, "-c", _CHILD, spec.handler, str(event_path), str(result_path), name, arn]
        command += [str(spec.memory), str(spec.timeout)]
        completed = subprocess.run(  # noqa: S603 - our own interpreter and fixed child code  # nosec B603
            command,
            env=child_env,
            cwd=spec.code_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
        if echo_logs or not result_path.is_file():
            sys.stderr.write(completed.stdout.decode("utf-8", "replace"))
        if not result_path.is_file():
            raise CliError(f"The {spec.logical_id} handler process exited with code {completed.returncode}.")
        document = json.loads(result_path.read_text(encoding="utf-8"))
    if "response" in document:
        return Invocation(document["response"], None, document.get("module_file"), spec)
    return Invocation(None, document, None, spec)


def invoke(
    logical_id: str,
    event: Any,
    *,
    template: Path = DEFAULT_TEMPLATE,
    build_dir: Path = DEFAULT_BUILD_DIR,
    stack: Any = None,
    caller_env: Mapping[str, str] | None = None,
    sources: tuple[Path, ...] = (),
    upload: Path | None = None,
    verifiers: Path | None = None,
    echo_logs: bool = True,
) -> Invocation:
    """Invoke one function of the template on ``event`` (the Python API behind ``thingpress invoke``).

    A template or environment problem raises ``CliError``. When ``sources`` or ``upload`` is given,
    the manifests the event's S3 notifications name are uploaded first (``prepare_uploads``), and
    ``verifiers`` under the function's Microchip verifier prefix; unsigned import messages for a job
    that does not exist get one (``prepare_import_jobs``). The jobs the event started or names are
    looked up after the call (``Invocation.jobs``).

    Args:
        logical_id: The function's logical id.
        event: The event.
        template: The template.
        build_dir: The ``sam build`` directory.
        stack: A running ``thingpress.local.LocalStack`` whose function environment and endpoint are
            used; None: ``AWS_ENDPOINT_URL`` from ``caller_env`` is the endpoint, or a local stack is
            started for the call.
        caller_env: The caller's environment (default ``os.environ``).
        sources: Directories holding the manifests S3 notifications name (by base name).
        upload: The file to upload for every S3 notification.
        verifiers: A directory of Microchip signer certificates to upload first.
        echo_logs: Copy the handler's logs to stderr.

    Returns:
        The invocation outcome.

    """
    caller = dict(os.environ if caller_env is None else caller_env)
    spec = resolve_function(template, logical_id, build_dir)
    prepare = _Preparation(sources, upload, verifiers, echo_logs)
    if stack is not None:
        warn_if_source(spec, build_dir)
        return _invoke_on_stack(spec, event, stack, prepare)
    if caller.get("AWS_ENDPOINT_URL"):
        environment = environment_for_endpoint(template, spec, caller)
        environment["AWS_ENDPOINT_URL"] = caller["AWS_ENDPOINT_URL"]
        warn_if_source(spec, build_dir)
        return _invoke_on_endpoint(spec, event, environment, prepare)
    from thingpress.local import LocalStack  # noqa: PLC0415 - the emulator loads only when needed

    warn_if_source(spec, build_dir)
    with LocalStack(template) as local_stack:
        return _invoke_on_stack(spec, event, local_stack, prepare)


@dataclass(frozen=True)
class _Preparation:
    """What `invoke` prepares before the call (see its arguments) and whether logs are echoed."""

    sources: tuple[Path, ...]
    upload: Path | None
    verifiers: Path | None
    echo_logs: bool

    @property
    def active(self) -> bool:
        """Whether the event's references are prepared (``thingpress invoke`` does; tests may not)."""
        return bool(self.sources) or self.upload is not None or self.verifiers is not None


_CLIENTS = ("s3", "dynamodb", "iot")


def _invoke_on_stack(spec: FunctionSpec, event: Any, stack: Any, prepare: _Preparation) -> Invocation:
    environment = {key: str(value) for key, value in stack.function_env(spec.logical_id).items()}
    environment["AWS_ENDPOINT_URL"] = stack.endpoint_url
    return _run_prepared(
        spec,
        event,
        environment,
        {name: stack.client(name) for name in _CLIENTS},
        prepare,
        function_name=stack.physical_id(spec.logical_id),
        table=stack.physical_id("JobsTable"),
    )


def _invoke_on_endpoint(
    spec: FunctionSpec, event: Any, environment: dict[str, str], prepare: _Preparation
) -> Invocation:
    import boto3  # noqa: PLC0415 - only this path needs its own clients

    endpoint = environment["AWS_ENDPOINT_URL"]
    clients = {
        "s3": boto3.client("s3", endpoint_url=endpoint),
        "dynamodb": boto3.client("dynamodb", endpoint_url=endpoint),
        "iot": boto3.client("iot", endpoint_url=endpoint),
    }
    table = environment.get("THINGPRESS_JOBS_TABLE")
    return _run_prepared(spec, event, environment, clients, prepare, table=table)


def _run_prepared(
    spec: FunctionSpec,
    event: Any,
    environment: dict[str, str],
    clients: Mapping[str, Any],
    prepare: _Preparation,
    *,
    table: str | None,
    function_name: str | None = None,
) -> Invocation:
    """Prepare what the event refers to, run the handler, and attach the jobs the event started or names."""
    from layer_utils.jobs import JobStore  # noqa: PLC0415 - the layer loads only when needed

    bucket = environment.get("THINGPRESS_BUCKET")
    event = rewrite_event(event, bucket)
    store = JobStore(table, dynamodb=clients["dynamodb"], s3=clients["s3"]) if table else None
    if bucket and prepare.active:
        verifier_prefix = environment.get("THINGPRESS_MICROCHIP_VERIFIER_PREFIX")
        if prepare.verifiers is not None and verifier_prefix:
            upload_verifiers(clients["s3"], bucket, verifier_prefix, prepare.verifiers)
        event = prepare_uploads(event, clients["s3"], bucket, list(prepare.sources), prepare.upload)
        if store is not None:
            event = prepare_import_jobs(event, store, clients["iot"], bucket)
    outcome = run_handler(spec, event, environment, function_name=function_name, echo_logs=prepare.echo_logs)
    if store is None:
        return outcome
    jobs, unknown = event_jobs(event, store)
    return replace(outcome, jobs=jobs, unknown_jobs=unknown)


def invoke_command(
    function: str,
    event_path: Path,
    *,
    template: Path | None,
    build_dir: Path,
    upload: Path | None = None,
    verifiers: Path | None = None,
    verbose: bool = False,
) -> int:
    """Run ``thingpress invoke``: print the handler's JSON response (or error document) on stdout.

    The manifests the event's S3 notifications name are uploaded first: ``upload``, or the file of
    the same name next to the event file; so are the Microchip ``verifiers`` (default: the event
    folder's ``verifiers/``, when it exists). Unsigned import messages get a job and its signature.
    The handler's logs reach stderr only when ``verbose``. When the invocation did not succeed
    (``Invocation.problem``) one line on stderr says why.

    Returns:
        0 when the handler returned, no record failed and no job the event started failed; 1 otherwise.

    Raises:
        CliError: The template is missing or the event file is not JSON.

    """
    template_path = template or DEFAULT_TEMPLATE
    if not template_path.is_file():
        raise CliError(f"Template {template_path} not found; run from the project root or pass --template.")
    try:
        event = json.loads(event_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CliError(f"Event file {event_path} is not valid JSON: {error}.") from error
    folder_verifiers = event_path.parent / "verifiers"
    outcome = invoke(
        function,
        event,
        template=template_path,
        build_dir=build_dir,
        sources=(event_path.parent,),
        upload=upload,
        verifiers=verifiers or (folder_verifiers if folder_verifiers.is_dir() else None),
        echo_logs=verbose,
    )
    print_json(outcome.document)
    problem = outcome.problem
    if problem is None:
        return 0
    print(f"thingpress invoke: {problem}", file=sys.stderr)
    return 1
