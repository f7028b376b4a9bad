"""Everything through s3fs on a real SeaweedFS: input, reports, profiles, quarantine, models."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from prefect.testing.utilities import prefect_test_harness

from readmit import data, storage
from readmit.data import validation
from readmit.model import registry
from readmit.settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_settings(s3_prefix, monkeypatch):
    monkeypatch.setenv("READMIT_ARTIFACTS_URI", f"{s3_prefix}/artifacts")
    monkeypatch.setenv("READMIT_MODEL_NAME", f"readmission-s3-{uuid.uuid4().hex[:6]}")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_training_flow_on_s3_and_import_into_an_empty_store(
    s3_settings, s3_prefix, full_frame, tmp_path, monkeypatch
):
    from flows.training import training_flow

    rows = data.in_time_order(full_frame).iloc[:4000]
    source = f"{s3_prefix}/input/encounters.csv"
    storage.write_bytes(source, data.to_csv_bytes(rows))
    bad = f"{s3_prefix}/input/bad.csv"
    storage.write_bytes(bad, data.to_csv_bytes(rows.head(300).drop(columns=["race"])))
    with prefect_test_harness(server_startup_timeout=60):
        out = training_flow(data_uri=source, search_budget_s=5)
        with pytest.raises(validation.ValidationFailed, match="race"):
            training_flow(data_uri=bad, search_budget_s=5)
    assert out["report_dir"].startswith("s3://")
    for uri in (
        out["profile_uri"],
        f"{out['report_dir']}/evaluation.json",
        f"{out['report_dir']}/calibration.svg",
        out["validation_report"],
        registry.exported_uri(out["tag"], s3_settings),
    ):
        assert uri.startswith("s3://") and storage.exists(uri), uri
    quarantined = storage.list_files(s3_settings.layout.path("quarantine"))
    assert len(quarantined) == 1 and storage.exists(f"{quarantined[0]}/report.html")

    registry.promote(out["tag"], reason="s3 test")
    registry.publish_to_store(out["tag"])
    # Another machine: same S3 artifact store, an empty BENTOML_HOME, a fresh process.
    home = tmp_path / "empty-home"
    env = {**os.environ, "READMIT_BENTOML_HOME": str(home), "BENTOML_HOME": str(home)}
    script = (
        "from readmit import data; from readmit.model import registry; import sys; "
        "m = registry.load_model(); "
        "f = data.read_encounters(sys.argv[1]).frame.head(5); "
        "print(m.tag, m.stage, m.model.predict_proba(f).shape)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, source], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [out["tag"], "production", "(5,", "2)"]
    version = out["tag"].split(":")[1]
    assert (home / "models" / s3_settings.model_name / version / "model.joblib").exists()
