"""Served traffic in time windows: pieces per chunk and window, the outcomes join, the skew
check, estimated and realised performance, and reading each chunk exactly once."""

from __future__ import annotations

import gzip
import importlib.util
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from readmit import data, layout, monitoring, pseudonyms, serving, storage
from readmit.data import outcomes
from readmit.features import served_history
from readmit.layout import StoreLayout
from readmit.monitoring import served, simulation, windows
from readmit.serving import prediction_log, scoring
from readmit.settings import PROJECT_ROOT, get_settings

T0 = datetime(2026, 12, 4, 9, 59, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _small_model(train: pd.DataFrame) -> Any:
    """The service tests' small model (tests/service/service_helpers.py, imported by path)."""
    name = "readmit_service_test_helpers"
    if name not in sys.modules:
        path = PROJECT_ROOT / "tests" / "service" / "service_helpers.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name].small_model(train)


@pytest.fixture(scope="module")
def split(full_frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    period = data.in_time_order(full_frame).iloc[:12_000]
    return data.split_by_patient(period, holdout_fraction=0.25, seed=11)


@pytest.fixture(scope="module")
def model(split: tuple[pd.DataFrame, pd.DataFrame]) -> Any:
    return _small_model(data.exclude_died_or_hospice(split[0]))


def _ship(
    log_uri: str, model: Any, feed: pd.DataFrame, at: datetime, seq: int, tag: str = "m:1"
) -> tuple[served.Chunk, np.ndarray]:
    """Rows exactly as the service logs them (pseudonyms, features, probability), one chunk."""
    url, p = simulation.ship_as_served(
        model, feed, log_uri, at, model_tag=tag, threshold=0.2, seq=seq
    )
    return served.Chunk(url=url, name="/".join(url.rsplit("/", 2)[-2:])), p


def test_a_chunk_becomes_pieces_per_window_with_no_feature_or_raw_id(
    tmp_path: Path, split: tuple[pd.DataFrame, pd.DataFrame], model: Any
) -> None:
    feed = split[1].drop(columns=["readmitted"]).iloc[:300]
    log_uri = str(tmp_path / "logs")
    chunk, p = _ship(log_uri, model, feed, T0, 1)
    frame = served.read_chunk(chunk)
    frame.loc[frame.index[200:], "timestamp"] += HOUR  # the last 100 rows: the next window
    pieces = windows.split_chunk(chunk, frame, HOUR, model, skew_rows=20)
    assert [(pc.window, len(pc.served)) for pc in pieces] == [
        ("20261204T090000Z", 200), ("20261204T100000Z", 100)
    ]  # fmt: skip
    first = pieces[0].served
    assert list(first.columns) == list(windows.SERVED_COLUMNS)
    assert first["rescored"].notna().sum() == 20
    checked = first[first["rescored"].notna()]
    assert np.allclose(checked["rescored"], checked["probability"], atol=1e-9)
    assert np.allclose(first["probability"], p[:200])
    store = StoreLayout(str(tmp_path / "store"))
    for piece in pieces:
        windows.write_piece(store, piece)
    for url in storage.list_files(store.windows_dir(), "*/*.served.csv.gz"):
        text = gzip.decompress(Path(url).read_bytes()).decode()
        assert "encounter_id" not in text and "patient_nbr" not in text
        assert "age" not in text.splitlines()[0]  # no feature leaves the log
        assert str(int(feed["encounter_id"].iloc[0])) not in text


def test_the_skew_check_fails_when_another_model_answered(
    tmp_path: Path, split: tuple[pd.DataFrame, pd.DataFrame], model: Any
) -> None:
    feed = split[1].drop(columns=["readmitted"]).iloc[:200]
    other = _small_model(data.exclude_died_or_hospice(split[0]).iloc[:4000])
    chunk, _ = _ship(str(tmp_path / "logs"), other, feed, T0, 1, tag="m:other")
    (piece,) = windows.split_chunk(chunk, served.read_chunk(chunk), HOUR, model, skew_rows=15)
    skew = windows.skew_of(piece.served)
    assert skew.checked == 15 and skew.ok is False and skew.mismatched >= 14
    chunk, _ = _ship(str(tmp_path / "logs"), model, feed, T0, 2)
    (piece,) = windows.split_chunk(chunk, served.read_chunk(chunk), HOUR, model, skew_rows=15)
    assert windows.skew_of(piece.served).ok is True


def _served(keys: list[str], times: list[datetime], cohort: list[bool]) -> pd.DataFrame:
    return pd.DataFrame({
        "encounter_key": keys, "patient_key": keys, "probability": np.linspace(0.1, 0.3, len(keys)),
        "model_tag": "m:1", "timestamp": pd.to_datetime(times, utc=True), "in_cohort": cohort,
        "rescored": np.nan,
    })  # fmt: skip


def test_outcomes_join_by_pseudonym_and_never_before_their_prediction() -> None:
    times = [T0 + timedelta(minutes=i) for i in range(4)]
    served_rows = _served(["a", "b", "c", "d"], times, [True, True, True, False])
    stored = pd.DataFrame({
        "encounter_key": ["a", "b", "d", "zz"], "readmitted": ["<30", "NO", "NO", "NO"],
        "received_at": [(T0 + timedelta(days=40)).isoformat(), (T0 - HOUR).isoformat(),
                        (T0 + timedelta(days=40)).isoformat(), T0.isoformat()],
    })  # fmt: skip
    joined = windows.join_outcomes(served_rows, stored, "<30")
    assert joined.labelled.tolist() == [True, False, False]  # b arrived before it was served
    assert joined.labels[joined.labelled].tolist() == [1]
    assert joined.before_prediction == 1  # d is out of the cohort, zz was never served


def test_requests_without_an_encounter_id_count_once_each_and_outside_label_coverage() -> None:
    """A client may send no encounter id: each such row is its own encounter for the estimate,
    and no outcome can reach it, so coverage is over the encounters that carry one."""
    times = [T0 + timedelta(minutes=i) for i in range(5)]
    served_rows = _served(["a", "a", None, None, "b"], times, [True] * 5)  # type: ignore[list-item]
    stored = pd.DataFrame({"encounter_key": ["a", "b"], "readmitted": ["<30", "NO"],
                           "received_at": [(T0 + timedelta(days=40)).isoformat()] * 2})  # fmt: skip
    joined = windows.join_outcomes(served_rows, stored, "<30")
    assert len(joined.probabilities) == 4  # a (latest of two), two without id, b
    assert joined.joinable == 2 and int(joined.labelled.sum()) == 2


def test_a_window_is_assessed_before_and_after_its_outcomes(
    tmp_path: Path, split: tuple[pd.DataFrame, pd.DataFrame], model: Any
) -> None:
    holdout = split[1]
    chunk, _ = _ship(str(tmp_path / "logs"), model, holdout.drop(columns=["readmitted"]), T0, 1)
    (piece,) = windows.split_chunk(chunk, served.read_chunk(chunk), 3 * HOUR, model, 5)
    ref_feed = split[0]
    cohort = data.in_cohort(holdout)
    reference_uris = monitoring.ReferenceUris.for_model(str(tmp_path / "store"), "v1")
    p_feed = scoring.served_probabilities(model, holdout.drop(columns=["readmitted"]))
    y = data.exclude_died_or_hospice(holdout)["readmitted"].eq("<30").to_numpy(dtype=int)
    monitoring.write_reference(reference_uris, ref_feed, p_feed, y, p_feed[cohort])
    reference = monitoring.load_reference(reference_uris)
    empty = outcomes.read_received(str(tmp_path / "store"))
    before = windows.assess_window(
        reference, piece.window, piece.profile, piece.served, empty, "<30"
    )
    assert before.label_coverage == 0 and before.realised_auc is None
    assert before.estimate is not None and 0.55 < (before.estimate.estimated_auc or 0) < 0.8
    assert before.skew.ok is True and before.n_cohort == int(cohort.sum())
    assert before.report.severity.rank < 2  # the same period as the reference: no alarm
    key = get_settings().pseudonym_key_bytes
    labels = pd.DataFrame({
        "encounter_key": pseudonyms.key_column(holdout["encounter_id"], key, "encounter_id"),
        "readmitted": holdout["readmitted"].astype(str),
        "received_at": (T0 + timedelta(days=35)).isoformat(),
    })  # fmt: skip
    after = windows.assess_window(
        reference, piece.window, piece.profile, piece.served, labels, "<30"
    )
    assert after.label_coverage == 1.0 and after.n_labelled == int(cohort.sum())
    expected = monitoring.drift.assess_performance(y, p_feed[cohort], reference.performance)
    assert after.realised_auc == pytest.approx(expected.roc_auc, abs=1e-9)
    summary = after.summary()
    assert summary["realised_auc"] is not None and summary["estimated_auc"] is not None


def test_each_chunk_is_read_once_even_when_it_lands_late(tmp_path: Path) -> None:
    log_uri, grace = str(tmp_path / "logs"), timedelta(minutes=10)
    rows = [{"timestamp": T0.isoformat(), "probability": 0.1, "model_tag": "m"}]

    def ship(at: datetime, writer: str) -> None:
        url = f"{log_uri}/{layout.chunk_relpath(at, writer, 1)}"
        storage.write_bytes(url, prediction_log.encode_chunk(rows))

    ship(T0, "pod-a")
    ship(T0 + timedelta(minutes=5), "pod-a")
    state: dict[str, Any] = {}
    first = windows.new_chunks(log_uri, set(state.get("served_seen", [])), None, grace)
    state = windows.advance_state(state, first, grace)
    ship(T0 + timedelta(minutes=3), "pod-b")  # lands after the later chunk was read
    ship(T0 - timedelta(hours=2), "pod-c")  # beyond the grace: documented as not read
    watermark = datetime.fromisoformat(state["served_watermark"])
    second = windows.new_chunks(log_uri, set(state["served_seen"]), watermark, grace)
    assert len(first) == 2
    assert len(second) == 1 and "pod-b" in second[0].name  # pod-c: older than the grace
    state = windows.advance_state(state, second, grace)
    third = windows.new_chunks(
        log_uri, set(state["served_seen"]), datetime.fromisoformat(state["served_watermark"]), grace
    )
    assert third == []


def test_an_encounter_recorded_while_a_request_is_scored_does_not_trip_the_skew_check(
    tmp_path: Path, split: tuple[pd.DataFrame, pd.DataFrame], model: Any
) -> None:
    """Monitoring records served encounters while the service scores: the logged time is the
    view the service scored with, so the skew check re-scores with that same view."""
    holdout = split[1].drop(columns=["readmitted"])
    repeat = holdout[holdout.duplicated("patient_nbr", keep=False)]
    patient = repeat["patient_nbr"].iloc[0]
    earlier, later = repeat[repeat["patient_nbr"] == patient].iloc[:2].itertuples(index=False)
    earlier = earlier._replace(number_inpatient=9, number_emergency=6, time_in_hospital=14)
    key = get_settings().pseudonym_key_bytes
    records = {
        name: scoring.pseudonymised(scoring.feed_records(pd.DataFrame([row])), key)
        for name, row in (("earlier", earlier), ("later", later))
    }
    earlier_rows = pd.DataFrame(serving.logged_rows(
        records["earlier"], [0.1], ["low"], "m:1", "2026-12-04T09:00:00+00:00"
    ))  # fmt: skip
    store = served_history.SqliteServedHistory(tmp_path / "history.sqlite")
    scoring.attach_served_history(model, f"sqlite://{tmp_path / 'history.sqlite'}")
    scorer = scoring.make_scorer(model)

    class RecordedRightAfterTheLookup:
        """The service's scorer, with monitoring recording the earlier encounter just after
        the history lookup (before the request logs its rows)."""

        def predict_proba_many(self, batch: list[dict[str, Any]]) -> np.ndarray:
            probabilities = scorer.predict_proba_many(batch)
            time.sleep(0.01)
            store.add(served_history.served_rows(earlier_rows))
            return probabilities

    try:
        p, at = serving.score_as_of_now(RecordedRightAfterTheLookup(), records["later"])

        now_seen = scorer.predict_proba_many(records["later"])  # the earlier encounter counts
    finally:
        scoring.history_step(model).attach(None)
    assert abs(now_seen[0] - p[0]) > 1e-6  # the recorded encounter does change this probability
    logged = served.rows_frame(serving.logged_rows(records["later"], list(p), ["low"], "m:1", at))
    rescored = windows.rescore(model, logged, store)
    assert rescored[0] == pytest.approx(p[0], abs=1e-12)


def test_each_row_is_re_scored_by_the_model_that_answered_it(
    tmp_path: Path, split: tuple[pd.DataFrame, pd.DataFrame], model: Any
) -> None:
    """A canary, a redeploy or a rollback puts rows of two models in one window: no skew. A row
    answered by a model monitoring cannot load still shows (re-scored by the default model)."""
    feed = split[1].drop(columns=["readmitted"]).iloc[:200]
    other = _small_model(data.exclude_died_or_hospice(split[0]).iloc[:4000])
    known = windows.AnsweringModels(model, {"m:1": model, "m:other": other}.__getitem__)
    for seq, (answering, tag) in enumerate(((model, "m:1"), (other, "m:other")), start=1):
        chunk, _ = _ship(str(tmp_path / "logs"), answering, feed, T0, seq, tag=tag)
        (piece,) = windows.split_chunk(chunk, served.read_chunk(chunk), HOUR, known, skew_rows=15)
        assert windows.skew_of(piece.served).ok is True, tag
    chunk, _ = _ship(str(tmp_path / "logs"), other, feed, T0, 3, tag="m:gone")
    (piece,) = windows.split_chunk(chunk, served.read_chunk(chunk), HOUR, known, skew_rows=15)
    skew = windows.skew_of(piece.served)
    assert skew.ok is False and skew.mismatched >= 14
