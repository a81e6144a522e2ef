"""The ManifestProvider's peak RSS stays under half its configured memory on every hostile manifest.

Every case of the hostile corpus (tests/testing/hostile_corpus.py) goes through the provider's real
handler, fed by the event-source-mapping emulator from a local stack with the template's defaults,
in one child process (tests/testing/provider_peak.py) that resets its peak RSS before each case.
VmHWM, not ``ru_maxrss``: a child's ``ru_maxrss`` starts at its parent's peak (pytest's). The bound
follows the template: half of ProviderMemorySize's default.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testing.hostile_corpus import Material, build_corpus
from testing.provider_peak import MARK
from thingpress.cfn.template import load_template

ROOT = Path(__file__).resolve().parents[2]
PYTHONPATH = [
    "src/layer_utils",
    "src/manifest_provider",
    "src/bulk_importer",
    "src/job_sweeper",
    "src",
    "tests",
]


def provider_memory_mb() -> int:
    return int(load_template(ROOT / "template.yaml")["Parameters"]["ProviderMemorySize"]["Default"])


@pytest.mark.slow
def test_every_hostile_manifest_keeps_the_provider_under_half_its_memory(tmp_path: Path) -> None:
    bound_kb = provider_memory_mb() * 1024 // 2
    material = Material()
    cases = build_corpus(material)
    (tmp_path / "ca.pem").write_text(material.ca.pem())
    (tmp_path / "signer.pem").write_text(material.signer.pem())
    listed = []
    for number, case in enumerate(cases):
        (tmp_path / f"{number}.bin").write_bytes(case.body)
        listed.append(
            {"name": case.name, "key": case.key, "file": f"{number}.bin", "metadata": case.metadata}
        )
    (tmp_path / "cases.json").write_text(json.dumps(listed))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / path) for path in PYTHONPATH)}
    done = subprocess.run(
        [sys.executable, "-m", "testing.provider_peak", str(tmp_path)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [
        json.loads(line.removeprefix(MARK)) for line in done.stdout.splitlines() if line.startswith(MARK)
    ]
    baseline_kb = lines[0]["baseline_kb"]
    measured = {line["name"]: line for line in lines[1:]}
    assert list(measured) == [case.name for case in cases]
    table = "\n".join(
        f"  {name:42} {line['peak_kb'] / 1024:7.1f} MB (+{(line['peak_kb'] - line['start_kb']) / 1024:5.1f})"
        f"  {line['status']}"
        for name, line in measured.items()
    )
    summary = (
        f"baseline {baseline_kb / 1024:.1f} MB, bound {bound_kb / 1024:.0f} MB;"
        f" peak per case (+ over the RSS it started from):\n{table}"
    )
    print(summary)
    for case in cases:
        line = measured[case.name]
        assert line["errors"] == [], (case.name, line["errors"])
        # The provider really ran: it failed the job of each manifest with nothing to import, and
        # queued the good entries of every other one (their job fails or completes after the import).
        assert (line["status"] == "FAILED") == (not case.good), (case.name, line["status"])
    over = [name for name, line in measured.items() if line["peak_kb"] >= bound_kb]
    assert over == [], f"over half of ProviderMemorySize: {over}; {summary}"
