"""The real HTTP service on data as a hospital feed delivers it: data-set rows as they are
(identifiers included, `?` for missing, every discharge disposition, patients the model knows
and patients it does not), never an outcome; and registered metrics that a client can reproduce
from the service's own answers."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from service_helpers import Served

from readmit import data, features
from readmit.model import evaluate, registry
from readmit.schema import DIED_OR_HOSPICE_IDS, ID_COLUMNS, INPUT_COLUMNS
from readmit.serving import OUTCOME_PROBLEM

SECRET_ENCOUNTER = 876_543_219  # must never appear in a response or a log


def feed_row(row: pd.Series) -> dict[str, Any]:
    """One data-set row as a feed exports it: identifiers, raw values, `?` for missing, and no
    outcome column (outcomes arrive 30 days or more later)."""
    out: dict[str, Any] = {}
    for name in (*ID_COLUMNS, *INPUT_COLUMNS):
        value = row[name]
        out[name] = "?" if pd.isna(value) else value
    return json.loads(json.dumps(out, default=int))


@pytest.fixture(scope="module")
def feed(full_frame: pd.DataFrame, feed_split: data.FeedSplit) -> pd.DataFrame:
    """300 raw rows: unknown patients of the same period with every disposition (died and
    hospice included), plus encounters of patients the model was trained on."""
    ordered = data.in_time_order(full_frame)
    known = ordered[ordered["patient_nbr"].isin(feed_split.train["patient_nbr"])]
    unknown = ordered.iloc[23_000:40_000]
    later = unknown.iloc[200:]
    excluded = later[later["discharge_disposition_id"].isin(DIED_OR_HOSPICE_IDS)].head(60)
    rows = pd.concat([unknown.head(200), excluded, known.head(40)], ignore_index=True)
    assert rows["discharge_disposition_id"].isin(DIED_OR_HOSPICE_IDS).sum() >= 60
    return rows


def test_feed_rows_score_as_they_are(client: httpx.Client, feed: pd.DataFrame) -> None:
    rows = [feed_row(r) for _, r in feed.iterrows()]
    answers = [client.post("/predict", json=r) for r in rows]
    assert [a.status_code for a in answers] == [200] * len(rows)
    batch = client.post("/predict_batch", json={"encounters": rows})
    assert batch.status_code == 200, batch.text
    assert batch.json()["count"] == len(rows)
    # Died/hospice encounters are scored but said to be outside the model's cohort.
    expected = (~feed["discharge_disposition_id"].isin(DIED_OR_HOSPICE_IDS)).tolist()
    assert [a.json()["in_cohort"] for a in answers] == expected
    assert [p["in_cohort"] for p in batch.json()["predictions"]] == expected


def test_identifiers_are_never_echoed(client: httpx.Client, served: Served) -> None:
    row = {**feed_row_example(), "encounter_id": SECRET_ENCOUNTER}
    resp = client.post("/predict", json=row)
    assert resp.status_code == 200
    assert str(SECRET_ENCOUNTER) not in resp.text
    bad = client.post("/predict", json={**row, "encounter_id": str(SECRET_ENCOUNTER)})
    assert bad.status_code == 400 and str(SECRET_ENCOUNTER) not in bad.text
    assert str(SECRET_ENCOUNTER) not in served.log_file.read_text(errors="replace")


def feed_row_example() -> dict[str, Any]:
    from readmit.serving import example_encounter

    return {**example_encounter(), "patient_nbr": 12345, "encounter_id": 67890}


@pytest.mark.parametrize("path", ["/predict", "/predict_batch"])
def test_an_outcome_in_a_request_is_a_clear_4xx(client: httpx.Client, path: str) -> None:
    row = {**feed_row_example(), "readmitted": "<30"}
    body: Any = row if path == "/predict" else {"encounters": [feed_row_example(), row]}
    resp = client.post(path, json=body)
    assert resp.status_code == 400, resp.text
    field = "readmitted" if path == "/predict" else "encounters[1].readmitted"
    problems = resp.json()["problems"]
    assert [p["field"] for p in problems] == [field]
    assert problems[0]["problem"] == OUTCOME_PROBLEM
    assert "outcomes feed" in problems[0]["message"]


@pytest.mark.parametrize("name", ["encounter_id", "patient_nbr"])
@pytest.mark.parametrize("odd", [12.5, 1e3, "12345", -7, 0, 2**60, [1], {"id": 1}])
def test_identifiers_in_odd_forms_get_a_field_named_4xx(
    client: httpx.Client, name: str, odd: Any
) -> None:
    resp = client.post("/predict", json={**feed_row_example(), name: odd})
    assert resp.status_code == 400, resp.text
    assert [p["field"] for p in resp.json()["problems"]] == [name]


def test_registered_metrics_are_what_the_service_answers(
    client: httpx.Client, served: Served, feed_split: data.FeedSplit
) -> None:
    """Holdout feed rows (no outcome) sent to the real service: the metrics computed from its
    answers are the registered ones, to the last stored digit."""
    holdout = feed_split.holdout
    y = features.make_label(holdout, "<30").astype(np.int64)
    rows = [feed_row(r) for _, r in holdout.iterrows()]
    answers = []
    for start in range(0, len(rows), 500):
        resp = client.post("/predict_batch", json={"encounters": rows[start : start + 500]})
        assert resp.status_code == 200, resp.text
        answers += [p["probability"] for p in resp.json()["predictions"]]
    p = np.asarray(answers)
    singles = [client.post("/predict", json=r).json()["probability"] for r in rows[:50]]
    np.testing.assert_allclose(singles, p[:50], rtol=0, atol=1e-12)
    registered = registry.load_model(served.model_tag).metadata["metrics"]
    assert registered["served_path"] is True
    measured = {
        **evaluate.core_metrics(y, p),
        "ece": evaluate.calibration_table(y, p)["ece"],
        "mean_predicted": round(float(p.mean()), 6),
        "n": len(y),
    }
    for key, value in measured.items():
        assert registered[key] == pytest.approx(value, abs=1e-9), key


def test_readmit_score_takes_feed_files_and_refuses_outcomes(
    served: Served, feed: pd.DataFrame, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import readmit_cli as cli

    raw, labelled = tmp_path / "feed.csv", tmp_path / "labelled.csv"
    raw.write_bytes(data.to_csv_bytes(feed.drop(columns=["readmitted"])))
    labelled.write_bytes(data.to_csv_bytes(feed))
    out = tmp_path / "scores.csv"
    assert cli.main(["score", str(raw), "-o", str(out), "--model", served.model_tag]) == 0
    assert len(pd.read_csv(out)) == len(feed)
    code = cli.main(["score", str(labelled), "-o", str(out), "--model", served.model_tag])
    assert code == 2
    assert "outcome column readmitted" in capsys.readouterr().err
