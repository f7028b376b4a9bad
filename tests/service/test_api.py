"""The served bento over real HTTP: predictions, model info, metrics, logs, every bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from service_helpers import (
    READY_TIMEOUT_S,
    Served,
    encounter_json,
    shipped_rows,
    traffic_then_sigterm,
)

import readmit_cli as cli
from readmit import data, pseudonyms, storage
from readmit.model import registry
from readmit.monitoring import served as served_log
from readmit.ops import deploy
from readmit.serving import example_encounter, prediction_log
from readmit.settings import get_settings

EXAMPLE = example_encounter()
SECRET_PATIENT = 987_654_321  # must never appear in any log or response


def test_predict_returns_probability_risk_and_tag(client: httpx.Client, served: Served) -> None:
    resp = client.post("/predict", json={**EXAMPLE, "patient_nbr": SECRET_PATIENT})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"probability", "risk", "in_cohort", "threshold", "model_tag"}
    assert 0.0 < body["probability"] < 1.0
    assert body["risk"] == ("high" if body["probability"] >= body["threshold"] else "low")
    assert body["model_tag"] == served.model_tag
    assert str(SECRET_PATIENT) not in resp.text


def test_hyphenated_names_are_the_field_names(client: httpx.Client) -> None:
    changed = {**EXAMPLE, "glyburide-metformin": "Steady", "metformin-pioglitazone": "Up"}
    assert client.post("/predict", json=changed).status_code == 200
    underscored = {k.replace("-", "_"): v for k, v in EXAMPLE.items()}
    assert client.post("/predict", json=underscored).status_code == 200  # populate_by_name


def test_batch_keeps_order_and_matches_single(
    client: httpx.Client, holdout_rows: pd.DataFrame
) -> None:
    rows = [encounter_json(r) for _, r in holdout_rows.head(20).iterrows()]
    resp = client.post("/predict_batch", json={"encounters": rows})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["count"] == 20 and len(body["predictions"]) == 20
    singles = [client.post("/predict", json=r).json()["probability"] for r in rows[:5]]
    batch = [p["probability"] for p in body["predictions"][:5]]
    np.testing.assert_allclose(batch, singles, rtol=0, atol=1e-12)
    assert len({round(p, 9) for p in batch}) > 1  # real rows, different scores


def test_model_info(client: httpx.Client, served: Served) -> None:
    resp = client.get("/model")
    assert resp.status_code == 200
    info = resp.json()
    assert info["model_tag"] == served.model_tag
    assert info["label_definition"] == "<30"
    assert info["trained_at"] == "2026-11-23T00:00:00+00:00"
    registered = registry.load_model(served.model_tag).metadata["metrics"]
    assert info["metrics"] == registered and info["metrics"]["served_path"] is True
    assert info["threshold"] == pytest.approx(0.15)
    assert info["scorer"]  # FrameScorer, or the per-record fast path once it compiles the model


def test_health_endpoints(client: httpx.Client) -> None:
    for path in ("/healthz", "/livez", "/readyz"):
        assert client.get(path).status_code == 200, path


def _metric_lines(client: httpx.Client, prefix: str) -> list[str]:
    return [ln for ln in client.get("/metrics").text.splitlines() if ln.startswith(prefix)]


def test_custom_metrics_after_predictions(client: httpx.Client, served: Served) -> None:
    before = _metric_lines(client, "readmit_predictions_total")
    total_before = sum(float(ln.rsplit(" ", 1)[1]) for ln in before)
    rows = [EXAMPLE] * 7
    assert client.post("/predict_batch", json={"encounters": rows}).status_code == 200
    after = _metric_lines(client, "readmit_predictions_total")
    assert sum(float(ln.rsplit(" ", 1)[1]) for ln in after) == total_before + 7
    assert any('endpoint="predict_batch"' in ln for ln in after)
    assert any('risk="high"' in ln or 'risk="low"' in ln for ln in after)
    assert _metric_lines(client, "readmit_prediction_probability_bucket")
    info = _metric_lines(client, "readmit_model_info")
    assert any(f'model_tag="{served.model_tag}"' in ln and ln.endswith(" 1.0") for ln in info)
    assert _metric_lines(client, "readmit_model_ready")[0].endswith(" 1.0")
    assert _metric_lines(client, "bentoml_service_request_total")  # BentoML's own still there


def _problems(resp: httpx.Response) -> list[dict[str, str]]:
    body = resp.json()
    assert set(body) == {"error", "problems"}, body
    assert "Traceback" not in resp.text
    return body["problems"]


BAD_REQUESTS: list[tuple[str, str, Any, int, str, str]] = [
    # name, path, JSON body, status, field, problem
    (
        "wrong type",
        "/predict",
        {**EXAMPLE, "time_in_hospital": "three"},
        400,
        "time_in_hospital",
        "wrong type",
    ),
    ("unknown category", "/predict", {**EXAMPLE, "age": "[70-85)"}, 400, "age", "unknown category"),
    (
        "unknown code",
        "/predict",
        {**EXAMPLE, "admission_type_id": 99},
        400,
        "admission_type_id",
        "unknown category",
    ),
    (
        "missing field",
        "/predict",
        {k: v for k, v in EXAMPLE.items() if k != "insulin"},
        400,
        "insulin",
        "missing required field",
    ),
    (
        "null in required",
        "/predict",
        {**EXAMPLE, "gender": None},
        400,
        "gender",
        "unknown category",
    ),
    (
        "out of range",
        "/predict",
        {**EXAMPLE, "time_in_hospital": 40},
        400,
        "time_in_hospital",
        "out of range",
    ),
    ("bad ICD-9", "/predict", {**EXAMPLE, "diag_1": "heart"}, 400, "diag_1", "invalid format"),
    (
        "unknown field",
        "/predict",
        {**EXAMPLE, "admission_date": "2008-01-01"},
        400,
        "admission_date",
        "unknown field",
    ),
    ("not an object", "/predict", [EXAMPLE], 400, "(body)", "wrong type"),
    ("empty batch", "/predict_batch", {"encounters": []}, 400, "encounters", "empty batch"),
    (
        "over the limit",
        "/predict_batch",
        {"encounters": [EXAMPLE] * 1001},
        400,
        "encounters",
        "batch over the limit",
    ),
    (
        "bad row in batch",
        "/predict_batch",
        {"encounters": [EXAMPLE, {**EXAMPLE, "race": "Martian"}]},
        400,
        "encounters[1].race",
        "unknown category",
    ),
    ("batch as bare list", "/predict_batch", [EXAMPLE], 400, "(body)", "wrong type"),
]


@pytest.mark.parametrize(
    ("name", "path", "body", "status", "field", "problem"),
    BAD_REQUESTS,
    ids=[b[0] for b in BAD_REQUESTS],
)
def test_bad_input_names_field_and_problem(
    client: httpx.Client, name: str, path: str, body: Any, status: int, field: str, problem: str
) -> None:
    resp = client.post(path, json=body)
    assert resp.status_code == status, resp.text
    problems = _problems(resp)
    assert any(p["field"] == field and p["problem"].startswith(problem) for p in problems), problems
    assert field in resp.json()["error"]


@pytest.mark.parametrize(
    ("path", "content", "content_type", "status", "problem"),
    [
        ("/predict", b'{"age": "[70-80)",', "application/json", 400, "malformed JSON"),
        ("/predict_batch", b'{"encounters": [', "application/json", 400, "malformed JSON"),
        ("/predict", b"", "application/json", 400, "malformed JSON"),
        ("/predict", b"age=1", "application/x-www-form-urlencoded", 415, "unsupported media"),
        ("/predict_batch", b" " * 5_000_000, "application/json", 413, "body too large"),
    ],
    ids=["malformed", "malformed-batch", "empty-body", "form", "too-large"],
)
def test_malformed_bodies(
    client: httpx.Client, path: str, content: bytes, content_type: str, status: int, problem: str
) -> None:
    resp = client.post(path, content=content, headers={"content-type": content_type})
    assert resp.status_code == status, resp.text
    assert _problems(resp)[0]["problem"].startswith(problem)


def test_invalid_requests_are_counted(client: httpx.Client) -> None:
    client.post("/predict", json={**EXAMPLE, "gender": "?"})
    lines = _metric_lines(client, "readmit_invalid_requests_total")
    assert any('problem="unknown category"' in ln for ln in lines), lines


def _monitor_records(served: Served) -> list[dict[str, Any]]:
    return shipped_rows(served.prediction_logs)


def test_prediction_log_has_features_and_predictions_without_identifiers(
    client: httpx.Client, served: Served
) -> None:
    marker = {**EXAMPLE, "num_lab_procedures": 123, "patient_nbr": SECRET_PATIENT}
    resp = client.post("/predict", json=marker)
    assert resp.status_code == 200
    deadline = time.monotonic() + 10
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not records:
        records = [r for r in _monitor_records(served) if r.get("num_lab_procedures") == 123]
        time.sleep(0.2)
    assert records, "no prediction log line for the request"
    rec = records[-1]
    assert rec["probability"] == pytest.approx(resp.json()["probability"], abs=1e-12)
    assert rec["risk"] == resp.json()["risk"] and rec["model_tag"] == served.model_tag
    assert rec["glyburide-metformin"] == "No" and rec["age"] == "[70-80)"
    assert not {"patient_nbr", "encounter_id"} & set(rec)
    assert rec["patient_key"] == pseudonyms.pseudonym(
        get_settings().pseudonym_key_bytes, "patient_nbr", SECRET_PATIENT
    )
    shipped = [
        prediction_log.decode_chunk(storage.read_bytes(c.url))
        for c in served_log.list_chunks(str(served.prediction_logs))
    ]
    assert str(SECRET_PATIENT) not in json.dumps(shipped)
    for path in [*served.prediction_logs.rglob("*"), served.log_file]:
        if path.is_file():
            assert str(SECRET_PATIENT).encode() not in path.read_bytes(), path


def test_rejected_identifier_is_not_logged(client: httpx.Client, served: Served) -> None:
    resp = client.post("/predict", json={**EXAMPLE, "patient_nbr": "p-555000111"})
    assert resp.status_code == 400
    assert "555000111" not in resp.text
    time.sleep(0.5)
    assert "555000111" not in served.log_file.read_text(errors="replace")


def test_parity_with_readmit_score(
    client: httpx.Client, served: Served, holdout_rows: pd.DataFrame, tmp_path: Path
) -> None:
    """The service's probabilities equal `readmit score` (the batch pipeline) to 1e-9."""
    csv_in, csv_out = tmp_path / "rows.csv", tmp_path / "scores.csv"
    csv_in.write_bytes(data.to_csv_bytes(holdout_rows.drop(columns=["readmitted"])))
    assert cli.main(["score", str(csv_in), "-o", str(csv_out), "--model", served.model_tag]) == 0
    expected = pd.read_csv(csv_out)["probability"].to_numpy()
    rows = [encounter_json(r) for _, r in holdout_rows.iterrows()]
    batch = client.post("/predict_batch", json={"encounters": rows}).json()
    got = np.array([p["probability"] for p in batch["predictions"]])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    singles = np.array([client.post("/predict", json=r).json()["probability"] for r in rows[:40]])
    np.testing.assert_allclose(singles, expected[:40], rtol=0, atol=1e-9)
    assert np.ptp(expected) > 0.05  # a real spread of risks, not a constant


