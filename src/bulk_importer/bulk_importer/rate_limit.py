"""The importer's IoT quotas: the account quota of each API it calls, and each invocation's share.

The token bucket is the layer's ``layer_utils.rate_limit.RateLimiter``. The importer fleet must stay
at the account quota of each IoT control-plane API and never above it. With the fleet budget
(``bulk_importer.fleet_budget``) each invocation's buckets run at the account quota times the share
the budget grants it (``scale``); without it every invocation gets the fixed share
``THINGPRESS_IOT_TPS`` ÷ ``THINGPRESS_MAX_CONCURRENCY``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from layer_utils.env import env_positive_int
from layer_utils.rate_limit import quotas_from_json

DEFAULT_IOT_TPS: Mapping[str, float] = {
    "RegisterCertificateWithoutCA": 10.0,
    "CreateThing": 100.0,
    "AttachThingPrincipal": 100.0,
    "AttachPolicy": 15.0,
    "AddThingToThingGroup": 100.0,
    "DescribeCertificate": 10.0,
    "DescribeThing": 350.0,
    "UpdateThing": 100.0,
    # Conflict-path reads of an existing certificate.
    "ListPrincipalThings": 10.0,
    "ListAttachedPolicies": 15.0,
    # The ledger's read of an existing thing's groups (adopt path only).
    "ListThingGroupsForThing": 100.0,
}
"""AWS IoT Core default account quotas (transactions per second) of the APIs the importer calls."""

DEFAULT_MAX_CONCURRENCY = 2
"""Default of ``THINGPRESS_MAX_CONCURRENCY``: the import event source mapping's MaximumConcurrency."""

TPS_ENV = "THINGPRESS_IOT_TPS"
CONCURRENCY_ENV = "THINGPRESS_MAX_CONCURRENCY"


def account_quotas_from_env(environ: Mapping[str, str] | None = None) -> dict[str, float]:
    """Return the account quota (calls per second) of every IoT API the importer calls.

    ``THINGPRESS_IOT_TPS`` in ``environ`` (default ``os.environ``) is a JSON object of API name to
    quota that overrides or extends ``DEFAULT_IOT_TPS``.

    Raises:
        ValueError: the variable is not a JSON object of positive numbers.

    """
    env = os.environ if environ is None else environ
    return quotas_from_json(env.get(TPS_ENV, ""), DEFAULT_IOT_TPS, TPS_ENV)


def rates_from_env(environ: Mapping[str, str] | None = None) -> dict[str, float]:
    """Return this invocation's share of every IoT API quota, in calls per second.

    The account quotas from ``account_quotas_from_env`` are divided by ``THINGPRESS_MAX_CONCURRENCY``
    (default 2) so that all concurrent importer invocations together stay under the account quota;
    ``environ`` defaults to ``os.environ``.

    Raises:
        ValueError: a variable is malformed.

    """
    env = os.environ if environ is None else environ
    concurrency = env_positive_int(env, CONCURRENCY_ENV, DEFAULT_MAX_CONCURRENCY)
    return {api: quota / concurrency for api, quota in account_quotas_from_env(env).items()}
