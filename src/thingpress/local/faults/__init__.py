"""Seeded fault injection for the local stack: what AWS and Lambda do to a pipeline on a bad day.

Server side (`FaultInjector`, a `ServerLayer` in front of moto, so every function client meets it):

* 5xx answers at rate `FaultPlan.error_rate`, in each protocol's shape (IoT ``InternalFailureException``
  500 / ``ServiceUnavailableException`` 503 in REST-JSON, SQS ``InternalError``/``ServiceUnavailable``
  in JSON with the query-compatible header, DynamoDB ``InternalServerError``/``ServiceUnavailable``,
  S3 ``InternalError``/``ServiceUnavailable`` in XML), before the request is served;
* dropped connections: the socket is shut down without an answer, either before the request is
  served (`drop_rate`) or after it was (`drop_after_rate`: the change happened, the client never
  hears of it and retries), which botocore reports as a connection error;
* `Outage` windows: every call of one API answers 503 for `duration` seconds.

Invocation side (`FaultyEmulator`, an `EventSourceMappingEmulator`):

* duplicate SQS deliveries of a batch, and duplicate S3 notifications sent to the intake queue;
* a visibility timeout expiring mid-batch: one record of a running invocation becomes visible
  again, is received for real and delivered to a concurrent invocation of the same function;
* a crash (`CrashAfter`): after the k-th successful call of an API (CreateThing by default) the
  invocation dies with `SimulatedCrash`, raised inside the handler by a botocore hook on the
  function's own client, so work already done stays done and the batch is delivered again.

Every random choice comes from ``random.Random(seed)``.
"""

from thingpress.local.faults.injector import (
    DEFAULT_FAULT_SERVICES,
    FaultInjector,
    FaultPlan,
    Outage,
    OutageReport,
    error_response,
)
from thingpress.local.faults.invocations import (
    CrashAfter,
    EmulatorFaults,
    FaultyEmulator,
    SimulatedCrash,
    function_client,
)

__all__ = [
    "DEFAULT_FAULT_SERVICES",
    "CrashAfter",
    "EmulatorFaults",
    "FaultInjector",
    "FaultPlan",
    "FaultyEmulator",
    "Outage",
    "OutageReport",
    "SimulatedCrash",
    "error_response",
    "function_client",
]
