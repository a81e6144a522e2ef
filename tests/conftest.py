"""Shared pytest fixtures: the real vendor manifests, a safe AWS environment, logs and the template.

Plain helper functions shared by several test modules live in the ``testing`` package.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from layer_utils import telemetry
from testing.helpers import REPO_ROOT, TEMPLATE_PATH
from thingpress.cfn import load_template

SHARED_MANIFESTS = REPO_ROOT.parent / "shared" / "manifests"


@pytest.fixture(scope="session")
def shared_manifests() -> Path:
    """Return ../shared/manifests, skipping the test when the folder is absent."""
    if not (SHARED_MANIFESTS / "README.md").is_file():
        pytest.skip(f"real vendor manifests not found at {SHARED_MANIFESTS}")
    return SHARED_MANIFESTS


@pytest.fixture(autouse=True)
def _aws_test_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Give every test fake credentials and a region so nothing can reach a real AWS account."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "thingpress")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Thingpress")
    monkeypatch.delenv("COLUMNS", raising=False)  # pytest-xdist workers set 80; output goes to a pipe here
    yield


@pytest.fixture
def read_logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Capture the Powertools logger's JSON lines; the fixture returns a reader."""
    handler = telemetry.logger.registered_handler
    buffer = io.StringIO()
    previous = handler.setStream(buffer)  # type: ignore[attr-defined]
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    finally:
        handler.setStream(previous)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """Return the repository's template.yaml with short-form tags in their long forms."""
    return load_template(TEMPLATE_PATH)
