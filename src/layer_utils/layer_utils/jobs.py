"""The JobsTable: one job per manifest version, its counters, lifecycle, completion and report.

The public module of the job store; the contract (item layout, lease, completion) is
docs/ARCHITECTURE.md, "Jobs". It re-exports the job model (``jobstore.model``), the lifecycle table
(``jobstore.lifecycle``) and the store (``jobstore.store``), and builds the functions' store.
"""

from __future__ import annotations

from layer_utils.clients import get_client
from layer_utils.jobstore.lifecycle import (
    FINAL_STATUSES,
    IMPORT_STATUSES,
    INITIAL_STATUS,
    LIFECYCLE,
    IllegalTransitionError,
    JobStatus,
    Step,
    Transition,
)
from layer_utils.jobstore.lifecycle import check as check_transition
from layer_utils.jobstore.lifecycle import next_statuses as lifecycle_next
from layer_utils.jobstore.model import (
    CHUNK_PREFIX,
    DEFAULT_TTL,
    DUPLICATE_ERROR_CLASS,
    JOB_SK,
    MAX_LOCATOR_BYTES,
    MAX_REASON_BYTES,
    MAX_RECORDS_PER_ITEM,
    MAX_WARNINGS,
    PARSE_PREFIX,
    REPORT_PREFIX,
    FailureRecord,
    ImportedRecord,
    Job,
    JobNotFoundError,
    isoformat,
    job_id_for,
    job_report_key,
    latest_report_key,
    natural_key,
    shorten,
)
from layer_utils.jobstore.store import JobStore
from layer_utils.telemetry import count_in_invocation

__all__ = [
    "CHUNK_PREFIX",
    "DEFAULT_TTL",
    "DUPLICATE_ERROR_CLASS",
    "FINAL_STATUSES",
    "IMPORT_STATUSES",
    "INITIAL_STATUS",
    "JOB_SK",
    "LIFECYCLE",
    "MAX_LOCATOR_BYTES",
    "MAX_REASON_BYTES",
    "MAX_RECORDS_PER_ITEM",
    "MAX_WARNINGS",
    "PARSE_PREFIX",
    "REPORT_PREFIX",
    "FailureRecord",
    "IllegalTransitionError",
    "ImportedRecord",
    "Job",
    "JobNotFoundError",
    "JobStatus",
    "JobStore",
    "Step",
    "Transition",
    "check_transition",
    "isoformat",
    "job_id_for",
    "job_report_key",
    "latest_report_key",
    "lifecycle_next",
    "natural_key",
    "shorten",
    "store_for_function",
]


def store_for_function(table_name: str) -> JobStore:
    """Return the job store of a Lambda function: default clients, metrics counted per invocation."""
    return JobStore(
        table_name,
        dynamodb=get_client("dynamodb"),
        s3=get_client("s3"),
        emit=count_in_invocation,
    )
