"""The embedded local AWS stack: moto in server mode, in-process, with resources from template.yaml.

`LocalStack` starts (once per process) a `ThreadedMotoServer` on 127.0.0.1 and a free port, points
boto3 at it through the environment, resets moto's state, and creates the template's buckets (with
their S3 → SQS notifications), queues (with redrive policies), tables and functions. Handlers run
in this process with their function's code directory and layers on `sys.path`, their environment
applied and a `FakeLambdaContext`; `thingpress.local.esm` feeds them from the real SQS queues.

One moto server serves every stack of a process, so module-level state of handler code (cached
clients, endpoints) stays valid from one stack to the next; only one stack may be active at a time,
and starting or stopping one resets all of moto's in-process state.

Emulated: SQS queues (all attributes, RedrivePolicy), S3 buckets (name, versioning, queue
notifications), DynamoDB tables (keys, indexes, billing, streams, SSE, TTL), layers and functions
(code, environment with Globals, SQS events). Schedule events are recorded (`LocalStack.schedules`)
but never fire on their own: `EventSourceMappingEmulator.invoke_scheduled` or `thingpress invoke`
runs the function with the event EventBridge would send. Other resources and properties (IAM, policies, log
groups, alarms, KMS, bucket encryption/lifecycle/public-access settings) are not enforced locally:
such a resource gets a placeholder name and ARN so that references to it still resolve.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import boto3
import moto.core.config
import moto.iot.models
import moto.s3.notifications
from botocore.config import Config
from moto.iot.exceptions import InvalidRequestException, ResourceAlreadyExistsException
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from layer_utils.cert_utils import load_certificate
from thingpress.cfn import Resolver, TemplateError, function_properties, load_template
from thingpress.local.context import FakeLambdaContext, function_arn

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_REGION",
    "FIDELITY_PATCHES",
    "EventSourceSpec",
    "FunctionSpec",
    "LocalStack",
    "LocalStackError",
    "ScheduleSpec",
]

DEFAULT_ACCOUNT: Final = "123456789012"  # moto's default account
DEFAULT_REGION: Final = "us-east-1"
LOCAL_CREDENTIAL: Final = "testing"

# Lambda-runtime variables are set per function; these prefixes of the caller's environment are
# dropped while a handler runs, so a developer's shell cannot leak configuration into a function.
_FUNCTION_ONLY_PREFIXES: Final = ("THINGPRESS_", "POWERTOOLS_")

_SUB_NAME: Final = re.compile(r"\$\{([^}!][^}]*)\}")


class LocalStackError(Exception):
    """The local stack cannot start, create a resource or load a handler; the message says why."""


@dataclass(frozen=True)
class FunctionSpec:
    """A template function as the local stack runs it.

    `environment` holds the template's resolved Environment.Variables (Globals merged); `code_dir`
    and `layer_dirs` go on `sys.path` (layer dirs play the part of /opt/python).
    """

    logical_id: str
    name: str
    arn: str
    handler: str
    code_dir: Path
    layer_dirs: tuple[Path, ...]
    runtime: str
    timeout: int
    memory_size: int
    environment: Mapping[str, str]


@dataclass(frozen=True)
class EventSourceSpec:
    """An SQS event source mapping of a function (a SAM `SQS` event of an AWS::Serverless::Function)."""

    function: str
    name: str
    queue: str
    queue_url: str
    queue_arn: str
    batch_size: int = 10
    maximum_batching_window_seconds: int = 0
    function_response_types: tuple[str, ...] = ()
    maximum_concurrency: int | None = None
    enabled: bool = True
    dead_letter_queue_url: str | None = None
    max_receive_count: int | None = None

    @property
    def report_batch_item_failures(self) -> bool:
        """Return whether the handler reports partial batch failures (ReportBatchItemFailures)."""
        return "ReportBatchItemFailures" in self.function_response_types


@dataclass(frozen=True)
class ScheduleSpec:
    """A scheduled invocation of a function (a SAM `Schedule` event), recorded but never fired locally.

    `expression` is the resolved schedule expression, e.g. ``rate(15 minutes)``.
    """

    function: str
    name: str
    expression: str
    enabled: bool = True


# --- fidelity patches -------------------------------------------------------------------------------


def _strict_create_thing(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap moto's IoTBackend.create_thing with AWS's behaviour for an existing thing name."""

    def create_thing(
        self: Any,
        thing_name: str,
        thing_type_name: str | None,
        attribute_payload: dict[str, Any] | None,
        billing_group_name: str | None = None,
    ) -> Any:
        arn = f"arn:aws:iot:{self.region_name}:{self.account_id}:thing/{thing_name}"
        existing = self.things.get(arn)
        if existing is None:
            return original(self, thing_name, thing_type_name, attribute_payload, billing_group_name)
        attributes = (attribute_payload or {}).get("attributes") or {}
        existing_type = existing.thing_type.thing_type_name if existing.thing_type else None
        if (
            existing_type != (thing_type_name or None)
            or existing.attributes != attributes
            or existing.billing_group_name != billing_group_name
        ):
            raise ResourceAlreadyExistsException(
                f"Thing {thing_name} already exists in account with different attributes", thing_name, arn
            )
        return existing

    return create_thing


