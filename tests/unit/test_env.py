"""Tests for layer_utils.env: required and positive-integer environment variables."""

from __future__ import annotations

import pytest

from layer_utils.env import env_positive_int, env_required


def test_required_variable_is_stripped() -> None:
    assert env_required({"THINGPRESS_JOBS_TABLE": " jobs \n"}, "THINGPRESS_JOBS_TABLE") == "jobs"


@pytest.mark.parametrize("environ", [{}, {"THINGPRESS_JOBS_TABLE": ""}, {"THINGPRESS_JOBS_TABLE": "  "}])
def test_missing_required_variable_is_named(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"^THINGPRESS_JOBS_TABLE is not set\.$"):
        env_required(environ, "THINGPRESS_JOBS_TABLE")


@pytest.mark.parametrize(("raw", "expected"), [(None, 8), ("", 8), (" ", 8), (" 3 ", 3), ("1_000", 1000)])
def test_positive_int_or_default(raw: str | None, expected: int) -> None:
    environ = {} if raw is None else {"THINGPRESS_IMPORT_THREADS": raw}
    assert env_positive_int(environ, "THINGPRESS_IMPORT_THREADS", 8) == expected


@pytest.mark.parametrize("raw", ["0", "-2", "1.5", "many"])
def test_bad_positive_int_is_named_with_its_value(raw: str) -> None:
    with pytest.raises(
        ValueError, match=rf"^THINGPRESS_IMPORT_THREADS must be a positive integer, got '{raw}'\.$"
    ):
        env_positive_int({"THINGPRESS_IMPORT_THREADS": raw}, "THINGPRESS_IMPORT_THREADS", 8)
