"""The process state a local stack changes and restores: variables, per-function swaps, ``sys.path``.

A handler reads configuration from ``os.environ``, so running a function in-process means giving the
whole process that function's environment for the duration of the call (`FunctionEnvironments`).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from thingpress.local.provision import FunctionSpec

__all__ = ["CodePaths", "FunctionEnvironments", "SavedEnvironment"]

# Lambda-runtime variables are set per function; these prefixes of the caller's environment are
# dropped while a handler runs, so a developer's shell cannot leak configuration into a function.
_FUNCTION_ONLY_PREFIXES: Final = ("THINGPRESS_", "POWERTOOLS_")


def _replace_environ(target: Mapping[str, str]) -> None:
    for key in [key for key in os.environ if key not in target]:
        del os.environ[key]
    for key, value in target.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


class SavedEnvironment:
    """Variables set or removed in ``os.environ`` that `restore` puts back as they were first found."""

    def __init__(self) -> None:
        """Start with nothing changed."""
        self._saved: dict[str, str | None] = {}

    def set(self, key: str, value: str | None) -> None:
        """Set `key` to `value`, or remove it when `value` is None, remembering its first value."""
        if key not in self._saved:
            self._saved[key] = os.environ.get(key)
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

    def point_boto3_at(self, aws_environment: Mapping[str, str]) -> None:
        """Make boto3 in this process use only `aws_environment` (endpoint, credentials, region).

        Service-specific endpoints and profiles are removed, and the local server is kept off proxies.
        """
        for key in list(os.environ):
            if key.startswith("AWS_ENDPOINT_URL_") or key in {"AWS_PROFILE", "AWS_DEFAULT_PROFILE"}:
                self.set(key, None)
        for key, value in aws_environment.items():
            self.set(key, value)
        for key in ("NO_PROXY", "no_proxy"):
            current = os.environ.get(key)
            self.set(key, f"{current},127.0.0.1" if current else "127.0.0.1,localhost")

    def restore(self) -> None:
        """Put every changed variable back and forget the changes."""
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()


class FunctionEnvironments:
    """Gives the process one function's environment at a time.

    Blocks of different functions are serialised; blocks of the same function may overlap, and the
    environment from before the first of them comes back when the last one ends.
    """

    def __init__(self) -> None:
        """Start with no function's environment applied."""
        self._condition = threading.Condition()
        self._owner: str | None = None
        self._users = 0
        self._before: dict[str, str] = {}

    @contextmanager
    def applied(self, owner: str, variables: Callable[[], Mapping[str, str]]) -> Iterator[None]:
        """Apply `owner`'s variables to the process for the duration of the block.

        Args:
            owner: The function the environment belongs to.
            variables: Returns the function's variables; called when its environment is applied.

        Yields:
            Nothing; the environment is in place inside the block.

        """
        with self._condition:
            while self._owner not in (None, owner):
                self._condition.wait()
            if self._owner is None:
                self._before = dict(os.environ)
                base = {k: v for k, v in os.environ.items() if not k.startswith(_FUNCTION_ONLY_PREFIXES)}
                _replace_environ({**base, **variables()})
                self._owner = owner
            self._users += 1
        try:
            yield
        finally:
            with self._condition:
                self._users -= 1
                if self._users == 0:
                    _replace_environ(self._before)
                    self._owner = None
                    self._condition.notify_all()


class CodePaths:
    """The functions' code and layer directories that `add` put on ``sys.path`` and `remove` takes off."""

    def __init__(self) -> None:
        """Start with nothing added."""
        self._added: list[str] = []

    def add(self, functions: Iterable[FunctionSpec]) -> None:
        """Put each function's code directory, then its layers, at the front of ``sys.path``, as Lambda does.

        Args:
            functions: The functions; a directory shared by several is added once.

        """
        # Like Lambda: the function's code dir first (LAMBDA_TASK_ROOT), then the layers (/opt/python).
        paths: list[str] = []
        for spec in functions:
            for directory in (spec.code_dir, *spec.layer_dirs):
                if str(directory) not in paths:
                    paths.append(str(directory))
        for path in reversed(paths):
            if path not in sys.path:
                sys.path.insert(0, path)
                self._added.append(path)

    def remove(self) -> None:
        """Take every added directory off ``sys.path`` again."""
        for path in self._added:
            if path in sys.path:
                sys.path.remove(path)
        self._added.clear()
