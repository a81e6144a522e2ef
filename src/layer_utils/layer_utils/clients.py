"""The AWS client factory: one cached boto3 client per service, region, endpoint and configuration.

Configuration comes from the environment:

* ``THINGPRESS_RETRY_MODE``: botocore retry mode, ``standard`` (default) or ``adaptive``;
* ``THINGPRESS_MAX_ATTEMPTS``: botocore total attempts, default 4;
* ``THINGPRESS_CONNECT_TIMEOUT`` / ``THINGPRESS_READ_TIMEOUT``: seconds, defaults 5 and 20;
* ``THINGPRESS_MAX_POOL_CONNECTIONS``: connection pool size, default 32.

Endpoints follow boto3's own convention (``AWS_ENDPOINT_URL_<SERVICE>``, then ``AWS_ENDPOINT_URL``,
then the shared config file), resolved by botocore's own provider, so a local emulator needs no
special code path. The region comes from ``AWS_REGION``, then ``AWS_DEFAULT_REGION``, then the
config file.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
import botocore.session
from botocore.config import Config
from botocore.configprovider import ConfiguredEndpointProvider

from layer_utils.attempts import install_attempt_draws
from layer_utils.telemetry import install_call_metrics

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_iot import IoTClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

DEFAULT_RETRY_MODE = "standard"
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 20.0
DEFAULT_MAX_POOL_CONNECTIONS = 32
RETRY_MODES = ("standard", "adaptive")

_clients: dict[tuple[str, str | None, str | None, tuple[Any, ...]], Any] = {}
_clients_lock = threading.Lock()
_session_holder: list[tuple[botocore.session.Session, boto3.session.Session]] = []


def _sessions() -> tuple[botocore.session.Session, boto3.session.Session]:
    """Return the process-wide botocore session and the one boto3 session wrapping it.

    Created on first use; the caller must not hold ``_clients_lock``.
    """
    with _clients_lock:
        if not _session_holder:
            core = botocore.session.get_session()
            _session_holder.append((core, boto3.session.Session(botocore_session=core)))
        return _session_holder[0]


def _botocore_session() -> botocore.session.Session:
    """Return the process-wide botocore session."""
    return _sessions()[0]


def _env_number(name: str, default: float, *, integer: bool, minimum: float) -> float:
    """Read a positive number from the environment, or the default when unset or empty.

    Returns:
        The number.

    Raises:
        ValueError: the value is not a number, not an integer when one is required, or too small.

    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {raw!r}.") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum:g}, got {raw!r}.")
    return value


def client_config_from_env() -> Config:
    """Build the botocore client configuration from the ``THINGPRESS_*`` environment variables.

    Returns:
        A ``botocore.config.Config`` with retries, timeouts and pool size set.

    Raises:
        ValueError: a variable holds an invalid value.

    """
    return Config(**_config_kwargs())


def _config_kwargs() -> dict[str, Any]:
    """Return the keyword arguments of the client ``Config`` read from the environment."""
    mode = os.environ.get("THINGPRESS_RETRY_MODE", "").strip() or DEFAULT_RETRY_MODE
    if mode not in RETRY_MODES:
        raise ValueError(f"THINGPRESS_RETRY_MODE must be 'standard' or 'adaptive', got {mode!r}.")
    attempts = int(_env_number("THINGPRESS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, integer=True, minimum=1))
    return {
        "retries": {"mode": mode, "total_max_attempts": attempts},
        "connect_timeout": _env_number(
            "THINGPRESS_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT, integer=False, minimum=0.001
        ),
        "read_timeout": _env_number(
            "THINGPRESS_READ_TIMEOUT", DEFAULT_READ_TIMEOUT, integer=False, minimum=0.001
        ),
        "max_pool_connections": int(
            _env_number(
                "THINGPRESS_MAX_POOL_CONNECTIONS", DEFAULT_MAX_POOL_CONNECTIONS, integer=True, minimum=1
            )
        ),
    }


def resolve_region(region: str | None = None) -> str | None:
    """Return the region to use: the argument, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, the config file."""
    if region:
        return region
    env_region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if env_region:
        return env_region
    configured = _botocore_session().get_config_variable("region")
    return str(configured) if configured else None


def resolve_endpoint_url(service_name: str) -> str | None:
    """Return the endpoint boto3 would use for the service, or None for the AWS default.

    Uses botocore's own lookup (``AWS_ENDPOINT_URL_<SERVICE>``, ``AWS_ENDPOINT_URL``, then the
    config file's ``services`` section and ``endpoint_url``), honouring
    ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``.
    """
    session = _botocore_session()
    if session.get_config_variable("ignore_configured_endpoint_urls"):
        return None
    provider = ConfiguredEndpointProvider(
        full_config=session.full_config,
        scoped_config=session.get_scoped_config(),
        client_name=service_name,
    )
    endpoint = provider.provide()
    return str(endpoint) if endpoint else None


@overload
def get_client(service_name: Literal["iot"], *, region: str | None = None) -> IoTClient: ...
@overload
def get_client(service_name: Literal["s3"], *, region: str | None = None) -> S3Client: ...
@overload
def get_client(service_name: Literal["sqs"], *, region: str | None = None) -> SQSClient: ...
@overload
def get_client(service_name: Literal["dynamodb"], *, region: str | None = None) -> DynamoDBClient: ...
@overload
def get_client(service_name: str, *, region: str | None = None) -> Any: ...
def get_client(service_name: str, *, region: str | None = None) -> Any:
    """Return the process-wide boto3 client for a service, region and endpoint.

    Clients are created once under a lock and shared by all threads (boto3 clients are
    thread-safe). Every client counts its retries and throttles (see ``telemetry``), and its retries
    of a rate-limited call draw from that call's limiter (see ``attempts``).

    Args:
        service_name: the boto3 service name, e.g. ``"iot"``.
        region: the region; defaults as described in the module docstring.

    Returns:
        The boto3 client.

    Raises:
        ValueError: a ``THINGPRESS_*`` client setting in the environment is invalid.

    """
    config_kwargs = _config_kwargs()
    resolved_region = resolve_region(region)
    endpoint_url = resolve_endpoint_url(service_name)
    retries = config_kwargs["retries"]
    config_key = (
        retries["mode"],
        retries["total_max_attempts"],
        config_kwargs["connect_timeout"],
        config_kwargs["read_timeout"],
        config_kwargs["max_pool_connections"],
    )
    key = (service_name, resolved_region, endpoint_url, config_key)
    client = _clients.get(key)
    if client is not None:
        return client
    _core, session = _sessions()
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            # Client creation is serialised by the lock, so sharing one session (and its loaded
            # service models) between threads is safe.
            client = session.client(
                service_name,  # type: ignore[call-overload]
                region_name=resolved_region,
                endpoint_url=endpoint_url,
                config=Config(**config_kwargs),
            )
            install_call_metrics(client)
            install_attempt_draws(client)
            _clients[key] = client
        return client


def clear_client_cache() -> None:
    """Forget every cached client and the shared session (tests and the local stack)."""
    with _clients_lock:
        _clients.clear()
        _session_holder.clear()