def test_no_model_service_starts_but_is_not_ready(run_root: Path) -> None:
    """A bento without a packed model, an empty BENTOML_HOME and an artifact store without a
    published production model (else the service would import it): live, /readyz 503 with the
    reason, the API 503 with the same reason. (A bento whose packed model is missing is refused
    by `bentoml serve` itself; `readmit.ops.deploy` then keeps the old server.)"""
    settings = get_settings()
    bare_bento = deploy.build_bento(None, settings)
    empty = settings.model_copy(update={"bentoml_home": str(run_root / "empty-store")})
    run_dir, port = run_root / "no-model", deploy.free_port()
    bento_path = str(deploy.bento_dir(bare_bento, settings))
    no_published = {"READMIT_ARTIFACTS_URI": str(run_root / "empty-artifacts")}
    proc, _, log_file = deploy.start_server(
        bento_path, port, run_dir=run_dir, settings=empty, env=no_published
    )
    url = f"http://{deploy.HOST}:{port}"
    why = "no production model"
    try:
        ok, reason = deploy.wait_ready(url, proc, READY_TIMEOUT_S)
        assert not ok and why in reason, f"{reason}\n{log_file.read_text()[-2000:]}"
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.get("/livez").status_code == 200
            assert c.get("/healthz").status_code == 200
            ready = c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["ready"] is False
            assert why in ready.json()["reason"]
            for resp in (c.post("/predict", json=EXAMPLE), c.get("/model")):
                assert resp.status_code == 503, resp.text
                assert why in resp.json()["error"]
            assert "readmit_model_ready 0.0" in c.get("/metrics").text
    finally:
        deploy.stop_server(proc.pid)


