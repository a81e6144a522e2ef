"""WSGI layers in front of the local stack's moto server, and the naming of the requests they see.

The local stack serves every AWS call from one in-process moto WSGI application. A `ServerLayer`
wraps that application for the lifetime of a ``with`` block, so what it does applies to every
client of the process (handlers, their threads, the CLI). Each request is named (`identify_call`):
the service comes from the SigV4 credential scope, the operation from ``X-Amz-Target`` (JSON
protocols) or from the method and path matched against the ``requestUri`` of botocore's service
model (REST protocols: ``POST /certificate/register-no-ca`` is ``RegisterCertificateWithoutCA``).

Requests of the test harness itself (the event-source-mapping emulator's polling, assertions) are
marked with `mark_harness_client` and pass through untouched: the emulated limits and faults are the
ones the functions meet on AWS. `MotoLock` serialises the backends moto does not make thread-safe.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import parse_qs, urlsplit

import botocore.session
from botocore.exceptions import UnknownServiceError

from thingpress.local.server import wsgi_server

__all__ = [
    "HARNESS_HEADER",
    "ApiCall",
    "MotoLock",
    "ServerLayer",
    "StartResponse",
    "WsgiApp",
    "drain_body",
    "identify_call",
    "is_harness_request",
    "json_error_response",
    "mark_harness_client",
]

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

HARNESS_HEADER: Final = "x-thingpress-harness"
_HARNESS_ENVIRON_KEY: Final = "HTTP_" + HARNESS_HEADER.upper().replace("-", "_")
_HARNESS_HOOK_ID: Final = "thingpress-harness-marker"

# SigV4 signing names that differ from the botocore service name.
_SIGNING_TO_SERVICE: Final = {"execute-api": "iot"}


@dataclass(frozen=True)
class ApiCall:
    """One AWS request as the server sees it: `service` (botocore name) and `operation` (or None)."""

    service: str
    operation: str | None

    @property
    def name(self) -> str:
        """``"<service>:<Operation>"`` (the circuit-name convention), ``?`` when unknown."""
        return f"{self.service}:{self.operation or '?'}"


@dataclass(frozen=True)
class _Route:
    operation: str
    method: str
    pattern: re.Pattern[str]
    query: tuple[tuple[str, str | None], ...]
    headers: tuple[str, ...]
    literal_length: int


def _compile_route(
    operation: str,
    method: str,
    request_uri: str,
    required_query: Iterable[str],
    required_headers: Iterable[str],
) -> _Route:
    path, _, query_text = request_uri.partition("?")
    query: list[tuple[str, str | None]] = []
    for part in filter(None, query_text.split("&")):
        key, equals, value = part.partition("=")
        query.append((key, value if equals else None))
    query.extend((name, None) for name in required_query if name not in {key for key, _ in query})
    regex = ""
    literal = 0
    for piece in re.split(r"(\{[^}]+\})", path):
        if piece.startswith("{"):
            regex += ".+" if piece.endswith("+}") else "[^/]+"
        else:
            regex += re.escape(piece)
            literal += len(piece)
    headers = tuple("HTTP_" + name.upper().replace("-", "_") for name in required_headers)
    return _Route(operation, method, re.compile(regex + "/?"), tuple(query), headers, literal)


@cache
def _service_routes(service: str) -> tuple[str, tuple[_Route, ...]]:
    """Return a service's protocol and its REST routes, most specific first (empty if unknown)."""
    try:
        model = botocore.session.get_session().get_service_model(service)
    except UnknownServiceError:
        return "", ()
    routes = []
    for operation in model.operation_names:
        operation_model = model.operation_model(operation)
        http = operation_model.http
        input_shape = operation_model.input_shape
        # Operations sharing a method and path (PutObject, UploadPart, CopyObject) differ by the
        # query parameters and headers they require.
        required: dict[str, list[str]] = {"querystring": [], "header": []}
        if input_shape is not None:
            required_members = set(getattr(input_shape, "required_members", ()))
            for member, shape in input_shape.members.items():
                location = shape.serialization.get("location")
                if member in required_members and location in required:
                    required[location].append(shape.serialization.get("name", member))
        routes.append(
            _compile_route(
                operation, http["method"], http["requestUri"], required["querystring"], required["header"]
            )
        )
    routes.sort(key=lambda route: (-len(route.query) - len(route.headers), -route.literal_length))
    return model.protocol, tuple(routes)


def _signing_service(environ: Mapping[str, Any]) -> str | None:
    authorization = str(environ.get("HTTP_AUTHORIZATION", ""))
    match = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request", authorization)
    if match is None:
        return None
    return _SIGNING_TO_SERVICE.get(match.group(1), match.group(1))


def identify_call(environ: Mapping[str, Any]) -> ApiCall | None:
    """Name the AWS request in a WSGI environ.

    JSON protocols are named by ``X-Amz-Target``; REST protocols by method and path.

    Args:
        environ: The WSGI environ.

    Returns:
        The `ApiCall` (its `operation` None when the request matches no operation of the service's
        model), or None for an unsigned request (moto's own API, the console).

    """
    service = _signing_service(environ)
    if service is None:
        return None
    target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
    if target:
        return ApiCall(service, target.rpartition(".")[2] or None)
    protocol, routes = _service_routes(service)
    if not protocol.startswith("rest"):
        return ApiCall(service, None)
    method = str(environ.get("REQUEST_METHOD", "GET")).upper()
    # Routes match the path as sent: a label such as ListAttachedPolicies' {target} (a certificate
    # ARN) carries a percent-encoded '/', which PATH_INFO has already decoded.
    raw = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
    path = urlsplit(raw).path if raw else str(environ.get("PATH_INFO", "/")) or "/"
    query = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
    candidates = [route for route in routes if route.method == method and route.pattern.fullmatch(path)]
    for route in candidates:
        if all(key in query and (value is None or value in query[key]) for key, value in route.query) and all(
            key in environ for key in route.headers
        ):
            return ApiCall(service, route.operation)
    if candidates:
        # A request missing a required parameter still goes to the least demanding operation.
        return ApiCall(service, candidates[-1].operation)
    return ApiCall(service, None)


