"""The artifact store layout: one module owns every path, and the README shows exactly it."""

from __future__ import annotations

import re
from pathlib import Path

from readmit.layout import LAYOUT, StoreLayout

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_layout() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text.split("## Artifact store layout", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \| (.+?) \|$", section, flags=re.M)


def test_readme_table_is_the_layout() -> None:
    assert readme_layout() == list(LAYOUT)


def test_every_layout_path_is_in_the_table() -> None:
    layout = StoreLayout("s3://bucket/prefix/")
    produced = [
        layout.validation_dir("T", "b"),
        layout.quarantine_dir("T", "b"),
        layout.inbox_dir(),
        layout.processed_dir(),
        layout.batch_file("labels", "b"),
        layout.model_dir("v"),
        layout.registry_file("m"),
        layout.exported_model("m", "v"),
        layout.drift_report_dir("b"),
        layout.monitoring_state(),
        layout.audit_log(),
        layout.prediction_logs(),
        layout.window_dir("w"),
        layout.outcomes_inbox(),
        layout.outcomes_received(),
        layout.outcomes_file("reports", "T", "s", ".json"),
    ]
    tops = {path.split("/", 1)[0] for path, _ in LAYOUT}
    for url in produced:
        assert url.startswith("s3://bucket/prefix/") and "//" not in url.removeprefix("s3://")
        assert url.removeprefix("s3://bucket/prefix/").split("/", 1)[0] in tops, url
