"""Audit log: every lifecycle decision, appended as one JSON line in the artifact store."""

from __future__ import annotations

import json
from typing import Any, Literal

from readmit import storage
from readmit.layout import StoreLayout
from readmit.model.lineage import utc_now

Decision = Literal[
    "drift_detected",
    "retrain_started",
    "promoted",
    "rejected",
    "rolled_back",
    "deployed",
    "batch_quarantined",
    "outcomes_received",
    "outcomes_quarantined",
    "signed",
    "approval",
    "archived",
    "experiment_started",
    "experiment_stopped",
    "experiment_decided",
]
"""A promotion, rollback or signing names the model's manifest digest (`manifest_sha256`,
`readmit.model.signing`): what was put in production is provable from this log."""


def audit_record(decision: Decision, **details: Any) -> dict[str, Any]:
    """A decision with its time and details (tags, severities, reasons; never identifiers)."""
    return {"at": utc_now(), "decision": decision, **details}


def append(artifacts_uri: str, decision: Decision, **details: Any) -> dict[str, Any]:
    """Append a decision to `<artifacts>/audit/audit.jsonl` and return the record."""
    record = audit_record(decision, **details)
    url = StoreLayout(artifacts_uri).audit_log()
    storage.append_line(url, json.dumps(record, sort_keys=True, default=str))
    return record


def read(artifacts_uri: str, last: int | None = None) -> list[dict[str, Any]]:
    """Decisions in order (the `last` N if given); empty when nothing was decided yet."""
    url = StoreLayout(artifacts_uri).audit_log()
    if not storage.exists(url):
        return []
    records = [json.loads(line) for line in storage.read_bytes(url).decode().splitlines() if line]
    return records[-last:] if last else records


def as_markdown(records: list[dict[str, Any]]) -> str:
    """Decisions as a Markdown table for a Prefect artifact (newest last)."""
    rows = [
        f"| {r['at']} | {r['decision']} | "
        + ", ".join(
            f"{k}={v}" for k, v in sorted(r.items()) if k not in ("at", "decision")
        ).replace("|", "/")
        + " |"
        for r in records
    ]
    return "## Audit log\n\n| at | decision | details |\n| --- | --- | --- |\n" + "\n".join(rows)
