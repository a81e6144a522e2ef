"""The embedded local AWS stack: the template's resources on moto, and its functions run in-process.

`LocalStack` takes the process's moto server (`thingpress.local.server`), points boto3 at it through
the environment, resets moto's state and applies its fidelity patches, has
`thingpress.local.provision` create the resources of template.yaml, and runs the functions' real
handlers in this process with their code directory and layers on `sys.path` and their environment
applied (both `thingpress.local.environ`) and a `FakeLambdaContext`; `thingpress.local.esm` feeds
them from the real SQS queues.

Only one stack may be active at a time, and starting or stopping one resets all of moto's
in-process state. Schedule events are recorded (`LocalStack.schedules`) but never fire on their
own: `EventSourceMappingEmulator.invoke_scheduled` or `thingpress invoke` runs the function with the
event EventBridge would send. What is emulated and what is not: docs/ARCHITECTURE.md, "Local stack".
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import boto3
from botocore.config import Config

from thingpress.cfn import Resolver, load_template
from thingpress.local.context import FakeLambdaContext
from thingpress.local.environ import CodePaths, FunctionEnvironments, SavedEnvironment
from thingpress.local.layers import MotoLock
from thingpress.local.provision import EventSourceSpec, FunctionSpec, Provisioner, ScheduleSpec
from thingpress.local.server import MotoFidelity, claim_server, release_server, reset_server, server_url

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_REGION",
    "LocalStack",
    "LocalStackError",
]

DEFAULT_ACCOUNT: Final = "123456789012"  # moto's default account
DEFAULT_REGION: Final = "us-east-1"
LOCAL_CREDENTIAL: Final = "testing"


class LocalStackError(Exception):
    """The local stack cannot start, create a resource or load a handler; the message says why."""


class LocalStack:
    """The template's resources on an in-process moto server, and its functions runnable in-process.

    Use as a context manager; `start()` raises `LocalStackError` or `TemplateError` when a resource
    cannot be created. Invocations of any functions run side by side, each seeing its own function's
    environment (a per-thread view of ``os.environ``, inherited by the threads a handler starts).

    Args:
        template_path: The template.
        parameters: Parameter overrides.
        stack_name: The stack name.
        region: The region.
        build_dir: A ``sam build`` output directory; None for code from the source tree.
        clock: The clock of Lambda contexts.

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
        self.resolver = Resolver(
            self.template,
            self.parameters,
            region=region,
            account=self.account_id,
            stack_name=stack_name,
            stack_id=f"arn:aws:cloudformation:{region}:{DEFAULT_ACCOUNT}:stack/{stack_name}/{uuid.uuid4()}",
            physical_ids=self.physical_ids,
        )
        self._provisioner = Provisioner(
            self.template,
            self.template_path,
            self.resolver,
            self.client,
            stack_name=stack_name,
            build_dir=self.build_dir,
        )
        # What the provisioner creates, under the names the stack has always exposed.
        self.functions: dict[str, FunctionSpec] = self._provisioner.functions
        self.event_sources: list[EventSourceSpec] = self._provisioner.event_sources
        self.schedules: list[ScheduleSpec] = self._provisioner.schedules
        self.skipped_resources: dict[str, str] = self._provisioner.skipped_resources
        self._fidelity = MotoFidelity()
        self._moto_lock: MotoLock | None = None
        self._saved_env = SavedEnvironment()
        self._code_paths = CodePaths()
        self._function_envs = FunctionEnvironments()
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

        A template the local stack cannot evaluate or create raises `TemplateError`.

        Raises:
            LocalStackError: Another stack is active.

        """
        if not claim_server(self):
            raise LocalStackError("Another LocalStack is already running in this process; stop it first.")
        try:
            self.endpoint_url = server_url()
            reset_server(self.endpoint_url)
            self._fidelity.apply()
            self._saved_env.point_boto3_at(self.aws_environment())
            self._function_envs.install()
            self._started = True
            self._install_moto_lock()
            self._provisioner.create_all()
            self._code_paths.add(self.functions.values())
            self._clear_layer_client_cache()
        except BaseException:
            self.stop()
            raise

    def _install_moto_lock(self) -> None:
        """Serialise moto's backends that are not thread-safe (IoT, DynamoDB) for every local run.

        Handlers run concurrently (MaximumConcurrency, worker threads); AWS serves that safely, moto's
        IoT and DynamoDB TransactWriteItems do not (see `thingpress.local.layers.MotoLock`).
        """
        self._moto_lock = MotoLock()
        self._moto_lock.install()

    def stop(self) -> None:
        """Reset moto's state and undo everything `start()` changed in this process."""
        lock = self._moto_lock
        self._moto_lock = None
        if lock is not None and lock.installed:
            # A layer entered later and never left (an exception path) keeps the chain; the lock
            # stays in it, harmlessly, rather than masking the original error.
            with contextlib.suppress(RuntimeError):
                lock.uninstall()
        if self._started:
            reset_server(self.endpoint_url)
        self._started = False
        self._code_paths.remove()
        self._function_envs.uninstall()
        self._fidelity.restore()
        self._saved_env.restore()
        self._clear_layer_client_cache()
        release_server(self)

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

        Args:
            logical_id: The resource.

        Returns:
            Its physical id.

        Raises:
            LocalStackError: The resource was not created locally.

        """
        attributes = self.physical_ids.get(logical_id)
        if attributes is None:
            raise LocalStackError(f"Resource {logical_id} was not created by the local stack.")
        return str(attributes["Ref"])

    def attribute(self, logical_id: str, name: str) -> Any:
        """Return a ``Fn::GetAtt`` attribute (Arn, QueueName...) of a created resource.

        Args:
            logical_id: The resource.
            name: The attribute.

        Returns:
            Its value.

        Raises:
            LocalStackError: The resource or attribute is unknown.

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
        """The name of the template's only S3 bucket; `LocalStackError` when it has several or none."""
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

        As on Lambda, where a configuration update gets new execution environments, the function's next
        invocation is a cold start (its handler modules are imported again). An unknown function raises
        `LocalStackError`.

        Args:
            logical_id: The function.
            timeout: The new timeout (seconds), or None to keep it.
            memory_size: The new memory size (MB), or None to keep it.
            environment: Variables to add or override.

        Returns:
            The new spec.

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
        """Apply a function's environment to the calling thread for the duration of the block.

        The environment is the calling thread's (and its new threads') alone: invocations of any
        functions run side by side, as on Lambda. Raises `LocalStackError` for an unknown function.
        """
        spec = self._function(logical_id)
        with self._function_envs.applied(lambda: self.function_env(spec.logical_id)):
            yield

    def handler(self, logical_id: str) -> Callable[[Any, Any], Any]:
        """Import a function's handler (under its environment, as Lambda's init does) and return it.

        Args:
            logical_id: The function.

        Returns:
            The handler.

        Raises:
            LocalStackError: The module cannot be imported, lacks the handler, or was already imported
                from another directory than the function's code.

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
        """Invoke a function's handler in-process with its environment.

        Exceptions raised by the handler propagate; a handler that cannot be loaded raises
        `LocalStackError`.

        Args:
            logical_id: The function.
            event: The event.
            context: The Lambda context (default: a fresh one).

        Returns:
            The handler's response.

        """
        function = self.handler(logical_id)
        context = context or self.make_context(logical_id)
        with self.function_environment(logical_id):
            return function(event, context)