def _tolerant_certificate_id(_original: Callable[..., Any]) -> Callable[..., Any]:
    """Compute moto's certificate id as AWS IoT does, from certificates a strict parser refuses."""

    def compute_der_cert_id(_self: Any, certificate_pem: str) -> str:
        try:
            return load_certificate(certificate_pem).fingerprint
        except ValueError:
            raise InvalidRequestException("The certificate is not valid.") from None

    return compute_der_cert_id


def _aws_key_encoding(original: Callable[..., Any]) -> Callable[..., Any]:
    """Make moto's S3 event keys URL-encoded as AWS does: form encoding that keeps "/" as is."""

    def quote_plus(text: str, safe: str = "/", *args: Any, **kwargs: Any) -> Any:
        return original(text, safe, *args, **kwargs)

    return quote_plus


def _aws_event_version(original: Callable[..., Any]) -> Callable[..., Any]:
    """Add the object's versionId to moto's S3 event records, as AWS does for a versioned object."""

    def get_s3_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> Any:
        event = original(event_name, bucket, key, notification_id)
        version_id = key.version_id
        if version_id and version_id != "null":  # moto's value for an object without a version
            for record in event["Records"]:
                record["s3"]["object"]["versionId"] = version_id
        return event

    return get_s3_event


@dataclass(frozen=True)
class _FidelityPatch:
    owner: Any
    attribute: str
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
    reason: str


FIDELITY_PATCHES: Final = (
    _FidelityPatch(
        moto.iot.models.IoTBackend,
        "create_thing",
        _strict_create_thing,
        "CreateThing on an existing name: AWS returns the thing when type, attributes and billing group"
        " match and raises ResourceAlreadyExistsException otherwise; moto silently overwrites it (losing"
        " the thing id and hiding conflicts the importer must report).",
    ),
    _FidelityPatch(
        moto.iot.models.FakeCertificate,
        "compute_der_cert_id",
        _tolerant_certificate_id,
        "RegisterCertificateWithoutCA: AWS IoT registers real device certificates that bend DER (a '_' in"
        " a PrintableString, explicit defaults, ...) and answers InvalidRequestException for garbage;"
        " moto parses them with a strict parser and fails with an internal error.",
    ),
    _FidelityPatch(
        moto.s3.notifications,
        "quote_plus",
        _aws_key_encoding,
        "S3 event keys: AWS form-encodes the key but leaves '/' as is (a/b c.txt → a/b+c.txt); moto also"
        " encodes '/' as %2F.",
    ),
    _FidelityPatch(
        moto.s3.notifications,
        "_get_s3_event",
        _aws_event_version,
        "S3 event records of a versioned object carry its versionId, which names the manifest version"
        " (the job's idempotency key); moto leaves it out, so a second upload of the same bytes would"
        " look like a duplicate event of the first.",
    ),
)


# --- the shared moto server ---------------------------------------------------------------------------

_server_lock = threading.Lock()
_server: ThreadedMotoServer | None = None
_server_url: str | None = None
_active_stack: LocalStack | None = None


def _shared_server_url() -> str:
    global _server, _server_url  # noqa: PLW0603 - one moto server per process, started on first use
    with _server_lock:
        if _server_url is None:
            # One access-log line per AWS call would drown the CLI's output and test logs.
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
            _server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            _server.start()
            host, port = _server.get_host_and_port()
            _server_url = f"http://{host}:{port}"
        return _server_url


def _reset_moto(endpoint_url: str) -> None:
    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST")  # noqa: S310 - local
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local moto server  # nosec B310
        response.read()


