"""Live experiments on the real bento: two registered models packed into one bento
(`deploy.build_bento(..., experiment=spec)`), served by `bentoml serve`, over real HTTP.

Shadow: every answer is the champion's, every logged row carries both probabilities, each
equal to its model scored offline through the service's own scorer. Canary: the challenger
answers its sticky share of patients (the same patient gets the same model on /predict and
/predict_batch, request after request), each answer is its model's. A challenger that cannot be
loaded leaves the champion serving alone and says so. Stopping an experiment rolls the service
back to the champion-only bento under c8 load without a failed request.

Requests are raw feed rows (identifiers, every discharge disposition, patients the models never
saw and some they did, a few without a patient). Each experiment server runs one worker, so its
/model counters are the whole server's.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from service_helpers import READY_TIMEOUT_S, encounter_json, shipped_rows, small_model

from readmit import data, pseudonyms
from readmit.experiments.spec import ExperimentSpec, answering_variant
from readmit.model import registry
from readmit.ops import deploy, processes
from readmit.ops import experiments as live
from readmit.schema import INPUT_COLUMNS, OUTCOME_COLUMNS
from readmit.serving import example_encounter, scoring
from readmit.settings import get_settings

KEY = get_settings().pseudonym_key_bytes
CANARY_SHARE = 0.2
NO_PATIENT = 12  # rows sent without patient_nbr (the canary gives them to the champion)


def _load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


load = _load_module("readmit_drill_load", Path(__file__).resolve().parents[1] / "drills/load.py")


# --------------------------------------------------------------------------- models and rows


@pytest.fixture(scope="module")
def challenger_tag(train_frame: pd.DataFrame) -> str:
    """A second small model (deeper, more trees, another seed, its own threshold)."""
    model = small_model(train_frame, n_estimators=80, max_depth=4, random_state=1)
    metadata = {
        "threshold": 0.2,
        "label_definition": "<30",
        "metrics": {},
        "trained_at": "2026-12-01T00:00:00+00:00",
        "feature_names": list(INPUT_COLUMNS),
    }
    return registry.save_model(model, metadata, stage="candidate")


@pytest.fixture(scope="module")
def feed_rows(full_frame: pd.DataFrame, train_frame: pd.DataFrame) -> pd.DataFrame:
    """About 430 raw feed rows of distinct patients, none a training encounter: one of every
    discharge disposition, then later encounters (returning patients among them). The outcome
    column is dropped: it is never sent."""
    unseen = full_frame[~full_frame["encounter_id"].isin(train_frame["encounter_id"])]
    every_disposition = unseen.drop_duplicates("discharge_disposition_id")
    later = data.in_time_order(unseen).iloc[40_000:41_000]
    rows = pd.concat([every_disposition, later]).drop_duplicates("patient_nbr").head(430)
    assert set(rows["discharge_disposition_id"]) == set(full_frame["discharge_disposition_id"])
    return rows.drop(columns=list(OUTCOME_COLUMNS), errors="ignore").reset_index(drop=True)


def _bodies(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Request bodies: both identifiers, the last NO_PATIENT rows without patient_nbr."""
    out = []
    for i, (_, row) in enumerate(rows.iterrows()):
        body = encounter_json(row, with_patient=i < len(rows) - NO_PATIENT)
        out.append({**body, "encounter_id": int(row["encounter_id"])})
    return out


def _offline(tag: str, rows: pd.DataFrame) -> np.ndarray:
    """The rows as sent (`_bodies`), scored offline by the registered model through the
    service's own per-record scorer."""
    sent = rows.copy()
    sent["patient_nbr"] = sent["patient_nbr"].astype(object)
    sent.loc[sent.index[-NO_PATIENT:], "patient_nbr"] = None
    records = scoring.pseudonymised(scoring.feed_records(sent), KEY)
    model = registry.load_model(tag).model
    return np.asarray(scoring.make_scorer(model).predict_proba_many(records), dtype=float)


