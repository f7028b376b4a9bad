"""The monitoring flow on served traffic: prediction-log chunks as the service ships them, cut
into windows; estimates before outcomes, realised performance after the outcomes feed brings
them; a bad outcomes file quarantined, a corrupt chunk set aside, another model caught by the
skew check. Nothing is lost and the rest is processed."""

from __future__ import annotations

import gzip
import importlib.util
import sys
from datetime import UTC, datetime, timedelta

import pandas as pd

from flows.monitoring import monitoring_flow
from flows.retraining import retraining_flow
from flows.training import training_flow
from readmit import data, layout, storage
from readmit.data import outcomes
from readmit.features import served_history
from readmit.layout import StoreLayout
from readmit.model import registry
from readmit.monitoring import drift, simulation, windows
from readmit.schema import INPUT_COLUMNS
from readmit.serving import prediction_log_uri
from readmit.serving.prediction_log import decode_chunk, encode_chunk
from readmit.settings import PROJECT_ROOT, get_settings


def _outcomes_csv(rows: pd.DataFrame, extra: list[tuple[int, str]]) -> bytes:
    """An outcomes file as the hospital sends it: encounter_id, readmitted."""
    pairs = zip(rows["encounter_id"], rows["readmitted"], strict=True)
    lines = [f"{int(e)},{r}" for e, r in pairs] + [f"{e},{r}" for e, r in extra]
    return ("encounter_id,readmitted\n" + "\n".join(lines) + "\n").encode()


def test_served_windows_from_estimate_to_realised(harness, fresh_settings, tmp_path, full_frame):
    period = data.in_time_order(full_frame).iloc[:24_000]
    known, unseen = data.split_by_patient(period, holdout_fraction=0.3, seed=5)
    training_csv = tmp_path / "training.csv"
    training_csv.write_bytes(data.to_csv_bytes(known))
    trained = training_flow(data_uri=str(training_csv), search_budget_s=6)
    registry.promote(trained["tag"], reason="test")
    loaded = registry.load_model()
    settings = get_settings()
    log_uri = prediction_log_uri(settings)
    now = datetime.now(UTC)
    served = drift.sample_batches(unseen, n_batches=3, batch_size=2500, seed=3)[:2]
    for i, rows in enumerate(served):  # two windows of served traffic, one hour apart
        simulation.ship_as_served(
            loaded.model, rows.drop(columns=["readmitted"]), log_uri,
            now - timedelta(hours=2 - i), model_tag=loaded.tag, threshold=0.2, seq=i + 1,
        )  # fmt: skip
    corrupt = f"{log_uri}/{layout.chunk_relpath(now - timedelta(hours=2), 'pod-x-w0-p1', 1)}"
    storage.write_bytes(corrupt, gzip.compress(b'{"timestamp": "2026')[:-6])

    first = monitoring_flow(cooldown_s=0)
    assert [w["served"] for w in first["windows"]] == [2500, 2500]
    for window in first["windows"]:
        assert window["estimated_auc"] is not None and window["band_90"] is not None
        assert window["realised_auc"] is None and window["label_coverage"] == 0
        assert window["skew_ok"] is True and window["models"] == loaded.tag
        assert window["severity"] in ("none", "minor"), window  # same period: no alarm
    assert not storage.exists(corrupt)
    assert storage.list_files(settings.layout.bad_chunks_dir(), "*/*.reason.json")

    inbox = settings.layout.outcomes_inbox()
    matured = pd.concat(served).drop_duplicates("encounter_id")  # the windows share patients
    first_id, first_outcome = int(matured["encounter_id"].iloc[0]), matured["readmitted"].iloc[0]
    conflicting = [(first_id, "NO" if first_outcome != "NO" else "<30")]
    storage.write_bytes(
        f"{inbox}/outcomes-01.csv",
        _outcomes_csv(matured, [*conflicting, (999_999_999, "NO")]),
    )
    storage.write_bytes(f"{inbox}/outcomes-02.csv", b"encounter_id,readmitted\n12,soon\n")
    second = monitoring_flow(cooldown_s=0)
    (report,) = second["outcomes"]
    # the torn encounter stores neither outcome; the unknown one is stored and counted
    assert report["accepted"] == len(matured) - 1 + 1
    assert report["conflicts"] == 2 and report["duplicates"] == 0
    assert report["unknown_encounters"] == 1
    assert outcomes.pending_drops(settings.artifacts_uri) == []
    assert storage.list_files(f"{settings.artifacts_uri}/quarantine", "*outcomes-outcomes-02*")
    assert [w["served"] for w in second["windows"]] == [2500, 2500]
    for window, rows in zip(second["windows"], served, strict=True):
        cohort = data.exclude_died_or_hospice(rows)
        keep = ~cohort["encounter_id"].isin([first_id])
        assert window["label_coverage"] == round(keep.sum() / len(cohort), 3)
        assert window["realised_auc"] is not None

    # the challenger learns from the champion's data + served encounters with matured outcomes
    retrained = retraining_flow(reason="test", search_budget_s=4, redeploy_service=False)
    challenger = registry.load_model(retrained["challenger"]).metadata["data"]
    assert challenger["rows"] > loaded.metadata["data"]["train_rows"] + 2000
    assert challenger["labelled_batches"] == 2  # the two served windows

    other = unseen[~unseen["encounter_id"].isin(pd.concat(served)["encounter_id"])].iloc[:1500]
    url, _ = simulation.ship_as_served(
        loaded.model,
        other.drop(columns=["readmitted"]),
        log_uri,
        now,
        model_tag="readmission:other",
        threshold=0.2,
        seq=9,
    )
    rows = decode_chunk(storage.read_bytes(url))
    for row in rows:
        row["probability"] = min(1.0, float(row["probability"]) * 1.3)  # another model answered
    storage.write_bytes(url, encode_chunk(rows))
    third = monitoring_flow(cooldown_s=0)
    (window,) = third["windows"]
    assert window["skew_ok"] is False and "readmission:other" in window["models"]


