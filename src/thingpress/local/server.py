"""The process's moto server and the fidelity patches that make it behave as AWS where it matters.

One `ThreadedMotoServer` on 127.0.0.1 and a free port serves every local stack of a process, so
module-level state of handler code (cached clients, endpoints) stays valid from one stack to the
next. Only one owner (a `LocalStack`) may use it at a time; `claim_server` and `release_server` track it, and
`wsgi_server` hands the running WSGI server to the layers of `thingpress.local.layers`. See
docs/ARCHITECTURE.md, "Local stack", for what the patches change.
"""

from __future__ import annotations

import itertools
import logging
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import moto.core.config
import moto.iot.models
import moto.iot.responses
import moto.s3.models
import moto.s3.notifications
import moto.sqs.models
from moto.iot.exceptions import InvalidRequestException, ResourceAlreadyExistsException
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.s3.exceptions import S3ClientError
from moto.sqs.exceptions import InvalidParameterValue

from layer_utils.cert_utils import load_certificate
from thingpress.local.speed import SPEED_PATCHES

__all__ = [
    "FIDELITY_PATCHES",
    "MotoFidelity",
    "claim_server",
    "release_server",
    "reset_server",
    "server_url",
    "wsgi_server",
]


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


def _exclusive_attach(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap moto's AttachThingPrincipal response with AWS's ``thingPrincipalType`` rules."""

    def attach_thing_principal(self: Any) -> Any:
        thing_name = self._get_param("thingName")
        principal = self.headers.get("x-amzn-principal")
        exclusive = self._get_param("thingPrincipalType") == "EXCLUSIVE_THING"
        backend = self.iot_backend
        others = sorted(name for name in backend.list_principal_things(principal) if name != thing_name)
        if exclusive and others:
            raise InvalidRequestException(
                f"Principal {principal} is attached to thing {others[0]}; it cannot be attached exclusively"
                f" to thing {thing_name}."
            )
        holders: dict[str, str] = backend.__dict__.setdefault("thingpress_exclusive_things", {})
        holder = holders.get(principal)
        if holder not in (None, thing_name) and (principal, holder) in backend.principal_things:
            raise InvalidRequestException(f"Principal {principal} is attached exclusively to thing {holder}.")
        result = original(self)
        if exclusive:
            holders[principal] = thing_name
        return result

    return attach_thing_principal


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


_S3_MAX_KEY_BYTES: Final = 1024
_event_sequence = itertools.count(1)


def _aws_event_sequencer(original: Callable[..., Any]) -> Callable[..., Any]:
    """Add a sequencer to moto's S3 event records: hexadecimal, greater for a later event."""

    def get_s3_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> Any:
        event = original(event_name, bucket, key, notification_id)
        for record in event["Records"]:
            record["s3"]["object"]["sequencer"] = f"{next(_event_sequence):018X}"
        return event

    return get_s3_event


class _KeyTooLongError(S3ClientError):
    code = "KeyTooLongError"
    message = "Your key is too long"


def _s3_key_length_limit(original: Callable[..., Any]) -> Callable[..., Any]:
    """Make moto's S3 refuse object keys over 1024 UTF-8 bytes (PutObject, copies, multipart uploads)."""

    def put_object(self: Any, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
        if len(key_name.encode("utf-8", errors="surrogatepass")) > _S3_MAX_KEY_BYTES:
            raise _KeyTooLongError
        return original(self, bucket_name, key_name, *args, **kwargs)

    return put_object


def _sqs_size_in_bytes(original: Callable[..., Any]) -> Callable[..., Any]:
    """Make moto's SQS measure a message body in UTF-8 bytes, as AWS does, not in characters."""

    def validate_message(self: Any, queue: Any, message_body: str, *args: Any, **kwargs: Any) -> Any:
        limit = int(queue.maximum_message_size)
        if len(message_body.encode("utf-8", errors="surrogatepass")) > limit:
            raise InvalidParameterValue(
                f"One or more parameters are invalid. Reason: Message must be shorter than {limit} bytes."
            )
        return original(self, queue, message_body, *args, **kwargs)

    return validate_message


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
        moto.iot.responses.IoTResponse,
        "attach_thing_principal",
        _exclusive_attach,
        "AttachThingPrincipal with thingPrincipalType EXCLUSIVE_THING: AWS refuses (InvalidRequestException)"
        " a principal attached to another thing, and any other thing for a principal attached exclusively;"
        " moto ignores the type and attaches a certificate to as many things as asked.",
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
    _FidelityPatch(
        moto.s3.notifications,
        "_get_s3_event",
        _aws_event_sequencer,
        "S3 event records carry a sequencer that orders the events of one key (a later upload has a"
        " greater one); moto leaves it out, and the job of each manifest version stores it to decide"
        " which version's report is the key's latest.",
    ),
    _FidelityPatch(
        moto.s3.models.S3Backend,
        "put_object",
        _s3_key_length_limit,
        "S3 object keys: AWS refuses a key over 1024 UTF-8 bytes with KeyTooLongError; moto stores it.",
    ),
    _FidelityPatch(
        moto.sqs.models.SQSBackend,
        "_validate_message",
        _sqs_size_in_bytes,
        "SQS message size: AWS counts a body's UTF-8 bytes against the queue's MaximumMessageSize; moto"
        " counts characters, so a body of multi-byte characters over the limit is accepted.",
    ),
)


class MotoFidelity:
    """moto's in-process configuration for a local stack: valid IoT certificates and every patch.

    The patches are `FIDELITY_PATCHES` and the speed patches (`thingpress.local.speed.SPEED_PATCHES`).

    `apply` saves what it changes; `restore` puts it back (a no-op when nothing is applied).
    """

    def __init__(self) -> None:
        """Create an unapplied configuration."""
        self._saved_iot_config: dict[str, Any] | None = None
        self._saved_patches: list[tuple[Any, str, Any]] = []

    def apply(self) -> None:
        """Require valid IoT certificates and install every fidelity and speed patch."""
        # moto's /moto-api/config endpoint ignores "iot", so the in-process configuration is set directly.
        self._saved_iot_config = dict(moto.core.config.default_user_config.get("iot", {}))
        moto.core.config.default_user_config["iot"] = {"use_valid_cert": True}
        for patch in (*FIDELITY_PATCHES, *SPEED_PATCHES):
            original = getattr(patch.owner, patch.attribute)
            self._saved_patches.append((patch.owner, patch.attribute, original))
            setattr(patch.owner, patch.attribute, patch.wrap(original))

    def restore(self) -> None:
        """Undo `apply`: the original moto functions and IoT configuration."""
        for owner, attribute, original in reversed(self._saved_patches):
            setattr(owner, attribute, original)
        self._saved_patches.clear()
        if self._saved_iot_config is not None:
            moto.core.config.default_user_config["iot"] = self._saved_iot_config  # type: ignore[typeddict-item]
            self._saved_iot_config = None


# --- the shared moto server ---------------------------------------------------------------------------

_server_lock = threading.Lock()
_server: ThreadedMotoServer | None = None
_server_url: str | None = None
_owner: object | None = None


def claim_server(owner: object) -> bool:
    """Make `owner` the server's only user.

    Args:
        owner: The object (a local stack) that resets and configures moto while it is active.

    Returns:
        False when another owner is active, True otherwise.

    """
    global _owner  # noqa: PLW0603 - moto's state is process-wide, so is its owner
    with _server_lock:
        if _owner is not None:
            return False
        _owner = owner
        return True


def release_server(owner: object) -> None:
    """Give up the server if `owner` holds it."""
    global _owner  # noqa: PLW0603 - see claim_server()
    with _server_lock:
        if _owner is owner:
            _owner = None


def server_url() -> str:
    """Return the URL of the process's moto server, starting it on first use."""
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


def reset_server(url: str) -> None:
    """Drop all of moto's in-process state through the server at `url`."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")  # noqa: S310 - local
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local moto server  # nosec B310
        response.read()


def wsgi_server() -> Any:
    """Return the running werkzeug server, whose ``app`` attribute serves every request.

    Raises:
        RuntimeError: No local stack holds the server, or it is not running.

    """
    server = getattr(_server, "_server", None)
    if _owner is None or server is None or not hasattr(server, "app"):
        raise RuntimeError("The local stack's moto server is not running; start a LocalStack first.")
    return server
