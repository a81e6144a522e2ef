"""The one vocabulary of reports and ``--json`` documents: count names, entry lists, entry shape.

The deployed job report (``reports/jobs/<job id>.json``) and every ``thingpress ... --json``
document use these words, and carry ``schema`` (``SCHEMA``), whose version changes when a word
changes meaning or goes away (adding a field keeps it). The counts are ``total`` (entries in the
manifest; null while unknown), ``imported``, ``failed`` and ``duplicates`` (an entry that repeats an
earlier certificate; counted in neither of the other two); each entry list holds entries of one
shape, ``ENTRY_FIELDS`` (a field that does not apply is null); an imported entry also says
``name_source``. The job item's ``succeeded`` counter (DynamoDB) is reported as ``imported``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SCHEMA = "thingpress/1"
"""The ``schema`` field of every report and ``--json`` document."""

COUNTS = ("total", "imported", "failed", "duplicates")
"""The count names, in display order."""

ENTRY_FIELDS = ("locator", "thing_name", "certificate_id", "reason", "error_class")
"""The fields of every entry, in every entry list."""

IMPORTED_ENTRIES = "imported_entries"
"""The list of imported entries (for ``check`` and ``generate``: the entries an import would import)."""

FAILURES = "failures"
"""The list of failed entries."""

DUPLICATE_ENTRIES = "duplicate_entries"
"""The list of duplicate entries."""

ENTRY_LISTS = (IMPORTED_ENTRIES, FAILURES, DUPLICATE_ENTRIES)
"""The entry lists a document may carry."""

_EXTRA_FIELDS = ("name_source",)


def entry(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``record`` in the entry shape: every ``ENTRY_FIELDS`` field (None when absent).

    ``name_source`` is kept when the record has one; any other field is dropped.
    """
    shaped = {name: record.get(name) for name in ENTRY_FIELDS}
    for name in _EXTRA_FIELDS:
        if record.get(name) is not None:
            shaped[name] = record[name]
    return shaped


def counts(total: int | None, imported: int, failed: int, duplicates: int) -> dict[str, int | None]:
    """Return the four counts under their names (``COUNTS``)."""
    return {"total": total, "imported": imported, "failed": failed, "duplicates": duplicates}


def sum_counts(documents: Any) -> dict[str, int | None]:
    """Return the counts of several documents (job reports or summaries) added up.

    ``total`` is None when any document's total is unknown.
    """
    items = list(documents)
    totals = [document.get("total") for document in items]
    return counts(
        None if any(value is None for value in totals) else sum(int(value) for value in totals),
        sum(int(document.get("imported") or 0) for document in items),
        sum(int(document.get("failed") or 0) for document in items),
        sum(int(document.get("duplicates") or 0) for document in items),
    )
