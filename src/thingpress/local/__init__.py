"""The embedded local AWS stack (moto, in-process) and the SQS event-source-mapping emulator.

`LocalStack` creates the resources of template.yaml on an in-process moto server and runs the
functions' real handlers; `EventSourceMappingEmulator` feeds them from their SQS queues and runs the
scheduled ones on request.
"""

from thingpress.local.context import FakeLambdaContext
from thingpress.local.esm import EventSourceMappingEmulator, Invocation, RunStats
from thingpress.local.provision import EventSourceSpec, FunctionSpec, ScheduleSpec
from thingpress.local.stack import LocalStack, LocalStackError

__all__ = [
    "EventSourceMappingEmulator",
    "EventSourceSpec",
    "FakeLambdaContext",
    "FunctionSpec",
    "Invocation",
    "LocalStack",
    "LocalStackError",
    "RunStats",
    "ScheduleSpec",
]
