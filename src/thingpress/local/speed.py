"""Speed patches of the local stack's moto server: the same answers as moto, without its linear scans.

Without them a local run mostly measures moto: it re-lists its package folder on every request, and
its IoT lookups scan every thing, certificate and attachment, so the cost per certificate grows with
the registry. Each `SpeedPatch` names what moto does, what the patch does and why the answers stay
moto's (with the fidelity patches of `thingpress.local.server` on top). `MotoFidelity` installs them
with the fidelity patches and removes them on stop.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import moto.core.responses
import moto.dynamodb.models
import moto.iot.models
import moto.moto_server.werkzeug_app
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table
from moto.iot.exceptions import ResourceNotFoundException
from moto.utilities.utils import get_partition

__all__ = ["SPEED_PATCHES", "PairIndex", "SpeedPatch", "pair_index"]

_MISSING: Final = object()


class PairIndex(dict[tuple[str, str], Any]):
    """A dict keyed by ``(first, second)`` pairs that also indexes its keys by either half.

    moto keeps IoT attachments in such dicts (``principal_things``: (principal, thing name),
    ``principal_policies``: (target, policy name)) and scans them for one half. Every way of changing
    the dict keeps `firsts` and `seconds` in step; within one half the order is the dict's own
    insertion order, so a lookup lists what moto's scan lists, in the same order.
    """

    def __init__(self, items: Iterable[tuple[tuple[str, str], Any]] = ()) -> None:
        """Create the index holding ``items``."""
        super().__init__()
        self._by_first: dict[str, dict[str, None]] = {}
        self._by_second: dict[str, dict[str, None]] = {}
        for key, value in items:
            self[key] = value

    def firsts(self, second: str) -> list[str]:
        """Return the first halves of the keys whose second half is ``second``, in insertion order."""
        return list(self._by_second.get(second, ()))

    def seconds(self, first: str) -> list[str]:
        """Return the second halves of the keys whose first half is ``first``, in insertion order."""
        return list(self._by_first.get(first, ()))

    def __setitem__(self, key: tuple[str, str], value: Any) -> None:
        """Store ``value`` and index a new key by both halves."""
        if key not in self:
            first, second = key
            self._by_first.setdefault(first, {})[second] = None
            self._by_second.setdefault(second, {})[first] = None
        super().__setitem__(key, value)

    def __delitem__(self, key: tuple[str, str]) -> None:
        """Remove ``key`` and its index entries."""
        super().__delitem__(key)
        self._unindex(key)

    def _unindex(self, key: tuple[str, str]) -> None:
        first, second = key
        for index, outer, inner in ((self._by_first, first, second), (self._by_second, second, first)):
            bucket = index[outer]
            del bucket[inner]
            if not bucket:
                del index[outer]

    def pop(self, key: tuple[str, str], default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (``default`` when absent; without one, KeyError)."""
        if key in self:
            value = self[key]
            del self[key]
            return value
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[tuple[str, str], Any]:
        """Remove and return the last item."""
        key, value = super().popitem()
        self._unindex(key)
        return key, value

    def clear(self) -> None:
        """Remove every item."""
        super().clear()
        self._by_first.clear()
        self._by_second.clear()

    def setdefault(self, key: tuple[str, str], default: Any = None) -> Any:
        """Return the value of ``key``, storing ``default`` first when absent."""
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Store every item of ``dict(*args, **kwargs)``."""
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> PairIndex:  # type: ignore[override,misc]
        """Store every item of ``other`` (``|=``)."""
        self.update(other)
        return self


def pair_index(backend: Any, attribute: str) -> PairIndex:
    """Return the backend's pair dict ``attribute`` as a `PairIndex`, converting it in place once."""
    pairs = getattr(backend, attribute)
    if not isinstance(pairs, PairIndex):
        pairs = PairIndex(pairs.items())
        setattr(backend, attribute, pairs)
    return pairs


def _thing_arn(backend: Any, thing_name: str) -> str:
    # moto's FakeThing builds its ARN (the key of IoTBackend.things) exactly so.
    region = backend.region_name
    return f"arn:{get_partition(region)}:iot:{region}:{backend.account_id}:thing/{thing_name}"


# --- the patches ------------------------------------------------------------------------------------


def _cached_backend_for_host(original: Callable[..., Any]) -> Callable[..., Any]:
    def get_backend_for_host(self: Any, host: str | None) -> Any:
        cache: dict[str | None, Any] = self.__dict__.setdefault("thingpress_backend_for_host", {})
        backend = cache.get(host, _MISSING)
        if backend is _MISSING:
            backend = cache[host] = original(self, host)
        return backend

    return get_backend_for_host


