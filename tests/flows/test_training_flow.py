"""The training flow on the Prefect test harness, on a few thousand real rows."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from flows.training import training_flow
from readmit import data, storage
from readmit.data import validation
from readmit.model import registry
from readmit.settings import get_settings


def test_training_flow_registers_a_model_with_lineage(harness, fresh_settings, small_csv):
    out = training_flow(data_uri=small_csv, search_budget_s=8)
    loaded = registry.load_model(out["tag"])
    meta = loaded.metadata
    for key in (
        "metrics",
        "baseline_metrics",
        "subgroup_metrics",
        "params",
        "data_sha256",
        "validation",
        "profile_uri",
        "git_commit",
        "feature_names",
        "label_definition",
        "threshold",
        "timings_s",
        "trained_at",
        "calibration",
    ):
        assert key in meta, key
    assert meta["label_definition"] == "<30"
    assert meta["validation"]["success"] is True
    assert meta["data_sha256"] == data.sha256_hex(Path(small_csv).read_bytes())
    assert 0.5 < meta["metrics"]["roc_auc"] <= 1.0
    assert 0 < meta["threshold"] < 1
    assert storage.exists(meta["profile_uri"])
    evaluation = storage.read_json(f"{out['report_dir']}/evaluation.json")
    assert set(evaluation) == {"model", "baseline"}
    assert "<svg" in storage.read_bytes(f"{out['report_dir']}/calibration.svg").decode()
    # Lineage is shareable: no identifiers anywhere in the metadata.
    text = json.dumps(meta)
    frame = data.read_encounters(small_csv).frame
    assert not any(f'"{pid}"' in text or f" {pid}," in text for pid in frame["patient_nbr"][:50])
    # A model scores raw rows of the same shape it was trained on.
    probabilities = loaded.model.predict_proba(frame.head(20))[:, 1]
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert out["stage"] in ("production", "candidate")
    if out["gate"]["promote"]:
        assert registry.production_tag() == out["tag"]


def test_a_promoted_first_model_is_served_when_asked(
    harness, fresh_settings, small_csv, tmp_path, monkeypatch
):
    """The stack's `training` deployment serves the model it promoted, without a hand step."""
    from readmit.ops import deploy

    monkeypatch.setenv("READMIT_MIN_ROC_AUC", "0.5")
    monkeypatch.setenv("READMIT_SERVICE_PORT", str(deploy.free_port()))
    monkeypatch.setenv("READMIT_SERVING_RUN_DIR", str(tmp_path / "run"))
    get_settings.cache_clear()
    out = training_flow(data_uri=small_csv, search_budget_s=8, deploy_promoted=True)
    try:
        assert out["stage"] == "production", out["gate"]
        served = out["deployment"]
        assert served["model_tag"] == out["tag"]
        with httpx.Client(base_url=served["url"], timeout=30) as client:
            assert client.get("/readyz").status_code == 200
            assert client.get("/model").json()["model_tag"] == out["tag"]
    finally:
        deploy.stop_server(out["deployment"]["pid"])
        get_settings.cache_clear()


def test_invalid_batch_is_quarantined_and_no_model_is_trained(
    harness, fresh_settings, tmp_path, full_frame
):
    bad = full_frame.head(500).drop(columns=["num_procedures"])
    path = tmp_path / "missing_column.csv"
    path.write_bytes(data.to_csv_bytes(bad))
    with pytest.raises(validation.ValidationFailed, match="num_procedures"):
        training_flow(data_uri=str(path), search_budget_s=5)
    assert registry.list_models() == []
    quarantined = storage.list_files(fresh_settings.layout.path("quarantine"))
    assert len(quarantined) == 1
    folder = quarantined[0]
    assert storage.exists(f"{folder}/report.json") and storage.exists(f"{folder}/report.html")
