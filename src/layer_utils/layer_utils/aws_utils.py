"""Public face of the layer's AWS helpers: the client factory, the error model and the IoT name rules.

A thin module that re-exports :mod:`layer_utils.clients`, :mod:`layer_utils.errors`,
:mod:`layer_utils.iot_names` and ``handle_aws_error`` (:mod:`layer_utils.protected`); see
docs/ARCHITECTURE.md, "Layer modules" and "Error model".
"""

from layer_utils.clients import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_POOL_CONNECTIONS,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRY_MODE,
    RETRY_MODES,
    clear_client_cache,
    client_config_from_env,
    get_client,
    resolve_endpoint_url,
    resolve_region,
)
from layer_utils.errors import (
    ERROR_TYPES,
    THROTTLING_CODES,
    AccessDeniedError,
    AlreadyExistsError,
    AwsOperationError,
    ConflictError,
    ErrorClass,
    InvalidInputError,
    NotFoundError,
    ThingpressError,
    ThrottledError,
    TransientError,
    UnknownAwsError,
    classify_error,
    error_details,
    to_operation_error,
)
from layer_utils.iot_names import (
    IOT_NAME_MAX_LENGTH,
    require_name,
    validate_policy_name,
    validate_thing_group_name,
    validate_thing_name,
    validate_thing_type_name,
)
from layer_utils.protected import handle_aws_error

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_POOL_CONNECTIONS",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_RETRY_MODE",
    "ERROR_TYPES",
    "IOT_NAME_MAX_LENGTH",
    "RETRY_MODES",
    "THROTTLING_CODES",
    "AccessDeniedError",
    "AlreadyExistsError",
    "AwsOperationError",
    "ConflictError",
    "ErrorClass",
    "InvalidInputError",
    "NotFoundError",
    "ThingpressError",
    "ThrottledError",
    "TransientError",
    "UnknownAwsError",
    "classify_error",
    "clear_client_cache",
    "client_config_from_env",
    "error_details",
    "get_client",
    "handle_aws_error",
    "require_name",
    "resolve_endpoint_url",
    "resolve_region",
    "to_operation_error",
    "validate_policy_name",
    "validate_thing_group_name",
    "validate_thing_name",
    "validate_thing_type_name",
]