def _replace_environ(target: Mapping[str, str]) -> None:
    for key in [key for key in os.environ if key not in target]:
        del os.environ[key]
    for key, value in target.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _string_value(value: Any) -> str:
    # CloudFormation passes scalars to queue attributes and environment variables as strings.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _references(value: Any) -> set[str]:
    """Return the names a template value refers to (Ref, GetAtt, Sub variables)."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= _references(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                found.add(item)
            elif key == "Fn::GetAtt":
                target = item.split(".", 1)[0] if isinstance(item, str) else item[0]
                if isinstance(target, str):
                    found.add(target)
            elif key == "Fn::Sub":
                text = item if isinstance(item, str) else item[0]
                found |= {name.split(".", 1)[0] for name in _SUB_NAME.findall(text)}
                if isinstance(item, list):
                    found |= _references(item[1])
            else:
                found |= _references(item)
    return found


class LocalStack:
    """The template's resources on an in-process moto server, and its functions runnable in-process.

    Takes the template path, parameter overrides, the stack name, region, an optional `sam build`
    output directory (default: code from the source tree), and the clock used for Lambda contexts.
    Use as a context manager; `start()` raises `LocalStackError` or `TemplateError` when a resource
    cannot be created. Handler invocations of different functions are serialised (the process
    environment is swapped to the function's); invocations of one function may overlap and a
    handler may use threads internally.
    """

    def __init__(
        self,
        template_path: str | Path = "template.yaml",
        *,
        parameters: Mapping[str, str] | None = None,
        stack_name: str = "thingpress",
        region: str = DEFAULT_REGION,
        build_dir: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Load the template; nothing is started until `start()` or `with`."""
        self.template_path = Path(template_path).resolve()
        self.template = load_template(self.template_path)
        self.parameters = dict(parameters or {})
        self.stack_name = stack_name
        self.region = region
        self.account_id = DEFAULT_ACCOUNT
        self.build_dir = Path(build_dir).resolve() if build_dir is not None else None
        self.clock = clock
        self.endpoint_url = ""
        self.physical_ids: dict[str, dict[str, Any]] = {}
        self.functions: dict[str, FunctionSpec] = {}
        self.event_sources: list[EventSourceSpec] = []
        self.schedules: list[ScheduleSpec] = []
        self.skipped_resources: dict[str, str] = {}
        self.resolver = Resolver(
            self.template,
            self.parameters,
            region=region,
            account=self.account_id,
            stack_name=stack_name,
            stack_id=f"arn:aws:cloudformation:{region}:{DEFAULT_ACCOUNT}:stack/{stack_name}/{uuid.uuid4()}",
            physical_ids=self.physical_ids,
        )
        self._moto_lock: Any = None
        self._suffix = uuid.uuid4().hex[:8]
        self._saved_env: dict[str, str | None] = {}
        self._saved_iot_config: dict[str, Any] | None = None
        self._saved_patches: list[tuple[Any, str, Any]] = []
        self._added_paths: list[str] = []
        self._env_condition = threading.Condition()
        self._env_owner: str | None = None
        self._env_users = 0
        self._env_before: dict[str, str] = {}
        self._started = False

    @classmethod
    def from_template(cls, template_path: str | Path = "template.yaml", **options: Any) -> Self:
        """Return a stack for `template_path` (not yet started); `options` as for the constructor."""
        return cls(template_path, **options)

    # --- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        """Start the stack and return it."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the stack, restoring the environment, moto's configuration and patches."""
        self.stop()

    def start(self) -> None:
        """Start moto (once per process), configure the environment and create every resource.

        Raises `LocalStackError` when another stack is active, `TemplateError` for a template the
        local stack cannot evaluate.
        """
        global _active_stack  # noqa: PLW0603 - moto's state is process-wide, so is the active stack
        with _server_lock:
            if _active_stack is not None:
                raise LocalStackError("Another LocalStack is already running in this process; stop it first.")
            _active_stack = self
        try:
            self.endpoint_url = _shared_server_url()
            _reset_moto(self.endpoint_url)
            self._configure_moto()
            self._configure_environment()
            self._started = True
            self._install_moto_lock()
            self._create_resources()
            self._add_code_paths()
            self._clear_layer_client_cache()
        except BaseException:
            self.stop()
            raise

    def _install_moto_lock(self) -> None:
        """Serialise moto's backends that are not thread-safe (IoT, DynamoDB) for every local run.

        Handlers run concurrently (MaximumConcurrency, worker threads); AWS serves that safely, moto's
        IoT and DynamoDB TransactWriteItems do not (see `thingpress.local.quota.MotoLock`).
        """
        from thingpress.local.quota import MotoLock  # noqa: PLC0415 - quota imports this module

        self._moto_lock = MotoLock()
        self._moto_lock.install()

    def stop(self) -> None:
        """Reset moto's state and undo everything `start()` changed in this process."""
        global _active_stack  # noqa: PLW0603 - see start()
        lock = self._moto_lock
        self._moto_lock = None
        if lock is not None and lock.installed:
            # A layer entered later and never left (an exception path) keeps the chain; the lock
            # stays in it, harmlessly, rather than masking the original error.
            with contextlib.suppress(RuntimeError):
                lock.uninstall()
        if self._started:
            _reset_moto(self.endpoint_url)
        self._started = False
        for path in self._added_paths:
            if path in sys.path:
                sys.path.remove(path)
        self._added_paths.clear()
        for owner, attribute, original in reversed(self._saved_patches):
            setattr(owner, attribute, original)
        self._saved_patches.clear()
        if self._saved_iot_config is not None:
            moto.core.config.default_user_config["iot"] = self._saved_iot_config  # type: ignore[typeddict-item]
            self._saved_iot_config = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        self._clear_layer_client_cache()
        with _server_lock:
            if _active_stack is self:
                _active_stack = None

    def _configure_moto(self) -> None:
        # moto's /moto-api/config endpoint ignores "iot", so the in-process configuration is set directly.
        self._saved_iot_config = dict(moto.core.config.default_user_config.get("iot", {}))
        moto.core.config.default_user_config["iot"] = {"use_valid_cert": True}
        for patch in FIDELITY_PATCHES:
            original = getattr(patch.owner, patch.attribute)
            self._saved_patches.append((patch.owner, patch.attribute, original))
            setattr(patch.owner, patch.attribute, patch.wrap(original))

    def _set_env(self, key: str, value: str | None) -> None:
        if key not in self._saved_env:
            self._saved_env[key] = os.environ.get(key)
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

    def _configure_environment(self) -> None:
        for key in list(os.environ):
            if key.startswith("AWS_ENDPOINT_URL_") or key in {"AWS_PROFILE", "AWS_DEFAULT_PROFILE"}:
                self._set_env(key, None)
        for key, value in self.aws_environment().items():
            self._set_env(key, value)
        for key in ("NO_PROXY", "no_proxy"):
            current = os.environ.get(key)
            self._set_env(key, f"{current},127.0.0.1" if current else "127.0.0.1,localhost")

    def aws_environment(self) -> dict[str, str]:
        """Return the variables that point boto3 at this stack (endpoint, fake credentials, region)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIAL,
            "AWS_SESSION_TOKEN": LOCAL_CREDENTIAL,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def _clear_layer_client_cache(self) -> None:
        """Give this stack's functions a cold start, as a new deployment gets on Lambda.

        Clients cached by the layer point at another endpoint or credentials, handler modules cache
        configuration read from the previous stack's environment, and circuit state belongs to the
        previous stack's execution environments: drop all three.
        """
        module = sys.modules.get("layer_utils.aws_utils")
        clear = getattr(module, "clear_client_cache", None)
        if callable(clear):
            clear()
        circuits = sys.modules.get("layer_utils.circuit_state")
        if circuits is not None:
            circuits.set_default_registry(circuits.CircuitRegistry())
        packages = {spec.handler.split(".", 1)[0] for spec in self.functions.values()}
        for name in [name for name in sys.modules if name.split(".", 1)[0] in packages]:
            del sys.modules[name]

    # --- accessors -----------------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        """Return a boto3 client for `service` bound to this stack's endpoint, region and credentials."""
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=LOCAL_CREDENTIAL,
            aws_secret_access_key=LOCAL_CREDENTIAL,
            aws_session_token=LOCAL_CREDENTIAL,
            config=Config(retries={"mode": "standard", "total_max_attempts": 3}),
        )

    def physical_id(self, logical_id: str) -> str:
        """Return what ``Ref`` gives for a created resource (queue URL, bucket/table/function name).

        Raises `LocalStackError` for a resource that was not created locally.
        """
        attributes = self.physical_ids.get(logical_id)
        if attributes is None:
            raise LocalStackError(f"Resource {logical_id} was not created by the local stack.")
        return str(attributes["Ref"])

    def attribute(self, logical_id: str, name: str) -> Any:
        """Return a ``Fn::GetAtt`` attribute (Arn, QueueName...) of a created resource.

        Raises `LocalStackError` when the resource or attribute is unknown.
        """
        attributes = self.physical_ids.get(logical_id) or {}
        if name not in attributes:
            raise LocalStackError(f"Resource {logical_id} has no local attribute {name}.")
        return attributes[name]

    def resources_of_type(self, resource_type: str) -> list[str]:
        """Return the logical ids of created resources of a CloudFormation type, in template order."""
        resources: Mapping[str, Any] = self.template.get("Resources") or {}
        return [
            logical_id
            for logical_id, resource in resources.items()
            if resource.get("Type") == resource_type and logical_id in self.physical_ids
        ]

    @property
    def bucket(self) -> str:
        """Return the name of the template's only S3 bucket; raises `LocalStackError` otherwise."""
        buckets = self.resources_of_type("AWS::S3::Bucket")
        if len(buckets) != 1:
            raise LocalStackError(f"The template has {len(buckets)} buckets; use physical_id() to pick one.")
        return self.physical_id(buckets[0])

    def function_env(self, logical_id: str) -> dict[str, str]:
        """Return the variables the stack sets for a function.

        They are the Lambda runtime's, this stack's endpoint and credentials, and the template's
        Environment (Globals merged). Raises `LocalStackError` for an unknown function.
        """
        spec = self._function(logical_id)
        runtime = {
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "LAMBDA_TASK_ROOT": str(spec.code_dir),
            # There is no X-Ray daemon locally; the template may still turn tracing off itself.
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
        return {**runtime, **self.aws_environment(), **spec.environment}

    def configure_function(
        self,
        logical_id: str,
        *,
        timeout: int | None = None,
        memory_size: int | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> FunctionSpec:
        """Change a function's timeout, memory size or add/override environment variables.

        As on Lambda, where a configuration update gets new execution environments, the function's
        next invocation is a cold start (its handler modules are imported again). Returns the new
        spec. Raises `LocalStackError` for an unknown function.
        """
        spec = self._function(logical_id)
        changes: dict[str, Any] = {}
        if timeout is not None:
            changes["timeout"] = timeout
        if memory_size is not None:
            changes["memory_size"] = memory_size
        if environment is not None:
            changes["environment"] = {**spec.environment, **environment}
        self.functions[logical_id] = replace(spec, **changes)
        package = spec.handler.split(".", 1)[0]
        for name in [name for name in sys.modules if name.split(".", 1)[0] == package]:
            del sys.modules[name]
        return self.functions[logical_id]

    def _function(self, logical_id: str) -> FunctionSpec:
        if logical_id not in self.functions:
            raise LocalStackError(f"Function {logical_id} is not in the local stack.")
        return self.functions[logical_id]

    # --- invoking handlers ---------------------------------------------------------------------------

    @contextmanager
    def function_environment(self, logical_id: str) -> Iterator[None]:
        """Apply a function's environment to the process for the duration of the block.

        Blocks of different functions are serialised; blocks of the same function may overlap.
        Raises `LocalStackError` for an unknown function.
        """
        spec = self._function(logical_id)
        with self._env_condition:
            while self._env_owner not in (None, logical_id):
                self._env_condition.wait()
            if self._env_owner is None:
                self._env_before = dict(os.environ)
                base = {k: v for k, v in os.environ.items() if not k.startswith(_FUNCTION_ONLY_PREFIXES)}
                _replace_environ({**base, **self.function_env(spec.logical_id)})
                self._env_owner = logical_id
            self._env_users += 1
        try:
            yield
        finally:
            with self._env_condition:
                self._env_users -= 1
                if self._env_users == 0:
                    _replace_environ(self._env_before)
                    self._env_owner = None
                    self._env_condition.notify_all()

    def handler(self, logical_id: str) -> Callable[[Any, Any], Any]:
        """Import a function's handler (under its environment, as Lambda's init does) and return it.

        Raises `LocalStackError` when the module cannot be imported, lacks the handler, or was
        already imported from another directory than the function's code.
        """
        spec = self._function(logical_id)
        module_name, _, attribute = spec.handler.rpartition(".")
        with self.function_environment(logical_id):
            try:
                module = importlib.import_module(module_name)
            except ImportError as error:
                raise LocalStackError(
                    f"Function {logical_id}: cannot import {module_name} from {spec.code_dir}: {error}"
                ) from error
        location = Path(getattr(module, "__file__", "") or "").resolve()
        if not location.is_relative_to(spec.code_dir):
            raise LocalStackError(
                f"Function {logical_id}: module {module_name} is already imported from {location}, not from"
                f" {spec.code_dir}; use a fresh process for this code location."
            )
        function = getattr(module, attribute, None)
        if not callable(function):
            raise LocalStackError(f"Function {logical_id}: {spec.handler} is not a callable handler.")
        return function  # type: ignore[no-any-return]

    def make_context(
        self, logical_id: str, *, clock: Callable[[], float] | None = None, timeout: float | None = None
    ) -> FakeLambdaContext:
        """Return a fresh Lambda context for one invocation of a function (its timeout and memory).

        Raises `LocalStackError` for an unknown function.
        """
        spec = self._function(logical_id)
        return FakeLambdaContext(
            spec.name,
            timeout_seconds=spec.timeout if timeout is None else timeout,
            memory_limit_in_mb=spec.memory_size,
            clock=clock or self.clock,
            region=self.region,
            account=self.account_id,
        )

    def invoke(self, logical_id: str, event: Any, context: FakeLambdaContext | None = None) -> Any:
        """Invoke a function's handler in-process with its environment; return its response.

        Exceptions raised by the handler propagate. Raises `LocalStackError` when the handler cannot
        be loaded.
        """
        function = self.handler(logical_id)
        context = context or self.make_context(logical_id)
        with self.function_environment(logical_id):
            return function(event, context)

    # --- resource creation ---------------------------------------------------------------------------

    def _creation_order(self) -> list[str]:
        resources: Mapping[str, Any] = self.template.get("Resources") or {}
        enabled = [logical_id for logical_id in resources if self.resolver.resource_enabled(logical_id)]
        dependencies: dict[str, set[str]] = {}
        for logical_id in enabled:
            resource = resources[logical_id]
            properties: Any = resource.get("Properties") or {}
            if resource.get("Type") == "AWS::Serverless::Function":
                properties = function_properties(self.template, logical_id)
            depends = resource.get("DependsOn") or []
            names = _references(properties) | set([depends] if isinstance(depends, str) else depends)
            dependencies[logical_id] = {name for name in names if name in enabled and name != logical_id}
        order: list[str] = []
        visiting: set[str] = set()

        def visit(logical_id: str) -> None:
            if logical_id in order:
                return
            if logical_id in visiting:
                raise TemplateError(f"Resource {logical_id} is part of a dependency cycle.")
            visiting.add(logical_id)
            for dependency in sorted(dependencies[logical_id], key=enabled.index):
                visit(dependency)
            visiting.discard(logical_id)
            order.append(logical_id)

        for logical_id in enabled:
            visit(logical_id)
        return order

    def _create_resources(self) -> None:
        resources: Mapping[str, Any] = self.template["Resources"]
        creators: dict[str, Callable[[str, Mapping[str, Any]], None]] = {
            "AWS::SQS::Queue": self._create_queue,
            "AWS::S3::Bucket": self._create_bucket,
            "AWS::DynamoDB::Table": self._create_table,
            "AWS::Serverless::LayerVersion": self._create_layer,
            "AWS::Lambda::LayerVersion": self._create_layer,
            "AWS::Serverless::Function": self._create_function,
        }
        for logical_id in self._creation_order():
            resource = resources[logical_id]
            creator = creators.get(resource.get("Type", ""))
            if creator is None:
                self._placeholder(logical_id, resource.get("Type", ""))
            else:
                creator(logical_id, resource.get("Properties") or {})

    def _name(self, logical_id: str, *, limit: int, lower: bool = False) -> str:
        name = f"{self.stack_name}-{logical_id}"[: limit - len(self._suffix) - 1] + f"-{self._suffix}"
        return name.lower() if lower else name

    def _resolve(self, logical_id: str, properties: Mapping[str, Any], key: str, default: Any = None) -> Any:
        if key not in properties:
            return default
        return self.resolver.resolve(properties[key], where=f"Resources.{logical_id}.Properties.{key}")

    def _placeholder(self, logical_id: str, resource_type: str) -> None:
        # Policies, roles, alarms...: not emulated; a stable name/ARN keeps references resolvable.
        service = resource_type.split("::")[1].lower() if resource_type.count("::") >= 2 else "unknown"
        name = self._name(logical_id, limit=128)
        self.physical_ids[logical_id] = {
            "Ref": name,
            "Arn": f"arn:aws:{service}:{self.region}:{self.account_id}:{name}",
        }
        self.skipped_resources[logical_id] = resource_type

    def _create_queue(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        values = self.resolver.resolve(dict(properties), where=f"Resources.{logical_id}.Properties")
        fifo = str(values.get("FifoQueue", "")).lower() == "true"
        name = values.pop("QueueName", None) or self._name(logical_id, limit=75 if fifo else 80) + (
            ".fifo" if fifo else ""
        )
        tags = {tag["Key"]: tag["Value"] for tag in values.pop("Tags", [])}
        attributes = {key: _string_value(value) for key, value in values.items()}
        sqs = self.client("sqs")
        url = sqs.create_queue(QueueName=name, Attributes=attributes, **({"tags": tags} if tags else {}))[
            "QueueUrl"
        ]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.physical_ids[logical_id] = {"Ref": url, "Arn": arn, "QueueName": name, "QueueUrl": url}

    def _create_bucket(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        name = self._resolve(logical_id, properties, "BucketName") or self._name(
            logical_id, limit=63, lower=True
        )
        s3 = self.client("s3")
        if self.region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region})
        self.physical_ids[logical_id] = {
            "Ref": name,
            "Arn": f"arn:aws:s3:::{name}",
            "DomainName": f"{name}.s3.amazonaws.com",
            "RegionalDomainName": f"{name}.s3.{self.region}.amazonaws.com",
        }
        versioning = self._resolve(logical_id, properties, "VersioningConfiguration")
        if versioning:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning["Status"]})
        notification = self._resolve(logical_id, properties, "NotificationConfiguration")
        if notification:
            s3.put_bucket_notification_configuration(
                Bucket=name, NotificationConfiguration=self._notification(logical_id, notification)
            )

    def _notification(self, logical_id: str, configuration: Mapping[str, Any]) -> dict[str, Any]:
        unsupported = sorted(set(configuration) - {"QueueConfigurations", "EventBridgeConfiguration"})
        if unsupported:
            raise TemplateError(
                f"Bucket {logical_id}: {', '.join(unsupported)} notifications are not emulated locally."
            )
        result: dict[str, Any] = {"QueueConfigurations": []}
        for queue_configuration in configuration.get("QueueConfigurations", []):
            entry: dict[str, Any] = {
                "QueueArn": queue_configuration["Queue"],
                "Events": [queue_configuration["Event"]],
            }
            rules = ((queue_configuration.get("Filter") or {}).get("S3Key") or {}).get("Rules") or []
            if rules:
                entry["Filter"] = {
                    "Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}
                }
            result["QueueConfigurations"].append(entry)
        if (
            str((configuration.get("EventBridgeConfiguration") or {}).get("EventBridgeEnabled")).lower()
            == "true"
        ):
            result["EventBridgeConfiguration"] = {}
        return result

    def _create_table(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        values = self.resolver.resolve(dict(properties), where=f"Resources.{logical_id}.Properties")
        name = values.get("TableName") or self._name(logical_id, limit=255)
        request: dict[str, Any] = {
            "TableName": name,
            "KeySchema": values["KeySchema"],
            "AttributeDefinitions": values["AttributeDefinitions"],
            "BillingMode": values.get("BillingMode", "PROVISIONED"),
        }
        for key in ("ProvisionedThroughput", "GlobalSecondaryIndexes", "LocalSecondaryIndexes", "TableClass"):
            if key in values:
                request[key] = values[key]
        if "StreamSpecification" in values:
            request["StreamSpecification"] = {"StreamEnabled": True, **values["StreamSpecification"]}
        if "SSESpecification" in values:
            request["SSESpecification"] = {"Enabled": bool(values["SSESpecification"].get("SSEEnabled"))}
        if values.get("Tags"):
            request["Tags"] = values["Tags"]
        dynamodb = self.client("dynamodb")
        description = dynamodb.create_table(**request)["TableDescription"]
        ttl = values.get("TimeToLiveSpecification")
        if ttl and str(ttl.get("Enabled")).lower() == "true":
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
        self.physical_ids[logical_id] = {"Ref": name, "Arn": description["TableArn"]}
        if "LatestStreamArn" in description:
            self.physical_ids[logical_id]["StreamArn"] = description["LatestStreamArn"]

    def _code_path(self, value: Any, logical_id: str, key: str) -> Path:
        if not isinstance(value, str):
            raise TemplateError(
                f"Resource {logical_id}: {key} must be a local directory for the local stack."
            )
        return (self.template_path.parent / value).resolve()

    def _create_layer(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        name = self._resolve(logical_id, properties, "LayerName") or self._name(logical_id, limit=64)
        if self.build_dir is not None:
            content = self.build_dir / logical_id / "python"
        else:
            content = self._code_path(
                self._resolve(logical_id, properties, "ContentUri"), logical_id, "ContentUri"
            )
        self.physical_ids[logical_id] = {
            "Ref": f"arn:aws:lambda:{self.region}:{self.account_id}:layer:{name}:1",
            "Arn": f"arn:aws:lambda:{self.region}:{self.account_id}:layer:{name}:1",
            "ContentDir": content,
        }

    def _create_function(self, logical_id: str, _: Mapping[str, Any]) -> None:
        properties = function_properties(self.template, logical_id)
        name = self._resolve(logical_id, properties, "FunctionName") or self._name(logical_id, limit=64)
        if self.build_dir is not None:
            code_dir = self.build_dir / logical_id
        else:
            code_dir = self._code_path(
                self._resolve(logical_id, properties, "CodeUri"), logical_id, "CodeUri"
            )
        layer_dirs: list[Path] = []
        for layer in properties.get("Layers") or []:
            target = layer.get("Ref") if isinstance(layer, dict) else None
            if isinstance(target, str) and "ContentDir" in self.physical_ids.get(target, {}):
                layer_dirs.append(self.physical_ids[target]["ContentDir"])
        environment = (self._resolve(logical_id, properties, "Environment") or {}).get("Variables") or {}
        handler = self._resolve(logical_id, properties, "Handler")
        if not isinstance(handler, str) or "." not in handler:
            raise TemplateError(f"Function {logical_id} needs a Handler of the form module.function.")
        spec = FunctionSpec(
            logical_id=logical_id,
            name=name,
            arn=function_arn(name, region=self.region, account=self.account_id),
            handler=handler,
            code_dir=code_dir,
            layer_dirs=tuple(layer_dirs),
            runtime=str(self._resolve(logical_id, properties, "Runtime", "python3.13")),
            timeout=int(self._resolve(logical_id, properties, "Timeout", 3)),
            memory_size=int(self._resolve(logical_id, properties, "MemorySize", 128)),
            environment={key: _string_value(value) for key, value in environment.items()},
        )
        self.functions[logical_id] = spec
        self.physical_ids[logical_id] = {"Ref": name, "Arn": spec.arn}
        for event_name, event in (properties.get("Events") or {}).items():
            where = f"Resources.{logical_id}.Properties.Events.{event_name}.Properties"
            if event.get("Type") == "SQS":
                values = self.resolver.resolve(event.get("Properties") or {}, where=where)
                self._add_event_source(logical_id, event_name, values)
            elif event.get("Type") == "Schedule":
                values = self.resolver.resolve(event.get("Properties") or {}, where=where)
                self.schedules.append(
                    ScheduleSpec(
                        function=logical_id,
                        name=event_name,
                        expression=str(values.get("Schedule", "")),
                        enabled=str(values.get("Enabled", True)).lower() == "true",
                    )
                )

    def _add_event_source(self, function: str, name: str, values: Mapping[str, Any]) -> None:
        queue_arn = values.get("Queue")
        queue = next(
            (lid for lid, attributes in self.physical_ids.items() if attributes.get("Arn") == queue_arn), None
        )
        if queue is None or "QueueUrl" not in self.physical_ids[queue]:
            raise TemplateError(
                f"Function {function} event {name}: {queue_arn} is not a queue of this template."
            )
        if values.get("FilterCriteria"):
            raise TemplateError(f"Function {function} event {name}: FilterCriteria is not emulated locally.")
        redrive = self._redrive(self.physical_ids[queue]["QueueUrl"])
        maximum_concurrency = (values.get("ScalingConfig") or {}).get("MaximumConcurrency")
        self.event_sources.append(
            EventSourceSpec(
                function=function,
                name=name,
                queue=queue,
                queue_url=self.physical_ids[queue]["QueueUrl"],
                queue_arn=str(queue_arn),
                batch_size=int(values.get("BatchSize", 10)),
                maximum_batching_window_seconds=int(values.get("MaximumBatchingWindowInSeconds", 0)),
                function_response_types=tuple(values.get("FunctionResponseTypes") or ()),
                maximum_concurrency=int(maximum_concurrency) if maximum_concurrency is not None else None,
                enabled=str(values.get("Enabled", True)).lower() == "true",
                dead_letter_queue_url=redrive[0],
                max_receive_count=redrive[1],
            )
        )

    def _redrive(self, queue_url: str) -> tuple[str | None, int | None]:
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]
        )
        policy = attributes.get("Attributes", {}).get("RedrivePolicy")
        if not policy:
            return None, None
        parsed = json.loads(policy)
        dlq = next(
            (
                attributes["QueueUrl"]
                for attributes in self.physical_ids.values()
                if attributes.get("Arn") == parsed["deadLetterTargetArn"] and "QueueUrl" in attributes
            ),
            None,
        )
        return dlq, int(parsed["maxReceiveCount"])

    def _add_code_paths(self) -> None:
        # Like Lambda: the function's code dir first (LAMBDA_TASK_ROOT), then the layers (/opt/python).
        paths: list[str] = []
        for spec in self.functions.values():
            for directory in (spec.code_dir, *spec.layer_dirs):
                if str(directory) not in paths:
                    paths.append(str(directory))
        for path in reversed(paths):
            if path not in sys.path:
                sys.path.insert(0, path)
                self._added_paths.append(path)
