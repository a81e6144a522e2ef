"""The state folder of a running ``thingpress local up`` stack, and how other commands find that stack.

``local up`` writes ``stack.json`` into its state folder (default ``.thingpress/local``, else
``--state DIR`` or ``THINGPRESS_LOCAL_STATE``) once every resource exists: its process id, endpoint,
region, the physical names of the bucket, jobs table and queues, and its operator settings. It
removes the file when it stops. ``local down`` asks it to stop by creating ``stop`` in the folder.
`find_running` reads the file back for ``--local`` (no moto is loaded: the other commands only talk
HTTP to the running stack), and treats a file whose process is gone as no stack.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import boto3
from botocore.config import Config

from thingpress.console import CliError
from thingpress.remote import Deployment

DEFAULT_STATE_DIR: Final = Path(".thingpress/local")
STATE_FILE: Final = "stack.json"
STOP_FILE: Final = "stop"
LOCAL_CREDENTIAL: Final = "testing"


def state_dir(value: str | Path | None = None) -> Path:
    """Return the state folder: ``value``, else ``THINGPRESS_LOCAL_STATE``, else ``.thingpress/local``."""
    chosen = value or os.environ.get("THINGPRESS_LOCAL_STATE", "").strip() or DEFAULT_STATE_DIR
    return Path(chosen)


@dataclass(frozen=True)
class RunningStack:
    """A ``local up`` stack as its state file describes it; `client` talks to it over HTTP.

    Attributes:
        pid: The serving process.
        endpoint: The moto server's URL (``http://127.0.0.1:PORT``).
        region: The stack's region.
        deployment: The physical names of the bucket, jobs table and queues.
        settings: The operator settings the stack's functions run with (``local up`` options).
        verifier_prefix: Where the ManifestProvider reads Microchip verifiers in the bucket.

    """

    pid: int
    endpoint: str
    region: str
    deployment: Deployment
    settings: dict[str, Any] = field(default_factory=dict)
    verifier_prefix: str = ""

    def client(self, service: str) -> Any:
        """Return a boto3 client for ``service`` bound to the running stack (fake credentials)."""
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=LOCAL_CREDENTIAL,
            aws_secret_access_key=LOCAL_CREDENTIAL,
            aws_session_token=LOCAL_CREDENTIAL,
            config=Config(retries={"mode": "standard", "total_max_attempts": 3}),
        )

    def to_json(self) -> dict[str, Any]:
        """Return the document ``stack.json`` holds."""
        return {
            "pid": self.pid,
            "endpoint": self.endpoint,
            "region": self.region,
            "deployment": {k: v for k, v in asdict(self.deployment).items() if k != "parameters"},
            "settings": self.settings,
            "verifier_prefix": self.verifier_prefix,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> RunningStack:
        """Return the stack a ``stack.json`` document describes; ``KeyError``/``TypeError`` if malformed."""
        return cls(
            pid=int(document["pid"]),
            endpoint=str(document["endpoint"]),
            region=str(document["region"]),
            deployment=Deployment(**document["deployment"]),
            settings=dict(document.get("settings") or {}),
            verifier_prefix=str(document.get("verifier_prefix") or ""),
        )


def write_state(folder: Path, running: RunningStack) -> Path:
    """Write ``stack.json`` into ``folder`` (created if needed) atomically; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STATE_FILE
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(running.to_json(), indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def read_state(folder: Path) -> RunningStack | None:
    """Return the stack ``folder``'s state file describes, or None without a (readable) file.

    Raises:
        CliError: The file exists but is not a state file.

    """
    path = folder / STATE_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return RunningStack.from_json(document)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:
        raise CliError(f"{path} is not a local stack state file ({error}); delete it.") from error


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _listening(endpoint: str) -> bool:
    """Return whether something accepts connections at ``endpoint``'s host and port."""
    parts = urllib.parse.urlsplit(endpoint)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=2):
            return True
    except OSError:
        return False


def find_running(folder: Path) -> RunningStack | None:
    """Return the stack running from ``folder``, or None when there is no state or its process is gone."""
    running = read_state(folder)
    if running is None or not _process_alive(running.pid) or not _listening(running.endpoint):
        return None
    return running


def require_running(folder: Path) -> RunningStack:
    """Return the stack running from ``folder`` (`find_running`).

    Raises:
        CliError: No stack runs from the folder (exit code 2).

    """
    running = find_running(folder)
    if running is None:
        raise CliError(f"No local stack is running from {folder}; start one with `thingpress local up`.")
    return running
