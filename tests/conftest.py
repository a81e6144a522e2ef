"""Shared pytest fixtures: the real vendor manifests and a safe AWS environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
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
    yield
