"""Pure serving helpers: request model, records, error shapes, log columns, the ASGI guard."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from readmit import pseudonyms, serving
from readmit.data import parse_encounters, to_csv_bytes
from readmit.schema import INPUT_COLUMNS
from readmit.serving import scoring

KEY = b"unit-test-key"


def test_example_encounter_is_valid_and_complete() -> None:
    model = serving.predict_request_model()
    record = serving.encounter_record(model(**serving.example_encounter()), KEY)
    assert list(record)[: len(INPUT_COLUMNS)] == list(INPUT_COLUMNS)
    assert record["patient_key"] is None and record["glyburide-metformin"] == "No"
    assert "patient_nbr" not in record and "encounter_id" not in record


def test_request_model_takes_feed_identifiers_but_only_whole_numbers() -> None:
    model = serving.predict_request_model()
    record = serving.encounter_record(
        model(**serving.example_encounter(), encounter_id=5, patient_nbr=7), KEY
    )
    assert "encounter_id" not in record and "patient_nbr" not in record
    assert record["encounter_key"] == pseudonyms.pseudonym(KEY, "encounter_id", 5)
    assert record["patient_key"] == pseudonyms.pseudonym(KEY, "patient_nbr", 7)
    for name in ("encounter_id", "patient_nbr"):
        for odd in (2**63, 12.5, 12.0, "123", -4, 0, True):
            with pytest.raises(ValidationError, match=name):
                model(**serving.example_encounter(), **{name: odd})


def test_missing_mark_of_the_data_set_reads_as_null() -> None:
    model = serving.predict_request_model()
    row = {**serving.example_encounter(), "weight": "?", "payer_code": "?"}
    record = serving.encounter_record(model(**row), KEY)
    assert record["weight"] is None and record["payer_code"] is None


def test_an_outcome_field_is_named_with_where_outcomes_belong() -> None:
    model = serving.predict_request_model()
    with pytest.raises(ValidationError) as caught:
        model(**serving.example_encounter(), readmitted="NO")
    problems = serving.problems_from_errors(caught.value.errors())
    assert problems == [
        {
            "field": "readmitted",
            "problem": serving.OUTCOME_PROBLEM,
            "message": serving.OUTCOME_MESSAGE,
        }
    ]


def test_records_frame_matches_the_csv_path(sample_frame: pd.DataFrame) -> None:
    rows = sample_frame.head(30)
    via_csv = parse_encounters(to_csv_bytes(rows))[list(INPUT_COLUMNS)]
    records = [
        {
            c: (
                None
                if pd.isna(v)
                else (int(v) if c in via_csv and str(via_csv[c].dtype) == "Int64" else v)
            )
            for c, v in r.items()
        }
        for r in rows[list(INPUT_COLUMNS)].to_dict("records")
    ]
    via_json = scoring.records_frame(records)
    pd.testing.assert_frame_equal(via_json, via_csv.reset_index(drop=True))


def test_field_paths_and_problems() -> None:
    assert serving.field_path(("encounters", 3, "age")) == "encounters[3].age"
    assert serving.field_path(()) == "(body)"
    assert serving.field_path(("root", "gender")) == "gender"
    problems = serving.problems_from_errors(
        [
            {
                "type": "literal_error",
                "loc": ["age"],
                "msg": "Input should be ...",
                "input": "secret-123",
            },
            {"type": "missing", "loc": ["encounters", 0, "insulin"], "msg": "Field required"},
        ]
    )
    assert problems[0] == {
        "field": "age",
        "problem": "unknown category",
        "message": "Input should be ...",
    }
    assert problems[1]["field"] == "encounters[0].insulin"
    assert "secret-123" not in json.dumps(problems)


def test_rewrite_error_handles_bentoml_shapes() -> None:
    pyd = {
        "error": "1 validation error",
        "detail": [{"type": "json_invalid", "loc": [], "msg": "Invalid JSON"}],
    }
    out = serving.rewrite_error(400, json.dumps(pyd).encode())
    assert out["problems"][0]["problem"] == "malformed JSON"
    assert serving.rewrite_error(415, b'[{"error": "pickle not allowed"}]')["error"] == (
        "pickle not allowed"
    )
    assert "HTTP 400" in serving.rewrite_error(400, b"not json")["error"]


def test_log_columns_never_carry_identifiers() -> None:
    raw = {**serving.example_encounter(), "patient_nbr": 42, "encounter_id": 7}
    record = {**serving.encounter_record(serving.predict_request_model()(**raw), KEY), **raw}
    cols = serving.log_columns([record], [0.3], ["high"], "readmission:v1")
    names = [c[0] for c in cols]
    assert "patient_nbr" not in names and "encounter_id" not in names
    values = dict((c[0], c[3][0]) for c in cols)
    assert values["patient_key"] == pseudonyms.pseudonym(KEY, "patient_nbr", 42)
    assert values["encounter_key"] == pseudonyms.pseudonym(KEY, "encounter_id", 7)
    assert names[-6:] == [
        "probability", "risk", "model_tag", "experiment_id", "variant", "challenger_probability"
    ]  # fmt: skip
    assert [values[n] for n in names[-3:]] == [None, None, None]  # no live experiment
    assert {c[1] for c in cols} <= {"feature", "prediction"}
    assert dict((c[0], c[2]) for c in cols)["time_in_hospital"] == "numerical"


def test_log_rows_are_the_columns_as_rows_without_identifiers() -> None:
    """The service's row path (`log_rows`) and the column path (`log_columns`, and
    `logged_rows` built on it) log the same rows, in the same column order."""
    raw = {**serving.example_encounter(), "patient_nbr": 42, "encounter_id": 7}
    records = [
        {**serving.encounter_record(serving.predict_request_model()(**raw), KEY), **raw},
        serving.encounter_record(
            serving.predict_request_model()(**serving.example_encounter()), KEY
        ),
    ]
    rows = serving.log_rows(records, [0.3, 0.1], ["high", "low"], "readmission:v1")
    cols = serving.log_columns(records, [0.3, 0.1], ["high", "low"], "readmission:v1")
    assert [list(row) for row in rows] == [[c[0] for c in cols]] * 2
    assert [list(row.values()) for row in rows] == [[c[3][i] for c in cols] for i in range(2)]
    assert not {"patient_nbr", "encounter_id"} & set(rows[0])
    assert rows[0]["encounter_key"] == pseudonyms.pseudonym(KEY, "encounter_id", 7)
    assert rows[1]["encounter_key"] is None and rows[1]["probability"] == 0.1
    at = "2026-12-04T10:00:00.000000+00:00"
    logged = serving.logged_rows(records, [0.3, 0.1], ["high", "low"], "readmission:v1", at)
    assert logged == [{**row, "timestamp": at} for row in rows]


def test_prediction_log_ships_to_the_artifact_store_by_default(
    fresh_settings: Any, tmp_path: Any
) -> None:
    s3 = fresh_settings.model_copy(update={"artifacts_uri": "s3://bucket/x"})
    assert serving.prediction_log_uri(s3) == "s3://bucket/x/prediction_logs"
    explicit = fresh_settings.model_copy(update={"prediction_log_uri": str(tmp_path)})
    assert serving.prediction_log_uri(explicit) == str(tmp_path)
    options = serving.monitoring_config(explicit)["options"]
    assert options == {"store_uri": str(tmp_path), "flush_seconds": explicit.log_flush_seconds}


# --------------------------------------------------------------------------- RequestGuard


def _call(
    guard: serving.RequestGuard,
    path: str,
    body: bytes,
    method: str = "POST",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    chunks = [body[:10], body[10:]]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "path": path,
        "method": method,
        "headers": headers or [(b"content-type", b"application/json")],
    }
    asyncio.run(guard(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(payload or b"{}")


async def _echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Stands in for BentoML: answers 400 in BentoML's shape unless the body is `{}`."""
    message = await receive()
    ok = message["body"] == b"{}"
    body = (
        b"{}"
        if ok
        else json.dumps(
            {"error": "x", "detail": [{"type": "missing", "loc": ["age"], "msg": "Field required"}]}
        ).encode()
    )
    await send({"type": "http.response.start", "status": 200 if ok else 400, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _guard(reason: str | None = None, seen: list[Any] | None = None) -> serving.RequestGuard:
    return serving.RequestGuard(
        _echo_app,
        body_paths=["/predict"],
        max_body_bytes=100,
        not_ready_reason=lambda: reason,
        on_invalid=(lambda p, probs: seen.append((p, probs))) if seen is not None else None,
    )


def test_guard_passes_good_requests_and_rewrites_bentoml_errors() -> None:
    seen: list[Any] = []
    assert _call(_guard(seen=seen), "/predict", b"{}") == (200, {})
    status, body = _call(_guard(seen=seen), "/predict", b'{"x": 1}')
    assert status == 400 and body["problems"][0]["field"] == "age"
    assert seen[-1][0] == "/predict"


def test_guard_limits_size_media_type_and_empty_bodies() -> None:
    assert _call(_guard(), "/predict", b"{" + b" " * 200 + b"}")[0] == 413
    big_declared = [(b"content-type", b"application/json"), (b"content-length", b"999999")]
    assert _call(_guard(), "/predict", b"{}", headers=big_declared)[0] == 413
    assert _call(_guard(), "/predict", b"a=1", headers=[(b"content-type", b"text/csv")])[0] == 415
    assert _call(_guard(), "/predict", b"")[0] == 400


def test_guard_reports_not_ready_with_the_reason() -> None:
    status, body = _call(_guard("no production model"), "/readyz", b"", method="GET")
    assert status == 503 and body == {"ready": False, "reason": "no production model"}
    status, body = _call(_guard("no production model"), "/predict", b"{}")
    assert status == 503 and "no production model" in body["error"]
    assert _call(_guard("no production model"), "/model", b"", method="GET")[0] == 503
    # An endpoint nobody registered with the guard is gated too; infrastructure is not.
    assert _call(_guard("no production model"), "/explain", b"{}")[0] == 503
    for open_path in ("/healthz", "/metrics", "/docs.json", "/static_content/x.css"):
        assert _call(_guard("no production model"), open_path, b"{}", method="GET")[0] == 200
