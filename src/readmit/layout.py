"""The artifact store layout: every path below `READMIT_ARTIFACTS_URI`, in one place.

The store is a local folder or any fsspec URL (`s3://bucket/prefix`); every URL here is built by
joining parts with "/", which both understand. `README.md` ("Artifact store layout") shows the
same table, and a test keeps the two equal (`LAYOUT`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

LAYOUT: tuple[tuple[str, str], ...] = (
    ("validation/<utc time>-<batch>/report.json|report.html", "every validated batch"),
    (
        "quarantine/<utc time>-<batch>/<original file>, report.json, report.html",
        "rejected batches, with their reports",
    ),
    ("inbox/<batch>.csv", "feed batches waiting for the monitoring flow (no outcome column)"),
    ("batches/<batch>.csv", "batches the monitoring flow has processed"),
    ("labels/<batch>.csv", "outcomes of a batch, once they arrive (internal, never published)"),
    ("models/<version>/evaluation.json", "served-path holdout metrics of the model and baseline"),
    ("models/<version>/calibration.svg", "reliability diagram"),
    ("models/<version>/reference_profile.bin", "whylogs profile of the training patients' feed"),
    ("models/<version>/drift_thresholds.json", "per-feature thresholds from no-drift batches"),
    ("models/<version>/prediction_profile.bin", "served-path probabilities of the holdout feed"),
    ("models/<version>/prediction_thresholds.json", "thresholds of prediction drift"),
    ("models/<version>/performance_baseline.json", "holdout ROC AUC and calibration"),
    ("registry/<model name>-registry.json", "production pointer and stages (mirror)"),
    ("registry/<model name>/<version>.bentomodel", "every registered model, exported"),
    ("monitoring/reports/<batch>/drift.json|drift.html", "drift report of each monitored batch"),
    ("monitoring/state.json", "monitoring state: last event, labelled batches assessed"),
    (
        "monitoring/bad_chunks/<utc date>/<chunk>, <chunk>.reason.json",
        "prediction-log chunks that could not be read, set aside with the reason",
    ),
    (
        "monitoring/windows/<window>/<chunk>.profile.bin|<chunk>.served.csv.gz",
        "served traffic per time window and log chunk: whylogs profile of the features; "
        "pseudonyms, probability, model, time, cohort, the skew re-score of sampled rows and "
        "the experiment columns (id, variant, shadow probability)",
    ),
    (
        "monitoring/windows/<window>/assessment.json|assessment.html",
        "a window's drift, estimated and realised performance, label coverage and skew",
    ),
    ("outcomes/inbox/<file>.csv", "drop folder of the outcomes feed: encounter_id, readmitted"),
    (
        "outcomes/received/<utc time>-<source>.csv.gz",
        "accepted outcomes, pseudonymised on arrival (encounter_key, readmitted, received_at)",
    ),
    (
        "outcomes/reports/<utc time>-<source>.json",
        "what each outcomes file brought: accepted, duplicates, conflicts, unknown encounters",
    ),
    (
        "outcomes/conflicts/<utc time>-<source>.csv.gz",
        "outcomes that contradict a stored one, set aside (pseudonymised)",
    ),
    (
        "history/served.sqlite",
        "served encounters per patient pseudonym (the embedded patient-history store; "
        "local stores only, else READMIT_HISTORY_STORE)",
    ),
    ("audit/audit.jsonl", "every lifecycle decision, appended"),
    ("experiments/current.json", "the running live experiment (absent: the champion alone)"),
    (
        "experiments/<id>/experiment.json|decision.json|looks.csv|report.html",
        "each live experiment: its spec, its decision (when it decided), the daily confidence "
        "sequence and the self-contained report",
    ),
    (
        "backups/<utc time>/manifest.json, bentoml/, artifacts/, history/, prefect/",
        "snapshots of the whole state, manifest (digests) last; READMIT_BACKUP_URI puts them "
        "elsewhere (recommended), `readmit restore` rebuilds from one",
    ),
    (
        "prediction_logs/<utc date>/<utc time>-<pod>-w<worker>-p<pid>-<seq>.jsonl.gz",
        "the service's prediction log: append-only chunks, one per flush per worker and pod",
    ),
)
"""(path, what it holds): the README's table, kept equal to it by a test."""


