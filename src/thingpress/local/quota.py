"""An AWS IoT quota emulator in front of the local stack's moto server.

The local stack serves every AWS call from one in-process moto WSGI application. `ServerLayer` is
a WSGI middleware that wraps that application for the lifetime of a ``with`` block, so what it does
applies to every client of the process (handlers, their threads, the CLI). Each request is named
(`identify_call`): the service comes from the SigV4 credential scope, the operation from
``X-Amz-Target`` (JSON protocols) or from the method and path matched against the ``requestUri`` of
botocore's service model (REST protocols: ``POST /certificate/register-no-ca`` is
``RegisterCertificateWithoutCA``).

`QuotaEmulator` enforces a transactions-per-second quota per IoT API with a token bucket per API
and answers above it exactly as AWS IoT does: HTTP 400, ``x-amzn-ErrorType: ThrottlingException``
and ``{"message": "Rate exceeded"}``, which botocore raises as a ``ClientError`` with code
``ThrottlingException``. It counts every call it sees, and the admitted and throttled calls per API.

Requests of the test harness itself (the event-source-mapping emulator's polling, assertions) are
marked with `mark_harness_client` and pass through untouched and uncounted: the emulated limits and
faults are the ones the functions meet on AWS.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import parse_qs

import botocore.session
from botocore.exceptions import UnknownServiceError

from thingpress.local import stack as stack_module

__all__ = [
    "DEFAULT_IOT_QUOTAS",
    "HARNESS_HEADER",
    "ApiCall",
    "MotoLock",
    "QuotaCounts",
    "QuotaEmulator",
    "ServerLayer",
    "StartResponse",
    "WsgiApp",
    "drain_body",
    "identify_call",
    "json_error_response",
    "mark_harness_client",
    "scaled_quotas",
]

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

DEFAULT_IOT_QUOTAS: Final[Mapping[str, float]] = {
    "RegisterCertificateWithoutCA": 10.0,
    "AttachPolicy": 15.0,
    "DescribeCertificate": 10.0,
    "CreateThing": 100.0,
    "AttachThingPrincipal": 100.0,
    "AddThingToThingGroup": 100.0,
    "UpdateThing": 100.0,
    "DescribeThing": 350.0,
}
"""AWS IoT Core default account quotas (requests per second) of the APIs Thingpress calls.