def _cached_method_names(original: Callable[..., Any]) -> Callable[..., Any]:
    cache: dict[object, list[str]] = {}

    def method_names_from_class(clazz: object) -> list[str]:
        names = cache.get(clazz)
        if names is None:
            names = cache[clazz] = original(clazz)
        return names

    return method_names_from_class


def _indexed_describe_thing(_original: Callable[..., Any]) -> Callable[..., Any]:
    def describe_thing(self: Any, thing_name: str) -> Any:
        thing = self.things.get(_thing_arn(self, thing_name))
        if thing is None:
            raise ResourceNotFoundException
        return thing

    return describe_thing


def _indexed_describe_certificate(_original: Callable[..., Any]) -> Callable[..., Any]:
    def describe_certificate(self: Any, certificate_id: str) -> Any:
        certificate = self.certificates.get(certificate_id)
        if certificate is None:
            raise ResourceNotFoundException
        return certificate

    return describe_certificate


def _indexed_get_principal(original: Callable[..., Any]) -> Callable[..., Any]:
    def get_principal(self: Any, principal_arn: str) -> Any:
        if ":cert/" not in principal_arn:
            return original(self, principal_arn)
        certificate = self.certificates.get(principal_arn.rsplit(":cert/", 1)[1])
        if certificate is None or certificate.arn != principal_arn:
            raise ResourceNotFoundException
        return certificate

    return get_principal


def _indexed_thing_principals(original: Callable[..., Any]) -> Callable[..., Any]:
    def list_thing_principals(self: Any, thing_name: str) -> list[str]:
        if _thing_arn(self, thing_name) not in self.things:
            return list(original(self, thing_name))  # moto's own not-found error
        return pair_index(self, "principal_things").firsts(thing_name)

    return list_thing_principals


def _indexed_principal_things(_original: Callable[..., Any]) -> Callable[..., Any]:
    def list_principal_things(self: Any, principal_arn: str) -> list[str]:
        return pair_index(self, "principal_things").seconds(principal_arn)

    return list_principal_things


def _indexed_policies(_original: Callable[..., Any]) -> Callable[..., Any]:
    def list_policies_of(self: Any, target: str) -> list[Any]:
        pairs = pair_index(self, "principal_policies")
        return [pairs[(target, name)][1] for name in pairs.seconds(target)]

    return list_policies_of


# --- DynamoDB transactions: snapshot the items a transaction names, not its whole tables -------------

_sparing = threading.local()  # set while a patched transaction runs in this (request) thread


class _TableSparingCopy:
    """Stands in for the ``copy`` module inside moto.dynamodb.models.

    While a patched transaction runs in the calling thread, ``deepcopy`` of a `Table` returns the
    table itself; everything else is copied by the real module.
    """

    def __init__(self, real: Any) -> None:
        self._real = real

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        """Return ``value`` itself for a Table inside a patched transaction; otherwise a deep copy."""
        if isinstance(value, Table) and getattr(_sparing, "active", False):
            return value
        return self._real.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _table_sparing_copy(original: Any) -> Any:
    return _TableSparingCopy(original)


_Place = tuple[str, DynamoType, DynamoType | None]


def _touched_items(backend: Any, transact_items: list[dict[str, Any]]) -> dict[_Place, Item | None] | None:
    """Return a copy of each item the transaction names, keyed by (table, hash, range), None if absent.

    Returns None when the items cannot be named exactly (a malformed operation, a table with a
    stream), so that moto's own whole-table copy handles the transaction.
    """
    saved: dict[_Place, Item | None] = {}
    try:
        for entry in transact_items:
            _, op = next(iter(entry.items()))
            table = backend.tables.get(op.get("TableName"))
            if table is None:
                continue
            if table.stream_shard is not None:
                return None
            source = op["Item"] if "Item" in op else op["Key"]
            hash_value = DynamoType(source[table.hash_key_attr])
            range_value = DynamoType(source[table.range_key_attr]) if table.range_key_attr else None
            place = (table.name, hash_value, range_value)
            if place not in saved:
                saved[place] = copy.deepcopy(table.get_item(hash_value, range_value))
    except Exception:  # any unreadable operation (bad key values too): moto's own path answers it
        return None
    return saved