@pytest.fixture(scope="module")
def expected(
    feed_rows: pd.DataFrame, model_tag: str, challenger_tag: str
) -> dict[str, dict[int, float]]:
    """model tag -> encounter_id -> the probability it gives offline."""
    ids = feed_rows["encounter_id"].astype(int).tolist()
    return {
        tag: dict(zip(ids, _offline(tag, feed_rows).tolist(), strict=True))
        for tag in (model_tag, challenger_tag)
    }


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class ExperimentServer:
    url: str
    spec: ExperimentSpec
    bento_tag: str
    prediction_logs: Path


@pytest.fixture(scope="module")
def serve_experiment(run_root: Path, model_tag: str) -> Iterator[Any]:
    """Build a bento for a spec and serve it (one worker, own log and history store)."""
    pids: list[int] = []

    def start(spec: ExperimentSpec, bento: str | None = None, **extra_env: str) -> ExperimentServer:
        bento = bento or deploy.build_bento(model_tag, get_settings(), experiment=spec)
        folder = run_root / f"experiment-{spec.id}-{len(pids)}"
        env = {
            "READMIT_PREDICTION_LOG_URI": str(folder / "plogs"),
            "READMIT_HISTORY_STORE": f"sqlite://{folder / 'served_history.sqlite'}",
            "READMIT_SERVE_WORKERS": "1",
            "READMIT_LOG_FLUSH_SECONDS": "0.5",
            **extra_env,
        }
        port = deploy.free_port()
        proc, _, log_file = deploy.start_server(bento, port, run_dir=folder, env=env)
        pids.append(proc.pid)
        url = f"http://{deploy.HOST}:{port}"
        ok, reason = deploy.wait_ready(url, proc, READY_TIMEOUT_S)
        assert ok, f"{reason}\n{log_file.read_text(errors='replace')[-3000:]}"
        return ExperimentServer(url, spec, bento, folder / "plogs")

    yield start
    for pid in pids:
        deploy.stop_server(pid)


@pytest.fixture(scope="module")
def shadow(serve_experiment: Any, model_tag: str, challenger_tag: str) -> ExperimentServer:
    spec = ExperimentSpec("shadow-test", "shadow", model_tag, challenger_tag)
    return serve_experiment(spec)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def canary(serve_experiment: Any, model_tag: str, challenger_tag: str) -> ExperimentServer:
    spec = ExperimentSpec("canary-test", "canary", model_tag, challenger_tag, CANARY_SHARE)
    return serve_experiment(spec)  # type: ignore[no-any-return]


