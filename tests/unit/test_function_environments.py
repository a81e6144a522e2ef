"""Each local invocation sees its own function's environment, whatever runs beside it."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from thingpress.local.environ import FunctionEnvironments


@pytest.fixture
def envs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FunctionEnvironments]:
    monkeypatch.setenv("THINGPRESS_FROM_SHELL", "leaks?")
    monkeypatch.setenv("SHARED", "process")
    real_environ, real_start = os.environ, threading.Thread.start
    environments = FunctionEnvironments()
    environments.install()
    try:
        yield environments
    finally:
        environments.uninstall()
    assert os.environ is real_environ
    assert threading.Thread.start is real_start


def test_two_functions_run_side_by_side_each_in_its_own_environment(envs: FunctionEnvironments) -> None:
    inside = threading.Barrier(2)
    seen: dict[str, dict[str, str | None]] = {}

    def invoke(name: str) -> None:
        with envs.applied(lambda: {"THINGPRESS_FUNCTION": name}):
            inside.wait(timeout=5)  # both blocks are open at once
            worker_saw: list[str | None] = []
            worker = threading.Thread(target=lambda: worker_saw.append(os.getenv("THINGPRESS_FUNCTION")))
            worker.start()
            worker.join()
            seen[name] = {
                "own": os.environ.get("THINGPRESS_FUNCTION"),
                "worker": worker_saw[0],
                "shell": os.environ.get("THINGPRESS_FROM_SHELL"),
                "shared": os.environ.get("SHARED"),
            }
            inside.wait(timeout=5)

    threads = [threading.Thread(target=invoke, args=(name,)) for name in ("provider", "importer")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in ("provider", "importer"):
        assert seen[name] == {"own": name, "worker": name, "shell": None, "shared": "process"}
    # Outside every block: the process's own variables, untouched.
    assert "THINGPRESS_FUNCTION" not in os.environ
    assert os.environ["THINGPRESS_FROM_SHELL"] == "leaks?"


def test_blocks_nest_and_a_function_s_changes_stay_in_its_view(envs: FunctionEnvironments) -> None:
    with envs.applied(lambda: {"THINGPRESS_FUNCTION": "outer"}):
        os.environ["SET_BY_HANDLER"] = "1"
        with envs.applied(lambda: {"THINGPRESS_FUNCTION": "inner"}):
            assert os.environ["THINGPRESS_FUNCTION"] == "inner"
            assert "SET_BY_HANDLER" not in os.environ
        assert os.environ["THINGPRESS_FUNCTION"] == "outer"
        assert os.environ.copy()["SET_BY_HANDLER"] == "1"
    assert "SET_BY_HANDLER" not in os.environ
    assert "THINGPRESS_FUNCTION" not in os.environ


def test_no_view_is_given_while_the_views_are_not_installed() -> None:
    environments = FunctionEnvironments()
    with pytest.raises(RuntimeError, match="not running"), environments.applied(dict):
        pass
    environments.install()
    environments.install()  # once: a second install changes nothing
    environments.uninstall()
    assert not isinstance(os.environ, type(environments.install()))  # the real one was put back
    environments.uninstall()
    with pytest.raises(RuntimeError, match="not running"), environments.applied(dict):
        pass