def test_a_sigterm_in_the_middle_of_traffic_loses_no_row(bento_tag: str, run_root: Path) -> None:
    """Clients send distinct encounters while the server is stopped (SIGTERM, as Kubernetes and
    `readmit.ops.deploy` do): every request that got a 200 has its row in the shipped log, and
    nothing else is there. Rows are queued in memory with a 60 s flush interval here, so only
    the shutdown hook can have shipped them."""
    plogs = run_root / "stop_plogs"
    port = deploy.free_port()
    env = {"READMIT_PREDICTION_LOG_URI": str(plogs), "READMIT_LOG_FLUSH_SECONDS": "60"}
    proc, _, log_file = deploy.start_server(bento_tag, port, run_dir=run_root / "stop", env=env)
    url = f"http://{deploy.HOST}:{port}"
    try:
        ok, reason = deploy.wait_ready(url, proc, READY_TIMEOUT_S)
        assert ok, reason
        answered = traffic_then_sigterm(url, proc.pid, EXAMPLE, min_answered=300)
    finally:
        deploy.stop_server(proc.pid)  # already stopped unless something failed first
    assert len(answered) >= 300, log_file.read_text()[-2000:]
    key = get_settings().pseudonym_key_bytes
    expected = {pseudonyms.pseudonym(key, "encounter_id", e) for e in answered}
    logged = [r["encounter_key"] for r in shipped_rows(plogs)]
    assert expected <= set(logged), f"{len(expected - set(logged))} answered rows not shipped"
    assert len(logged) == len(set(logged))  # no row twice
