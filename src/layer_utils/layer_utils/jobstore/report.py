"""The report of a job: its counters and every outcome recorded for it, in a deterministic order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from layer_utils.jobstore.lifecycle import JobStatus
from layer_utils.jobstore.model import Job, natural_key


def build_report(
    job: Job, items: Iterable[Mapping[str, Any]], status: JobStatus | None = None
) -> dict[str, Any]:
    """Return the report document of a job.

    Args:
        job: the job snapshot (its counters and settings).
        items: every chunk and parse outcome item of the job.
        status: overrides the job's stored status (the final status while REPORTING).

    Returns:
        The report; lists are sorted by the natural order of locators, then certificate id and reason.

    """
    imported: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    duplicates: list[dict[str, Any]] = []
    for item in items:
        imported.extend(item.get("imported", []))
        failures.extend(_report_failure(record) for record in item.get("failures", []))
        duplicates.extend(_report_failure(record) for record in item.get("duplicates", []))
    imported.sort(key=lambda r: (natural_key(r["locator"]), r["certificate_id"]))
    failures.sort(key=_failure_sort_key)
    duplicates.sort(key=_failure_sort_key)
    return {
        **job.summary(status),
        "imported": imported,
        "failures": failures,
        "duplicate_entries": duplicates,
    }


def _report_failure(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "locator": record["locator"],
        "certificate_id": record.get("certificate_id"),
        "reason": record["reason"],
    }


def _failure_sort_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    return (natural_key(record["locator"]), record.get("certificate_id") or "", record["reason"])
