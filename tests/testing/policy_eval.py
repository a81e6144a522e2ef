"""A small IAM policy evaluator for the template's bucket, queue and role policies.

Hand-written because no maintained library simulates IAM policies offline (moto does not enforce
bucket or queue policies). It covers exactly what template.yaml uses, within one account: Principal
``"*"`` or ``{"Service": ...}``, Action/NotAction and Resource/NotResource with ``*`` and ``?``
wildcards, and the condition operators in `OPERATORS`; any other operator raises, so a new one in
the template fails the tests until it is implemented here. An explicit Deny wins; otherwise an Allow
in the caller's identity policies or in the resource policy allows (same-account rules).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Decision = Literal["allowed", "denied", "implicitly denied"]


@dataclass(frozen=True)
class Request:
    """One request: who calls, what on which resource, and its other context keys."""

    principal: str  # a role ARN (aws:PrincipalArn) or a service principal such as s3.amazonaws.com
    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_service(self) -> bool:
        """Whether the caller is an AWS service principal."""
        return not self.principal.startswith("arn:")

    def value(self, key: str) -> str | None:
        """Return the request's value for a condition key (``aws:PrincipalArn`` from the caller)."""
        if key.lower() == "aws:principalarn":
            return None if self.is_service else self.principal
        if key.lower() == "aws:securetransport":
            return self.context.get(key, "true")
        return self.context.get(key)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """Match IAM's ``*`` (any run of characters) and ``?`` (one character)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.IGNORECASE if ignore_case else 0) is not None


def arn_like(pattern: str, value: str) -> bool:
    """ArnLike: each of the six colon-separated ARN fields matches on its own."""
    pattern_parts, value_parts = pattern.split(":", 5), value.split(":", 5)
    if len(pattern_parts) != 6 or len(value_parts) != 6:
        return False
    return all(wildcard_match(p, v) for p, v in zip(pattern_parts, value_parts, strict=True))


def _string_equals(pattern: str, value: str) -> bool:
    return pattern == value


def _bool(pattern: str, value: str) -> bool:
    return pattern.lower() == value.lower()


# operator -> (value test, negated). ArnEquals and ArnLike behave the same in IAM.
OPERATORS: dict[str, tuple[Callable[[str, str], bool], bool]] = {
    "StringEquals": (_string_equals, False),
    "Bool": (_bool, False),
    "ArnEquals": (arn_like, False),
    "ArnLike": (arn_like, False),
    "ArnNotEquals": (arn_like, True),
    "ArnNotLike": (arn_like, True),
}


def conditions_hold(condition: Mapping[str, Mapping[str, Any]], request: Request) -> bool:
    """Every operator and key must hold; a key's values are ORed, then negated for *Not* operators.

    A key missing from the request fails a positive operator and satisfies a negated one.
    """
    for operator, keys in condition.items():
        if operator not in OPERATORS:
            raise NotImplementedError(f"condition operator {operator} is not implemented in policy_eval")
        test, negated = OPERATORS[operator]
        for key, patterns in keys.items():
            value = request.value(key)
            matched = value is not None and any(test(str(p), value) for p in _as_list(patterns))
            if matched == negated:
                return False
    return True


def _principal_matches(principal: Any, request: Request) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, Mapping) and set(principal) == {"Service"}:
        return request.is_service and request.principal in _as_list(principal["Service"])
    raise NotImplementedError(f"principal {principal!r} is not implemented in policy_eval")


def statement_applies(statement: Mapping[str, Any], request: Request, *, resource_policy: bool) -> bool:
    """Return whether the statement covers the request (principal, action, resource, conditions)."""
    if resource_policy and not _principal_matches(statement["Principal"], request):
        return False
    if "Action" in statement:
        action_ok = any(
            wildcard_match(a, request.action, ignore_case=True) for a in _as_list(statement["Action"])
        )
    else:
        action_ok = not any(
            wildcard_match(a, request.action, ignore_case=True) for a in _as_list(statement["NotAction"])
        )
    if not action_ok:
        return False
    if "Resource" in statement:
        resource_ok = any(wildcard_match(r, request.resource) for r in _as_list(statement["Resource"]))
    else:
        resource_ok = not any(wildcard_match(r, request.resource) for r in _as_list(statement["NotResource"]))
    return resource_ok and conditions_hold(statement.get("Condition", {}), request)


def decide(
    request: Request,
    *,
    identity: Iterable[Mapping[str, Any]] = (),
    resource: Iterable[Mapping[str, Any]] = (),
) -> Decision:
    """Evaluate a same-account request against the caller's identity statements and the resource's."""
    applying = [s for s in identity if statement_applies(s, request, resource_policy=False)]
    applying += [s for s in resource if statement_applies(s, request, resource_policy=True)]
    if any(s["Effect"] == "Deny" for s in applying):
        return "denied"
    if any(s["Effect"] == "Allow" for s in applying):
        return "allowed"
    return "implicitly denied"
