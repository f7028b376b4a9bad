"""The loop on served traffic, on the real parts: a request answered by the real bento shows up in
the next run of the `monitoring` deployment on the real Prefect server (worker, prefect.yaml);
its outcome, added later with `readmit outcomes add`, turns the window's estimate into a realised
figure.

The worker's flow runs share this process' READMIT_ARTIFACTS_URI and BENTOML_HOME
(tests/conftest.py); the bento is served with the same store, as `make up` serves it.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from readmit import data, pseudonyms, storage
from readmit.data import outcomes
from readmit.model import registry
from readmit.monitoring import drift, windows
from readmit.ops import deploy
from readmit.serving.scoring import feed_records
from readmit.settings import PROJECT_ROOT, get_settings

pytestmark = pytest.mark.integration

FLUSH_S = 1.0
SERVED_ROWS = 1500


def _window_of(keys: set[str]) -> dict[str, object]:
    """The stored assessment of the window holding these encounters (they share one)."""
    layout = get_settings().layout
    for wid, bases in windows.list_windows(layout).items():
        if keys <= set(windows.read_served(bases)["encounter_key"]):
            return dict(storage.read_json(f"{layout.window_dir(wid)}/assessment.json"))
    raise AssertionError("no monitoring window holds the served encounters")


def test_a_served_request_reaches_monitoring_and_its_outcome_turns_it_realised(
    prefect_worker, tmp_path, full_frame
):
    from flows.training import training_flow

    settings = get_settings()
    ordered = data.in_time_order(full_frame)
    known, unseen = data.split_by_patient(ordered.iloc[:20_000], holdout_fraction=0.3, seed=9)
    train_csv = tmp_path / "reference.csv"
    train_csv.write_bytes(data.to_csv_bytes(known))
    (batch,) = drift.sample_batches(unseen, n_batches=1, batch_size=SERVED_ROWS, seed=4)
    api_url = prefect_worker.server.api_url
    with temporary_settings({PREFECT_API_URL: api_url}):
        trained = training_flow(data_uri=str(train_csv), search_budget_s=5)
        registry.promote(trained["tag"], reason="served-loop test champion")
        bento = deploy.build_bento(trained["tag"], settings)
        port = deploy.free_port()
        env = {"READMIT_LOG_FLUSH_SECONDS": str(FLUSH_S)}
        proc, _, log = deploy.start_server(bento, port, run_dir=tmp_path / "serve", env=env)
        url = f"http://{deploy.HOST}:{port}"
        try:
            ok, reason = deploy.wait_ready(url, proc, 180)
            assert ok, f"{reason} ({log})"
            bodies = feed_records(batch.drop(columns=["readmitted"]))
            for start in range(0, len(bodies), 500):
                response = httpx.post(
                    f"{url}/predict_batch", json={"encounters": bodies[start : start + 500]},
                    timeout=60,
                )  # fmt: skip
                assert response.status_code == 200, response.text
            time.sleep(3 * FLUSH_S)
        finally:
            deploy.stop_server(proc.pid)
        key = settings.pseudonym_key_bytes
        served_keys = {pseudonyms.pseudonym(key, "encounter_id", e) for e in batch["encounter_id"]}

        first = run_deployment("monitoring/monitoring", timeout=300)
        assert first.state.is_completed(), first.state
        before = _window_of(served_keys)
        assert before["estimate"]["estimated_auc"] is not None
        assert before["realised_auc"] is None and before["label_coverage"] == 0.0
        assert before["skew"]["ok"] is True and trained["tag"] in before["model_tags"]

        outcomes_csv = tmp_path / "outcomes.csv"
        batch[["encounter_id", "readmitted"]].to_csv(outcomes_csv, index=False)
        added = subprocess.run(
            [sys.executable, "-m", "readmit_cli", "outcomes", "add", str(outcomes_csv)],
            capture_output=True, text=True, cwd=PROJECT_ROOT, check=False,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert f"{SERVED_ROWS} accepted" in added.stdout and "0 of unknown" in added.stdout
        second = run_deployment("monitoring/monitoring", timeout=300)
        assert second.state.is_completed(), second.state
    after = _window_of(served_keys)
    assert after["label_coverage"] == 1.0 and after["realised_auc"] is not None
    stored = outcomes.read_received(settings.artifacts_uri)
    assert served_keys <= set(stored["encounter_key"])
    assert not set(pd.Series(batch["encounter_id"]).astype(str)) & set(stored["encounter_key"])