def is_harness_request(environ: Mapping[str, Any]) -> bool:
    """Return whether a request was made by a client marked with `mark_harness_client`."""
    return bool(environ.get(_HARNESS_ENVIRON_KEY))


def _add_harness_header(request: Any, **_kwargs: Any) -> None:
    request.headers[HARNESS_HEADER] = "1"


def mark_harness_client(client: Any) -> Any:
    """Mark a boto3 client as the test harness's: its requests bypass every `ServerLayer`.

    The header is added after signing (moto does not check signatures), so the request is otherwise
    the one botocore built.

    Args:
        client: The client.

    Returns:
        The same client.

    """
    client.meta.events.register("before-send", _add_harness_header, unique_id=_HARNESS_HOOK_ID)
    return client


def drain_body(environ: Mapping[str, Any]) -> None:
    """Read and discard a request's body, before answering without passing it to moto.

    werkzeug's server reads the next request from the same socket buffer; unread body bytes would
    be taken for a (malformed) request.
    """
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ.get("wsgi.input")
    if length > 0 and stream is not None:
        stream.read(length)


def json_error_response(
    start_response: StartResponse,
    status: str,
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    content_type: str = "application/json",
) -> list[bytes]:
    """Send a JSON error response (with a fresh ``x-amzn-RequestId``) and return its body chunks."""
    payload = json.dumps(body).encode()
    start_response(
        status,
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(payload))),
            ("x-amzn-RequestId", str(uuid.uuid4())),
            *headers.items(),
        ],
    )
    return [payload]


class ServerLayer:
    """A WSGI middleware in front of the local stack's moto server, active inside ``with``.

    Subclasses implement `handle(call, environ, start_response, app)`; `app` is the next layer.
    Layers nest: the last one entered sees a request first, and they must be left in reverse order
    (`uninstall` raises `RuntimeError` otherwise). Harness requests and unsigned requests go
    straight to the next layer.
    """

    def __init__(self) -> None:
        """Create an uninstalled layer."""
        self._inner: WsgiApp | None = None
        self._server: Any = None

    @property
    def installed(self) -> bool:
        """Whether the layer is currently in front of the moto server."""
        return self._inner is not None

    def install(self) -> None:
        """Put the layer in front of the running local stack's moto server.

        No running local stack raises `RuntimeError` too.

        Raises:
            RuntimeError: The layer is already installed.

        """
        if self._inner is not None:
            raise RuntimeError(f"{type(self).__name__} is already installed.")
        server = wsgi_server()
        self._server = server
        self._inner = server.app
        server.app = self

    def uninstall(self) -> None:
        """Remove the layer; raises `RuntimeError` when a layer installed later is still in front."""
        if self._inner is None:
            return
        if self._server.app is not self:
            raise RuntimeError("Server layers must be uninstalled in the reverse order of installation.")
        self._server.app = self._inner
        self._inner = None
        self._server = None

    def __enter__(self) -> Self:
        """Install the layer and return it."""
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Uninstall the layer."""
        self.uninstall()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request (WSGI): harness and unsigned requests pass, others go to `handle`."""
        inner = self._inner
        if inner is None:
            raise RuntimeError(f"{type(self).__name__} received a request while not installed.")
        call = None if is_harness_request(environ) else identify_call(environ)
        if call is None:
            return inner(environ, start_response)
        return self.handle(call, environ, start_response, inner)

    def handle(
        self, call: ApiCall, environ: dict[str, Any], start_response: StartResponse, app: WsgiApp
    ) -> Iterable[bytes]:
        """Serve a request of the functions; the base class passes it on unchanged."""
        return app(environ, start_response)


class MotoLock(ServerLayer):
    """Serialises the requests of services whose moto backend is not thread-safe.

    moto's IoT backend iterates its dictionaries while other server threads add to them
    ("OrderedDict mutated during iteration", answered as HTTP 500), and its DynamoDB
    ``TransactWriteItems`` deep-copies a table for rollback while other threads write to it (the
    copy fails, and a rollback would undo their writes). AWS has neither failure, so a test must not
    see them. Harness requests are serialised too.

    Args:
        services: The botocore names of the services to serialise (default IoT and DynamoDB).

    """

    def __init__(self, services: Iterable[str] = ("iot", "dynamodb")) -> None:
        """Create the layer with one lock per service."""
        super().__init__()
        self._locks = {service: threading.Lock() for service in services}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve the request under its service's lock (WSGI)."""
        inner = self._inner
        if inner is None:
            raise RuntimeError("MotoLock received a request while not installed.")
        service = _signing_service(environ)
        lock = self._locks.get(service) if service is not None else None
        if lock is None:
            return inner(environ, start_response)
        with lock:
            # moto builds the whole response inside the call; materialise it under the lock.
            return list(inner(environ, start_response))