def _restore_items(backend: Any, saved: dict[_Place, Item | None]) -> None:
    for (table_name, hash_value, range_value), item in saved.items():
        table = backend.tables.get(table_name)
        if table is None:  # deleted meanwhile: nothing to put back, and moto's own error stands
            continue
        if item is None:
            table.delete_item(hash_value, range_value)
        elif range_value is None:
            table.items[hash_value] = item
        else:
            table.items[hash_value][range_value] = item


def _item_sparing_transactions(original: Callable[..., Any]) -> Callable[..., Any]:
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        saved = _touched_items(self, transact_items) if len(transact_items) <= 100 else None
        if saved is None:
            return original(self, transact_items)
        _sparing.active = True
        try:
            return original(self, transact_items)
        except Exception:
            _restore_items(self, saved)
            raise
        finally:
            _sparing.active = False

    return transact_write_items


@dataclass(frozen=True)
class SpeedPatch:
    """One speed patch: where it goes, how it wraps moto's function, and why moto's answers stay."""

    owner: Any
    attribute: str
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
    moto_does: str
    patch_does: str
    safe_because: str


_IOT: Final = moto.iot.models.IoTBackend
_DYNAMODB: Final = moto.dynamodb.models.DynamoDBBackend

SPEED_PATCHES: Final = (
    SpeedPatch(
        moto.moto_server.werkzeug_app.DomainDispatcherApplication,
        "get_backend_for_host",
        _cached_backend_for_host,
        "lists and stats its package folder on every request, under the dispatcher's global lock",
        "remembers the backend found for each host",
        "the answer depends only on the host, moto's installed folders and its URL patterns, none of"
        " which change while the process runs",
    ),
    SpeedPatch(
        moto.core.responses,
        "method_names_from_class",
        _cached_method_names,
        "runs inspect.getmembers over the response class on every request to find the action's method",
        "remembers the method names of each class (one cache per application of the patches)",
        "patches replace methods, they add none, so the names of a class do not change while it is patched",
    ),
    SpeedPatch(
        _IOT,
        "describe_thing",
        _indexed_describe_thing,
        "scans every thing for the name",
        "looks the thing up by its ARN, the key of IoTBackend.things",
        "moto keys each thing by an ARN built from the backend's partition, region, account and the name",
    ),
    SpeedPatch(
        _IOT,
        "describe_certificate",
        _indexed_describe_certificate,
        "scans every certificate for the id",
        "looks the certificate up by id, the key of IoTBackend.certificates",
        "moto stores every certificate under its own certificate_id",
    ),
    SpeedPatch(
        _IOT,
        "_get_principal",
        _indexed_get_principal,
        "scans every certificate for a certificate ARN",
        "looks the certificate up by the id the ARN ends with and checks its ARN",
        "a certificate's ARN ends with its id, its key; other principals go to moto unchanged",
    ),
    SpeedPatch(
        _IOT,
        "list_thing_principals",
        _indexed_thing_principals,
        "scans every thing, then every thing-principal attachment",
        "checks the thing by ARN and reads the attachments indexed by thing name (PairIndex)",
        "the index changes with the attachment dict itself, in its order; a missing thing goes to moto",
    ),
    SpeedPatch(
        _IOT,
        "list_principal_things",
        _indexed_principal_things,
        "scans every thing-principal attachment (AttachThingPrincipal's EXCLUSIVE_THING check uses it)",
        "reads the attachments indexed by principal (PairIndex)",
        "the index changes with the attachment dict itself, in its order",
    ),
    SpeedPatch(
        _IOT,
        "list_attached_policies",
        _indexed_policies,
        "scans every policy attachment of every principal",
        "reads the policy attachments indexed by target (PairIndex)",
        "the index changes with the attachment dict itself, in its order",
    ),
    SpeedPatch(
        _IOT,
        "list_principal_policies",
        _indexed_policies,
        "scans every policy attachment of every principal",
        "reads the policy attachments indexed by principal (PairIndex)",
        "the index changes with the attachment dict itself, in its order",
    ),
    SpeedPatch(
        moto.dynamodb.models,
        "copy",
        _table_sparing_copy,
        "deep-copies every table a transaction names, whole, before it runs (the rollback copy)",
        "returns the table itself instead, only inside a transaction the next patch spares",
        "that patch saves and restores, on rollback, every item the transaction can change",
    ),
    SpeedPatch(
        _DYNAMODB,
        "transact_write_items",
        _item_sparing_transactions,
        "costs a deep copy of each named table per transaction, so writes slow down as tables grow",
        "copies only the items the operations name and puts exactly those back when moto rolls back",
        "a transaction changes only the items its operations name; a table with a stream, or an"
        " operation whose key cannot be read, goes to moto unchanged",
    ),
)
