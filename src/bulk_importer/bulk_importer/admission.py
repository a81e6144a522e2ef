"""The importer's check before its first IoT call for a record: is this message one to act on?

The job is read (one GetItem per record, never per certificate). The message is acted on only when
the job exists, is PARSING or IMPORTING (``IMPORT_STATUSES``: the provider sends import messages
after ``CLAIM_PARSE``, and every entry has settled once ``CLAIM_REPORT`` leaves IMPORTING), and the
job signed it: its ``mac`` is the HMAC-SHA256 of the message keyed with the job's secret
(``layer_utils.messages``). A refused message makes no IoT call and is dropped (deleted from the
queue) with a warning and the metric ``ImportMessagesRefused`` (dimension ``Reason``). Dropping
rather than failing to the DLQ: a forged message has nothing to retry and would only loop, and a
late duplicate of a job that finished or failed has nothing left to count.
"""

from __future__ import annotations

from layer_utils.jobs import IMPORT_STATUSES, Job
from layer_utils.messages import ImportMessage, verify_import_message

UNKNOWN_JOB = "unknown_job"
NOT_IMPORTING = "not_importing"
BAD_MAC = "bad_mac"


def refusal(message: ImportMessage, job: Job | None) -> str | None:
    """Return why ``message`` must not be acted on, or None.

    Args:
        message: the decoded import message.
        job: its job as read now (None when it does not exist).

    Returns:
        ``unknown_job``, ``not_importing`` or ``bad_mac``; None when the job exists, is importing and
        signed the message.

    """
    if job is None:
        return UNKNOWN_JOB
    if job.status not in IMPORT_STATUSES:
        return NOT_IMPORTING
    if not verify_import_message(message, job.secret):
        return BAD_MAC
    return None