def _rows_logged(logs: Path, keys: set[str], timeout_s: float = 15.0) -> dict[str, dict]:
    """encounter_key -> the last shipped row of each of `keys` (waits for the flush)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = {r["encounter_key"]: r for r in shipped_rows(logs) if r["encounter_key"] in keys}
        if keys <= set(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


def _metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        sample = line.startswith(name + "{") or line.startswith(name + " ")
        if sample and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _ekey(encounter_id: int) -> str:
    return pseudonyms.pseudonym(KEY, "encounter_id", encounter_id)  # type: ignore[return-value]


# --------------------------------------------------------------------------- shadow


def test_shadow_answers_with_the_champion_and_logs_both_models(
    shadow: ExperimentServer,
    feed_rows: pd.DataFrame,
    expected: dict[str, dict[int, float]],
    model_tag: str,
    challenger_tag: str,
) -> None:
    bodies = _bodies(feed_rows)
    singles, batched = bodies[:300], bodies[300:]
    with httpx.Client(base_url=shadow.url, timeout=30) as client:
        answers = [client.post("/predict", json=b).json() for b in singles]
        batch = client.post("/predict_batch", json={"encounters": batched})
        assert batch.status_code == 200, batch.text
        model_info = client.get("/model").json()
        metrics = client.get("/metrics").text
    champion = expected[model_tag]
    for body, answer in zip(singles, answers, strict=True):
        assert answer["model_tag"] == model_tag and answer["threshold"] == pytest.approx(0.15)
        assert answer["probability"] == pytest.approx(champion[body["encounter_id"]], abs=1e-9)
    rows_out = batch.json()["predictions"]
    assert batch.json()["model_tag"] == model_tag
    assert {r["model_tag"] for r in rows_out} == {model_tag}
    got = [r["probability"] for r in rows_out]
    want = [champion[b["encounter_id"]] for b in batched]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)

    keys = {_ekey(b["encounter_id"]): b["encounter_id"] for b in bodies}
    logged = _rows_logged(shadow.prediction_logs, set(keys))
    assert set(logged) == set(keys), f"{len(set(keys) - set(logged))} rows not shipped"
    for key, row in logged.items():
        encounter = keys[key]
        assert row["experiment_id"] == "shadow-test" and row["variant"] == "champion"
        assert row["model_tag"] == model_tag
        assert row["probability"] == pytest.approx(champion[encounter], abs=1e-9)
        assert row["challenger_probability"] == pytest.approx(
            expected[challenger_tag][encounter], abs=1e-9
        )
    differ = sum(abs(expected[challenger_tag][e] - champion[e]) > 1e-3 for e in keys.values())
    assert differ > len(keys) / 2  # two different models, not one logged twice

    info = model_info["experiment"]
    assert info["id"] == "shadow-test" and info["mode"] == "shadow" and info["running"]
    assert (info["champion"], info["challenger"]) == (model_tag, challenger_tag)
    for variant, tag in (("champion", model_tag), ("challenger", challenger_tag)):
        stats = info["variants"][variant]
        assert stats["model_tag"] == tag and stats["requests"] == len(bodies)
        assert 0 < stats["latency_p50_ms"] <= stats["latency_p95_ms"] < 1000
        assert _metric(
            metrics, "readmit_variant_requests_total", variant=variant, model_tag=tag
        ) == len(bodies)
        # a scoring call per /predict (sequential: adaptive batching groups none) and the batch
        count = _metric(metrics, "readmit_variant_latency_seconds_count", variant=variant)
        assert 2 <= count <= len(singles) + 1
    assert (
        _metric(metrics, "readmit_experiment_challenger_ready", experiment_id="shadow-test") == 1.0
    )


# --------------------------------------------------------------------------- canary


def test_canary_answers_a_sticky_share_of_patients_with_the_challenger(
    canary: ExperimentServer,
    feed_rows: pd.DataFrame,
    expected: dict[str, dict[int, float]],
    model_tag: str,
    challenger_tag: str,
) -> None:
    bodies = _bodies(feed_rows)
    spec = canary.spec
    thresholds = {model_tag: 0.15, challenger_tag: 0.2}
    want_tag = {
        b["encounter_id"]: challenger_tag
        if answering_variant(spec, pseudonyms.pseudonym(KEY, "patient_nbr", b.get("patient_nbr")))
        == "challenger"
        else model_tag
        for b in bodies
    }
    with httpx.Client(base_url=canary.url, timeout=30) as client:
        first = {b["encounter_id"]: client.post("/predict", json=b).json() for b in bodies}
        again = {b["encounter_id"]: client.post("/predict", json=b).json() for b in bodies[::7]}
        shuffled = [bodies[i] for i in np.random.default_rng(0).permutation(len(bodies))]
        batched: dict[int, dict[str, Any]] = {}
        for start in range(0, len(shuffled), 100):
            part = shuffled[start : start + 100]
            resp = client.post("/predict_batch", json={"encounters": part})
            assert resp.status_code == 200, resp.text
            assert resp.json()["model_tag"] == model_tag  # the batch's: the champion's
            for body, row in zip(part, resp.json()["predictions"], strict=True):
                batched[body["encounter_id"]] = row
        model_info = client.get("/model").json()
        metrics = client.get("/metrics").text

    with_patient = [b for b in bodies if "patient_nbr" in b]
    n, k = (
        len(with_patient),
        sum(want_tag[b["encounter_id"]] == challenger_tag for b in with_patient),
    )
    tolerance = 4 * math.sqrt(n * CANARY_SHARE * (1 - CANARY_SHARE))
    assert n >= 400 and abs(k - n * CANARY_SHARE) <= tolerance, (k, n)
    for encounter, answer in first.items():
        tag = want_tag[encounter]  # the patient's variant, from the spec's rule alone
        assert answer["model_tag"] == tag, encounter
        assert answer["threshold"] == pytest.approx(thresholds[tag])
        assert answer["probability"] == pytest.approx(expected[tag][encounter], abs=1e-9)
        assert answer["risk"] == ("high" if answer["probability"] >= thresholds[tag] else "low")
        assert batched[encounter]["model_tag"] == tag  # the same on /predict_batch ...
        assert batched[encounter]["probability"] == pytest.approx(answer["probability"], abs=1e-9)
        assert batched[encounter]["risk"] == answer["risk"]
    for encounter, answer in again.items():  # ... and request after request
        assert answer["model_tag"] == first[encounter]["model_tag"]
    assert all(want_tag[b["encounter_id"]] == model_tag for b in bodies[-NO_PATIENT:])

    keys = {_ekey(e): e for e in first}
    logged = _rows_logged(canary.prediction_logs, set(keys))
    assert set(logged) == set(keys)
    for key, row in logged.items():
        tag = want_tag[keys[key]]
        assert row["experiment_id"] == "canary-test" and row["model_tag"] == tag
        assert row["variant"] == ("challenger" if tag == challenger_tag else "champion")
        assert row["challenger_probability"] is None

    served = len(first) + len(again) + len(batched)
    by_tag = {tag: sum(want_tag[e] == tag for e in first) for tag in thresholds}
    again_by_tag = {tag: sum(want_tag[e] == tag for e in again) for tag in thresholds}
    info = model_info["experiment"]
    assert info["mode"] == "canary" and info["running"]
    assert info["canary_share"] == pytest.approx(CANARY_SHARE)
    for variant, tag in (("champion", model_tag), ("challenger", challenger_tag)):
        requests = 2 * by_tag[tag] + again_by_tag[tag]  # /predict, the batches, the repeats
        assert info["variants"][variant]["requests"] == requests
        assert info["variants"][variant]["latency_p95_ms"] is not None
        counted = _metric(metrics, "readmit_variant_requests_total", variant=variant, model_tag=tag)
        assert counted == requests
        assert _metric(metrics, "readmit_variant_latency_seconds_count", variant=variant) > 0
    assert sum(info["variants"][v]["requests"] for v in ("champion", "challenger")) == served


# --------------------------------------------------------------------------- challenger unusable


def test_a_challenger_that_cannot_be_loaded_leaves_the_champion_serving_alone(
    serve_experiment: Any,
    train_frame: pd.DataFrame,
    feed_rows: pd.DataFrame,
    expected: dict[str, dict[int, float]],
    model_tag: str,
) -> None:
    """A challenger keyed with another pseudonym key is refused at load, as a champion would
    be: the service is ready with the champion alone, and /model, /metrics and the log say so."""
    other_key = small_model(train_frame, key=b"another hospital's key", random_state=2)
    metadata = {
        "threshold": 0.2,
        "label_definition": "<30",
        "metrics": {},
        "trained_at": "2026-12-02T00:00:00+00:00",
        "feature_names": list(INPUT_COLUMNS),
    }
    unusable = registry.save_model(other_key, metadata, stage="candidate")
    server = serve_experiment(ExperimentSpec("broken-test", "canary", model_tag, unusable, 0.5))
    bodies = _bodies(feed_rows)[:60]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/readyz").status_code == 200
        answers = [client.post("/predict", json=b).json() for b in bodies]
        info = client.get("/model").json()["experiment"]
        metrics = client.get("/metrics").text
    for body, answer in zip(bodies, answers, strict=True):
        assert answer["model_tag"] == model_tag
        assert answer["probability"] == pytest.approx(
            expected[model_tag][body["encounter_id"]], abs=1e-9
        )
    assert info["running"] is False and info["challenger"] == unusable
    assert "KeyMismatchError" in info["reason"] and unusable in info["reason"]
    assert _metric(metrics, "readmit_experiment_challenger_ready", challenger_tag=unusable) == 0
    assert _metric(metrics, "readmit_variant_requests_total") == 0
    keys = {_ekey(b["encounter_id"]) for b in bodies}
    logged = _rows_logged(server.prediction_logs, keys)
    assert set(logged) == keys
    assert {(r["experiment_id"], r["variant"]) for r in logged.values()} == {(None, None)}


def test_an_experiment_whose_challenger_became_the_champion_serves_the_champion_alone(
    serve_experiment: Any, shadow: ExperimentServer, challenger_tag: str
) -> None:
    """READMIT_MODEL_TAG overrides the packed champion with the experiment's challenger: the
    arguments no longer make an experiment, and the service says so instead of failing."""
    server = serve_experiment(shadow.spec, shadow.bento_tag, READMIT_MODEL_TAG=challenger_tag)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.post("/predict", json=example_encounter()).json()
        info = client.get("/model").json()
        metrics = client.get("/metrics").text
    assert answer["model_tag"] == challenger_tag and info["model_tag"] == challenger_tag
    experiment = info["experiment"]
    assert experiment["id"] == "shadow-test" and experiment["running"] is False
    assert "the challenger is the champion" in experiment["reason"]
    assert experiment["mode"] == "shadow" and experiment["variants"] == {}
    assert _metric(metrics, "readmit_experiment_challenger_ready", experiment_id="shadow-test") == 0


# --------------------------------------------------------------------------- stopping


def test_stopping_an_experiment_under_c8_load_fails_no_request(
    shadow: ExperimentServer,
    bento_tag: str,
    run_root: Path,
    feed_rows: pd.DataFrame,
) -> None:
    """Start (experiment bento) and stop (the champion-only bento) through the blue/green
    redeploy; the stop happens under c8 load from clients that follow the live server."""
    run_dir, base = run_root / "experiment-rollout", deploy.free_port()
    started = live.start_experiment(
        shadow.spec, bento_tag=shadow.bento_tag, containerize_image=False, run_dir=run_dir,
        base_port=base, ready_timeout_s=READY_TIMEOUT_S,
    )  # fmt: skip
    try:
        assert started["experiment"]["running"] and started["experiment"]["id"] == "shadow-test"
        assert started["model_tag"] == shadow.spec.champion
        assert live.running_experiment(run_dir) == shadow.spec

        def live_url() -> str:
            current = deploy.read_state(run_dir)
            assert current is not None
            return current.url

        result = load.run_load(
            live_url,
            lambda: live.stop_experiment(
                bento_tag=bento_tag,
                containerize_image=False,
                run_dir=run_dir,
                base_port=base,
                ready_timeout_s=READY_TIMEOUT_S,
            ),
            bodies=_bodies(feed_rows),
            clients=8,
            before_s=1.0,
            after_s=2.0,
        )
        stopped = result.value
        print("experiment stop under c8 load:", result.summary())
        assert stopped is not None and stopped["stopped_experiment"] == "shadow-test"
        assert result.failed == 0, (result.codes, result.errors)
        assert result.ok > 100, result.summary()
        assert result.by_url[started["url"]] > 0 and result.by_url[stopped["url"]] > 0
        assert not processes.alive(started["pid"])
        assert stopped["experiment"] is None and stopped["bento_tag"] == bento_tag
        assert live.running_experiment(run_dir) is None
        status, body = processes.http_get(f"{stopped['url']}/model")
        assert status == 200 and json.loads(body)["experiment"] is None
    finally:
        deploy.stop(run_dir)