def test_reading_the_log_fans_out_on_dask_with_the_same_result(
    fresh_settings, tmp_path, full_frame
):
    """The chunks of a monitoring run read on a real LocalCluster (worker processes loading the
    model by tag) give the same pieces, skew re-scores and served history as in-process."""
    path = PROJECT_ROOT / "tests" / "service" / "service_helpers.py"
    name = "readmit_service_test_helpers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    period = data.in_time_order(full_frame).iloc[:12_000]
    known, unseen = data.split_by_patient(period, holdout_fraction=0.3, seed=2)
    model = sys.modules[name].small_model(data.exclude_died_or_hospice(known))
    tag = registry.save_model(
        model, {"threshold": 0.2, "label_definition": "<30", "metrics": {},
                "trained_at": "test", "feature_names": list(INPUT_COLUMNS)}, stage="candidate",
    )  # fmt: skip
    log_uri = str(tmp_path / "logs")
    t0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
    feed = unseen.drop(columns=["readmitted"])
    for i in range(3):
        simulation.ship_as_served(
            model, feed.iloc[i * 800 : (i + 1) * 800], log_uri, t0 + timedelta(minutes=40 * i),
            model_tag=tag, threshold=0.2, seq=i + 1,
        )  # fmt: skip
    results = {}
    for mode in ("in-process", "local"):
        store_uri = f"sqlite://{tmp_path / mode / 'served.sqlite'}"
        read, _ = windows.read_new_chunks(
            StoreLayout(str(tmp_path / mode)), log_uri, {}, model=model,
            window=timedelta(hours=1), grace=timedelta(minutes=10), skew_rows=5,
            store_uri=store_uri, dask_address=None if mode == "in-process" else "local",
            model_tag=tag,
        )  # fmt: skip
        served = pd.concat([p.served for p in read.pieces], ignore_index=True)
        results[mode] = (read.rows, [p.window for p in read.pieces], served, store_uri)
    (rows_a, wins_a, served_a, uri_a), (rows_b, wins_b, served_b, uri_b) = results.values()
    assert rows_a == rows_b == 2400 and wins_a == wins_b and len(wins_a) == 3
    pd.testing.assert_frame_equal(served_a, served_b)
    assert served_a["rescored"].notna().sum() == 15  # 5 per piece
    pkeys = list(served_a["patient_key"].dropna().unique())
    history_a = served_history.open_store(uri_a).entries(pkeys)
    history_b = served_history.open_store(uri_b).entries(pkeys)
    assert {k: [e[:2] for e in v] for k, v in history_a.items()} == {
        k: [e[:2] for e in v] for k, v in history_b.items()
    }
