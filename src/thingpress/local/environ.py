"""The process state a local stack changes and restores: variables, per-function views, ``sys.path``.

A handler reads configuration from ``os.environ``. Running functions in-process, side by side as
Lambda does, means each invocation must see its own function's environment: `FunctionEnvironments`
gives every thread that runs a handler (and the threads it starts) its own view of ``os.environ``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from thingpress.local.provision import FunctionSpec

__all__ = ["CodePaths", "FunctionEnvironments", "SavedEnvironment"]

# Lambda-runtime variables are set per function; these prefixes of the caller's environment are
# dropped while a handler runs, so a developer's shell cannot leak configuration into a function.
_FUNCTION_ONLY_PREFIXES: Final = ("THINGPRESS_", "POWERTOOLS_")


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


class _ThreadEnviron(MutableMapping[str, str]):
    """Stands in for ``os.environ``: a thread with a function's view sees that, others the process's.

    A view is a plain dict (changes stay in it, as a Lambda environment's stay in its sandbox);
    without one every access goes to the real ``os.environ``.
    """

    def __init__(self, real: MutableMapping[str, str], views: threading.local) -> None:
        self.real = real
        self._views = views

    def _target(self) -> MutableMapping[str, str]:
        view: dict[str, str] | None = getattr(self._views, "view", None)
        return self.real if view is None else view

    def __getitem__(self, key: str) -> str:
        return self._target()[key]

    def __setitem__(self, key: str, value: str) -> None:
        self._target()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._target()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._target()))

    def __len__(self) -> int:
        return len(self._target())

    def copy(self) -> dict[str, str]:
        """Return a dict of the variables this thread sees."""
        return dict(self._target())


class FunctionEnvironments:
    """Gives each invocation its function's environment, whatever else runs at the same time.

    `install` replaces ``os.environ`` with a per-thread view (`_ThreadEnviron`) and makes every new
    thread inherit the view of the thread that starts it (a handler's worker threads); `applied`
    gives the calling thread a function's view for the duration of a block; `uninstall` puts
    ``os.environ`` and ``threading.Thread.start`` back. Threads without a view (the moto server's,
    the harness's) see the process's own variables.
    """

    def __init__(self) -> None:
        """Start uninstalled."""
        self._views = threading.local()
        self._lock = threading.Lock()
        self._environ: _ThreadEnviron | None = None
        self._thread_start: Callable[[threading.Thread], None] | None = None

    def install(self) -> _ThreadEnviron:
        """Replace ``os.environ`` with the per-thread view and make new threads inherit views (once).

        Returns:
            The view installed as ``os.environ``.

        """
        with self._lock:
            return self._install() if self._environ is None else self._environ

    def _install(self) -> _ThreadEnviron:
        views = self._views
        original_start = threading.Thread.start

        def start(thread: threading.Thread) -> None:
            view = getattr(views, "view", None)
            if view is not None:
                run = thread.run

                def run_in_view() -> None:
                    views.view = view
                    run()

                thread.run = run_in_view  # type: ignore[method-assign]
            original_start(thread)

        self._environ = _ThreadEnviron(os.environ, views)
        self._thread_start = original_start
        # Deliberately not the process environment: a view per thread (the real one stays in .real).
        os.environ = self._environ  # type: ignore[assignment]  # noqa: B003
        threading.Thread.start = start  # type: ignore[method-assign,assignment]
        return self._environ

    def uninstall(self) -> None:
        """Put the real ``os.environ`` and ``threading.Thread.start`` back (a no-op when not installed)."""
        with self._lock:
            if self._environ is None or self._thread_start is None:
                return
            os.environ = self._environ.real  # type: ignore[assignment]  # noqa: B003
            threading.Thread.start = self._thread_start  # type: ignore[method-assign,assignment]
            self._environ = None
            self._thread_start = None

    @contextmanager
    def applied(self, variables: Callable[[], Mapping[str, str]]) -> Iterator[None]:
        """Give the calling thread a function's environment for the duration of the block.

        The view is the process's variables without the function-only prefixes, plus the function's.
        Blocks nest (the outer view comes back) and blocks of other threads, of any function, run
        at the same time.

        Args:
            variables: Returns the function's variables; called when the block starts.

        Raises:
            RuntimeError: the views are not installed (the local stack is not running).

        Yields:
            Nothing; the environment is in place inside the block.

        """
        environ = self._environ
        if environ is None:
            raise RuntimeError("The local stack is not running: no function environment can be applied.")
        real = environ.real
        base = {k: v for k, v in real.items() if not k.startswith(_FUNCTION_ONLY_PREFIXES)}
        outer = getattr(self._views, "view", None)
        self._views.view = {**base, **variables()}
        try:
            yield
        finally:
            self._views.view = outer


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
