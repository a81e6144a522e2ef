"""The scheduled reconcile over recent jobs: no drift after a clean import, drift after a thing is
deleted by hand (metric and log line), and a job finished before the lookback is not checked."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from job_sweeper.recent_drift import RecentDriftConfig, reconcile_recent_jobs
from testing.pipeline import pipeline
from thingpress.generate import generate

KEY = "espressif/scheduled-reconcile.csv"


class Metrics:
    """Collects what the run emits."""

    def __init__(self) -> None:
        self.values: list[tuple[str, float, Mapping[str, str] | None]] = []

    def __call__(self, name: str, value: float, dimensions: Mapping[str, str] | None) -> None:
        self.values.append((name, value, dimensions))

    def of(self, name: str) -> list[float]:
        return [value for metric, value, _ in self.values if metric == name]


def drift_log_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    lines = [
        vars(record) for record in caplog.records if record.getMessage() == "Job drifted from its ledger"
    ]
    caplog.clear()
    return lines


def test_scheduled_reconcile_finds_drift_of_recent_jobs_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pipeline() as p:
        manifest = tmp_path / "devices.csv"
        generate("espressif", 3, manifest, seed=53)
        result = p.run(KEY, manifest.read_bytes())
        assert result.report["imported"] == 3
        job_id = result.job.job_id
        config = RecentDriftConfig(jobs_table="unused", lookback=timedelta(hours=24))
        now = datetime.now(UTC)

        clean = Metrics()
        first = reconcile_recent_jobs(p.iot, p.jobs, config, clock=lambda: now, emit=clean)
        assert first.checked == [job_id]
        assert first.entries == 3
        assert clean.of("ReconcileDrift") == [0]
        assert clean.of("ReconcileJobsChecked") == [1]
        caplog.clear()

        # someone deletes a thing by hand (AWS needs its principal detached first)
        entry = result.report["imported_entries"][0]
        thing = entry["thing_name"]
        arn = p.iot.describe_certificate(certificateId=entry["certificate_id"])["certificateDescription"][
            "certificateArn"
        ]
        p.iot.detach_thing_principal(thingName=thing, principal=arn)
        p.iot.delete_thing(thingName=thing)

        drifted = Metrics()
        second = reconcile_recent_jobs(p.iot, p.jobs, config, clock=lambda: now, emit=drifted)
        assert second.checked == [job_id]
        (reconcile_drift,) = drifted.of("ReconcileDrift")
        assert reconcile_drift >= 1
        assert drifted.of("ReconcileJobsChecked") == [1]
        (line,) = drift_log_lines(caplog)
        assert (line["job_id"], line["key"]) == (job_id, KEY)
        assert line["missing"] == 1

        later = Metrics()
        outside = reconcile_recent_jobs(
            p.iot, p.jobs, config, clock=lambda: now + timedelta(hours=25), emit=later
        )
        assert outside.checked == []
        assert later.of("ReconcileDrift") == [0]
        assert later.of("ReconcileJobsChecked") == [0]
        assert drift_log_lines(caplog) == []


def test_a_job_larger_than_the_entry_budget_is_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pipeline() as p:
        manifest = tmp_path / "devices.csv"
        generate("espressif", 3, manifest, seed=59)
        result = p.run(KEY, manifest.read_bytes())
        config = RecentDriftConfig(jobs_table="unused", max_entries=2)
        metrics = Metrics()
        run = reconcile_recent_jobs(p.iot, p.jobs, config, emit=metrics)
        assert (run.checked, run.skipped) == ([], [result.job.job_id])
        assert metrics.of("ReconcileJobsChecked") == [0]
        (skipped,) = [r for r in caplog.records if "exceed its entry budget" in r.getMessage()]
        assert vars(skipped)["skipped"] == [result.job.job_id]