@dataclass(frozen=True)
class StoreLayout:
    """URLs of everything readmit keeps in one artifact store."""

    root: str

    def path(self, *parts: str) -> str:
        """URL of `parts` below the root (works for paths and fsspec URLs)."""
        return "/".join([self.root.rstrip("/"), *[p.strip("/") for p in parts]])

    def validation_dir(self, stamp: str, batch: str) -> str:
        """Reports of one validated batch."""
        return self.path("validation", f"{stamp}-{batch}")

    def quarantine_dir(self, stamp: str, batch: str) -> str:
        """A rejected batch with its reports (a suffix keeps two rejections apart)."""
        return self.path("quarantine", f"{stamp}-{batch}")

    def inbox_dir(self) -> str:
        """Feed batches waiting for the monitoring flow."""
        return self.path("inbox")

    def processed_dir(self) -> str:
        """Batches the monitoring flow has processed."""
        return self.path("batches")

    def batch_file(self, folder: str, batch: str) -> str:
        """One batch file in `inbox`, `batches` or `labels`."""
        return self.path(folder, f"{batch}.csv")

    def model_dir(self, version: str) -> str:
        """A model version's reports and monitoring reference."""
        return self.path("models", version)

    def registry_file(self, model_name: str) -> str:
        """The registry's mirror: production pointer and stages."""
        return self.path("registry", f"{model_name}-registry.json")

    def exported_model(self, model_name: str, version: str) -> str:
        """A registered model's archive (`bentoml models export`)."""
        return self.path("registry", model_name, f"{version}.bentomodel")

    def drift_report_dir(self, batch: str) -> str:
        """Drift report of one monitored batch."""
        return self.path("monitoring", "reports", batch)

    def monitoring_state(self) -> str:
        """The monitoring flow's state between runs."""
        return self.path("monitoring", "state.json")

    def bad_chunks_dir(self) -> str:
        """Prediction-log chunks set aside by monitoring (unreadable), with their reasons."""
        return self.path("monitoring", "bad_chunks")

    def windows_dir(self) -> str:
        """Served traffic by time window (one folder per window)."""
        return self.path("monitoring", "windows")

    def window_dir(self, window: str) -> str:
        """One time window of served traffic: per-chunk pieces and the window's assessment."""
        return self.path("monitoring", "windows", window)

    def outcomes_inbox(self) -> str:
        """Drop folder of the outcomes feed."""
        return self.path("outcomes", "inbox")

    def outcomes_received(self) -> str:
        """Accepted, pseudonymised outcomes (append-only files)."""
        return self.path("outcomes", "received")

    def outcomes_file(self, folder: str, stamp: str, source: str, suffix: str) -> str:
        """One file of the outcomes store: `received`, `reports` or `conflicts`."""
        return self.path("outcomes", folder, f"{stamp}-{source}{suffix}")

    def served_history_file(self) -> str:
        """The embedded served-history store (an absolute local path: local stores only)."""
        from pathlib import Path

        return str(Path(self.root.removeprefix("file://")).resolve() / "history" / "served.sqlite")

    def audit_log(self) -> str:
        """The append-only audit log of lifecycle decisions."""
        return self.path("audit", "audit.jsonl")

    def current_experiment(self) -> str:
        """The running experiment's spec (absent when the champion serves alone)."""
        return self.path("experiments", "current.json")

    def experiment_dir(self, experiment_id: str) -> str:
        """One experiment's spec, decision, daily looks and report."""
        return self.path("experiments", experiment_id)

    def prediction_logs(self) -> str:
        """The service's prediction log chunks (one folder per UTC day)."""
        return self.path("prediction_logs")

    def prediction_log_chunk(self, first_row: datetime, writer: str, seq: int) -> str:
        """One shipped prediction-log chunk (`chunk_relpath`)."""
        return self.path("prediction_logs", chunk_relpath(first_row, writer, seq))


CHUNK_SUFFIX = ".jsonl.gz"


def chunk_relpath(first_row: datetime, writer: str, seq: int) -> str:
    """A prediction-log chunk below the log folder: named by its first row's UTC time, so names
    sort by time, then by writer and sequence, so no two writers (pods, workers, restarts)
    collide."""
    stamp = first_row.astimezone(UTC)
    name = f"{stamp.strftime('%Y%m%dT%H%M%S.%fZ')}-{writer}-{seq:06d}{CHUNK_SUFFIX}"
    return f"{stamp.strftime('%Y-%m-%d')}/{name}"