Kept apart from the importer's own table (``bulk_importer.rate_limit``) on purpose: the emulator
plays AWS, so a wrong client-side table must show up as throttles instead of agreeing with itself.
"""

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
        """Return ``"<service>:<Operation>"`` (the circuit-name convention), ``?`` when unknown."""
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

    Takes the environ. Returns the `ApiCall` (its `operation` None when the request matches no
    operation of the service's model), or None for an unsigned request (moto's own API, the
    console). JSON protocols are named by ``X-Amz-Target``; REST protocols by method and path.
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
    path = str(environ.get("PATH_INFO", "/")) or "/"
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

    Takes the client; returns it. The header is added after signing (moto does not check
    signatures), so the request is otherwise the one botocore built.
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


def _moto_wsgi_server() -> Any:
    # The local stack runs one moto server per process; its werkzeug server calls `server.app`
    # for every request, so wrapping that attribute puts a layer in front of every client.
    threaded = getattr(stack_module, "_server", None)
    server = getattr(threaded, "_server", None)
    if getattr(stack_module, "_active_stack", None) is None or server is None or not hasattr(server, "app"):
        raise RuntimeError("The local stack's moto server is not running; start a LocalStack first.")
    return server


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
        """Return whether the layer is currently in front of the moto server."""
        return self._inner is not None

    def install(self) -> None:
        """Put the layer in front of the running local stack's moto server.

        Raises `RuntimeError` when no local stack runs or the layer is already installed.
        """
        if self._inner is not None:
            raise RuntimeError(f"{type(self).__name__} is already installed.")
        server = _moto_wsgi_server()
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


def scaled_quotas(factor: float, quotas: Mapping[str, float] = DEFAULT_IOT_QUOTAS) -> dict[str, float]:
    """Return the quota table multiplied by `factor` (an account with raised quotas)."""
    return {api: rate * factor for api, rate in quotas.items()}


@dataclass(frozen=True)
class QuotaCounts:
    """A snapshot of what a `QuotaEmulator` saw.

    `calls` counts every request of the functions by ``(service, operation)`` ("?" when the
    operation is unknown), throttled ones included; `admitted` and `throttled` count the calls of
    the quota-limited IoT APIs by API name.
    """

    calls: dict[tuple[str, str], int]
    admitted: dict[str, int]
    throttled: dict[str, int]
    admitted_window: dict[str, tuple[float, float]] = field(default_factory=dict)

    def admitted_rate(self, api: str) -> float | None:
        """Return the admitted calls per second of an API between its first and last admitted call.

        That is ``(admitted - 1) / (last - first)``: the rate the calls were spaced at. None with
        fewer than two admitted calls.
        """
        window = self.admitted_window.get(api)
        count = self.admitted.get(api, 0)
        if window is None or count < 2 or window[1] <= window[0]:
            return None
        return (count - 1) / (window[1] - window[0])

    def service_calls(self, service: str) -> int:
        """Return the number of requests made to one service."""
        return sum(count for (name, _), count in self.calls.items() if name == service)

    @property
    def total_throttled(self) -> int:
        """Return the number of throttled requests over every API."""
        return sum(self.throttled.values())


@dataclass
class _Bucket:
    rate: float
    capacity: float
    tokens: float
    updated: float


class QuotaEmulator(ServerLayer):
    """Per-API request-rate quotas of AWS IoT, enforced in front of the local stack.

    Takes `quotas` (API name → requests per second; default `DEFAULT_IOT_QUOTAS`, see
    `scaled_quotas` for raised quotas), `burst_seconds` (bucket capacity in seconds of quota; AWS
    does not publish its burst, one second's worth is assumed), `clock` (monotonic seconds) and
    `enabled` (false: count only, throttle nothing; switchable at any time). APIs without a quota
    are never throttled. Raises `ValueError` for a quota that is not a positive number.
    """

    service: Final = "iot"

    def __init__(
        self,
        quotas: Mapping[str, float] | None = None,
        *,
        burst_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool = True,
    ) -> None:
        """Create the emulator with full buckets; see the class docstring for the arguments."""
        super().__init__()
        table = dict(DEFAULT_IOT_QUOTAS if quotas is None else quotas)
        for api, rate in table.items():
            if isinstance(rate, bool) or not rate > 0:
                raise ValueError(f"The quota of {api} must be a positive number of requests per second.")
        if not burst_seconds > 0:
            raise ValueError("burst_seconds must be positive.")
        self.quotas = table
        self.enabled = enabled
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._buckets = {
            api: _Bucket(rate, max(1.0, rate * burst_seconds), max(1.0, rate * burst_seconds), now)
            for api, rate in table.items()
        }
        self._calls: Counter[tuple[str, str]] = Counter()
        self._admitted: Counter[str] = Counter()
        self._throttled: Counter[str] = Counter()
        self._windows: dict[str, tuple[float, float]] = {}

    def _admit(self, api: str, now: float) -> bool:
        self._admitted[api] += 1
        first = self._windows.get(api, (now, now))[0]
        self._windows[api] = (first, now)
        return True

    def try_acquire(self, api: str) -> bool:
        """Take one token of an API's bucket; return False when the call is above the quota.

        APIs without a quota, and every API while the emulator is disabled, are always admitted.
        """
        bucket = self._buckets.get(api)
        if bucket is None:
            return True
        with self._lock:
            now = self._clock()
            bucket.tokens = min(bucket.capacity, bucket.tokens + max(0.0, now - bucket.updated) * bucket.rate)
            bucket.updated = now
            if not self.enabled:
                return self._admit(api, now)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return self._admit(api, now)
            self._throttled[api] += 1
            return False

    def _snapshot(self) -> QuotaCounts:
        return QuotaCounts(
            dict(self._calls), dict(self._admitted), dict(self._throttled), dict(self._windows)
        )

    def counts(self) -> QuotaCounts:
        """Return a snapshot of the counters."""
        with self._lock:
            return self._snapshot()

    def reset_counts(self) -> QuotaCounts:
        """Return the counters and set them to zero."""
        with self._lock:
            snapshot = self._snapshot()
            self._calls.clear()
            self._admitted.clear()
            self._throttled.clear()
            self._windows.clear()
        return snapshot

    def handle(
        self, call: ApiCall, environ: dict[str, Any], start_response: StartResponse, app: WsgiApp
    ) -> Iterable[bytes]:
        """Count the call; answer ThrottlingException above an IoT API's quota, else pass it on."""
        with self._lock:
            self._calls[(call.service, call.operation or "?")] += 1
        if call.service != self.service or call.operation is None or self.try_acquire(call.operation):
            return app(environ, start_response)
        drain_body(environ)
        return json_error_response(
            start_response,
            "400 Bad Request",
            {"x-amzn-ErrorType": "ThrottlingException"},
            {"message": "Rate exceeded"},
        )


class MotoLock(ServerLayer):
    """Serialises the requests of services whose moto backend is not thread-safe.

    moto's IoT backend iterates its dictionaries while other server threads add to them
    ("OrderedDict mutated during iteration", answered as HTTP 500), and its DynamoDB
    ``TransactWriteItems`` deep-copies a table for rollback while other threads write to it (the
    copy fails, and a rollback would undo their writes). AWS has neither failure, so a test must not
    see them. Takes the service names (default IoT and DynamoDB); harness requests are serialised too.
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
