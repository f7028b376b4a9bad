"""Serving benchmark: in-process limit, the bento over HTTP, adaptive batching on/off, the
FastAPI + joblib baseline, and a bounded 60 s load at concurrency 32. All on 127.0.0.1, bounded
in count and time. Client and server share the machine's cores (2 here): figures include that.

    python benchmarks/serving.py [--model-tag readmission:<v>] [--seconds 8] [--load-seconds 60]

Model: `--model-tag`, else the production model of the project's store, else (with a note) a
stand-in trained here on 30,000 rows with the project's feature pipeline. The last line printed
is one JSON object (p50_ms_c8, p99_ms_c8, rps_c8, fastapi_rps_c8, batch_rows_per_s,
inprocess_rows_per_s, load_errors, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from readmit import data, deploy, registry, serving
from readmit.schema import INPUT_COLUMNS
from readmit.settings import PROJECT_ROOT, get_settings

HERE = Path(__file__).resolve().parent


def encounter_rows(n: int, seed: int = 0) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Real encounters from the shipped data: the frame and its JSON request bodies."""
    frame = data.read_encounters(get_settings().data_uri).frame
    sample = frame.sample(n=n, random_state=seed).reset_index(drop=True)
    bodies = []
    for _, row in sample.iterrows():
        body = {
            c: (
                None
                if pd.isna(row[c])
                else (int(row[c]) if isinstance(row[c], np.integer) else row[c])
            )
            for c in INPUT_COLUMNS
        }
        body["patient_nbr"] = int(row["patient_nbr"])
        bodies.append(json.loads(json.dumps(body, default=int)))
    return sample, bodies


def stand_in_model() -> tuple[Any, dict[str, Any]]:
    """Feature pipeline + XGBoost on 30,000 rows, for when no model is registered."""
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    from readmit import features

    frame = data.exclude_died_or_hospice(data.read_encounters(get_settings().data_uri).frame)
    train = data.in_time_order(frame).iloc[:30_000]
    pipe = Pipeline(
        [
            ("history", features.PatientHistory(salt=get_settings().history_salt)),
            ("features", features.EncounterFeatures()),
            ("encode", features.FeatureEncoder()),
            ("model", XGBClassifier(n_estimators=300, max_depth=6, learning_rate=0.05, n_jobs=2)),
        ]
    )
    pipe.fit(train, features.make_label(train, "<30"))
    meta = {
        "threshold": 0.12,
        "label_definition": "<30",
        "metrics": {},
        "trained_at": "stand-in",
        "feature_names": list(INPUT_COLUMNS),
    }
    return pipe, meta


# --------------------------------------------------------------------------- in-process


def in_process(model: Any, frame: pd.DataFrame, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """The limit: predict_proba of the saved pipeline (1 row, 1,000-row batches), and the
    service's per-record scorer."""
    one = frame.iloc[[0]]
    model.predict_proba(one)
    times = []
    for i in range(60):
        row = frame.iloc[[i % len(frame)]]
        t = time.perf_counter()
        model.predict_proba(row)
        times.append(time.perf_counter() - t)
    batches, t0 = 0, time.perf_counter()
    while batches < 10:
        model.predict_proba(frame.iloc[(batches % 2) * 1000 : (batches % 2) * 1000 + 1000])
        batches += 1
    rows_per_s = 10_000 / (time.perf_counter() - t0)
    scorer = serving.make_scorer(model)
    records = [serving.encounter_record(serving.predict_request_model()(**b)) for b in bodies[:300]]
    scorer.predict_proba_one(records[0])
    st = []
    for r in records:
        t = time.perf_counter()
        scorer.predict_proba_one(r)
        st.append(time.perf_counter() - t)
    return {
        "inprocess_one_row_ms": round(1000 * float(np.median(times)), 3),
        "inprocess_rows_per_s": round(rows_per_s),
        "scorer": type(scorer).__name__,
        "scorer_one_record_ms": round(1000 * float(np.median(st)), 3),
    }


# --------------------------------------------------------------------------- HTTP load


async def _load(
    url: str, bodies: list[dict[str, Any]], concurrency: int, seconds: float, warmup_s: float = 1.0
) -> dict[str, Any]:
    """Closed-loop load: `concurrency` clients post bodies for `seconds` after a warm-up."""
    import aiohttp

    payloads = [json.dumps(b).encode() for b in bodies]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        measure_from, stop_at = start + warmup_s, start + warmup_s + seconds

        async def worker(k: int) -> None:
            i = k
            while (now := time.perf_counter()) < stop_at:
                try:
                    async with session.post(
                        url, data=payloads[i % len(payloads)], headers=headers
                    ) as resp:
                        await resp.read()
                        status = resp.status
                except aiohttp.ClientError as exc:
                    status = type(exc).__name__  # type: ignore[assignment]
                done = time.perf_counter()
                if now >= measure_from:
                    if status == 200:
                        latencies.append(done - now)
                    else:
                        errors[str(status)] = errors.get(str(status), 0) + 1
                i += concurrency

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    lat = np.asarray(latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
    }


def load(
    url: str, bodies: list[dict[str, Any]], concurrency: int, seconds: float
) -> dict[str, Any]:
    """Synchronous wrapper of the load generator."""
    return asyncio.run(_load(url, bodies, concurrency, seconds))


def batch_rows_per_s(url: str, bodies: list[dict[str, Any]], requests: int = 8) -> dict[str, Any]:
    """Rows per second through /predict_batch with 1,000-row requests (sequential)."""
    import httpx

    chunks = [bodies[i : i + 1000] for i in range(0, 2000, 1000)]
    with httpx.Client(timeout=120) as client:
        assert client.post(url, json={"encounters": chunks[0]}).status_code == 200  # warm-up
        t0 = time.perf_counter()
        for k in range(requests):
            resp = client.post(url, json={"encounters": chunks[k % 2]})
            assert resp.status_code == 200, resp.text[:300]
        elapsed = time.perf_counter() - t0
    return {
        "batch_rows_per_s": round(1000 * requests / elapsed),
        "batch_ms_per_1000": round(1000 * elapsed / requests, 1),
    }


# --------------------------------------------------------------------------- servers


def serve_bento(bento: str, run_dir: Path, env: dict[str, str]) -> tuple[int, str]:
    """Start the bento on a free port; returns (pid, base URL) once ready."""
    port = deploy.free_port()
    proc, _, log = deploy.start_server(bento, port, run_dir=run_dir, env=env)
    url = f"http://{deploy.HOST}:{port}"
    ok, reason = deploy.wait_ready(url, proc, 180)
    if not ok:
        deploy.stop_server(proc.pid)
        raise RuntimeError(f"bento not ready: {reason} ({log})")
    return proc.pid, url


def serve_fastapi(
    model_file: str, threshold: float, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the FastAPI baseline on a free port; returns (process, base URL) once healthy."""
    port = deploy.free_port()
    cmd = [
        sys.executable,
        str(HERE / "fastapi_baseline.py"),
        "--model-file",
        model_file,
        "--threshold",
        str(threshold),
        "--port",
        str(port),
    ]
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{deploy.HOST}:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if deploy.probe(f"{url}/healthz")[0] == 200:
            return proc, url
        if proc.poll() is not None:
            raise RuntimeError(f"baseline exited: see {log}")
        time.sleep(0.3)
    deploy.stop_server(proc.pid)
    raise RuntimeError("baseline did not start")


def bento_round(
    bento: str,
    run_dir: Path,
    bodies: list[dict[str, Any]],
    adaptive: bool,
    levels: list[int],
    seconds: float,
) -> tuple[dict[str, Any], str, int]:
    """Start the bento (adaptive batching on/off), measure single-record load at `levels`."""
    env = {
        "READMIT_ADAPTIVE_BATCHING": str(adaptive).lower(),
        "READMIT_PREDICTION_LOG_DIR": str(run_dir / f"plogs-{adaptive}"),
    }
    pid, url = serve_bento(bento, run_dir, env)
    out = {f"c{c}": load(f"{url}/predict", bodies, c, seconds) for c in levels}
    return out, url, pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-tag")
    parser.add_argument("--seconds", type=float, default=8.0, help="per load level")
    parser.add_argument("--load-seconds", type=float, default=60.0)
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    settings = get_settings()
    tag = args.model_tag or registry.production_tag(settings)
    note = "registered model"
    if tag is None:  # keep the stand-in out of the project's store
        home = tempfile.mkdtemp(prefix="readmit-bench-store-")
        os.environ["READMIT_BENTOML_HOME"] = os.environ["BENTOML_HOME"] = home
        get_settings.cache_clear()
        settings = get_settings()
        model, meta = stand_in_model()
        tag, note = registry.save_model(model, meta, stage="candidate"), "stand-in model"
    loaded = registry.load_model(tag, settings)
    print(f"model {tag} ({note}); scorer {type(serving.make_scorer(loaded.model)).__name__}")
    frame, bodies = encounter_rows(2000)
    results: dict[str, Any] = {"model_tag": tag, "model_note": note}
    results.update(in_process(loaded.model, frame, bodies))
    print(json.dumps(results))

    run_dir = Path(tempfile.mkdtemp(prefix="readmit-bench-"))
    bento = deploy.build_bento(tag, settings)
    model_file = str(
        Path(settings.bentoml_home) / "models" / tag.replace(":", "/") / "model.joblib"
    )
    pids: list[int] = []
    try:
        off, url, pid = bento_round(bento, run_dir, bodies, False, [1, 8, 32], args.seconds)
        pids.append(pid)
        results["bento"] = off
        results.update(batch_rows_per_s(f"{url}/predict_batch", bodies))
        print(json.dumps({"bento": off, "batch_rows_per_s": results["batch_rows_per_s"]}))
        deploy.stop_server(pid)
        on, _, pid = bento_round(bento, run_dir, bodies, True, [8, 32], args.seconds)
        pids.append(pid)
        results["bento_adaptive"] = on
        print(json.dumps({"bento_adaptive": on}))
        deploy.stop_server(pid)
        threshold = float(loaded.metadata.get("threshold", 0.5))
        proc, furl = serve_fastapi(model_file, threshold, run_dir / "fastapi.log")
        pids.append(proc.pid)
        results["fastapi"] = {
            f"c{c}": load(f"{furl}/predict", bodies, c, args.seconds) for c in (1, 8, 32)
        }
        print(json.dumps({"fastapi": results["fastapi"]}))
        deploy.stop_server(proc.pid)
        best_adaptive = on["c8"]["rps"] > off["c8"]["rps"] * 1.1 and on["c32"]["errors"] == 0
        results["adaptive_batching_chosen"] = best_adaptive
        pid, url = serve_bento(
            bento,
            run_dir,
            {
                "READMIT_ADAPTIVE_BATCHING": str(best_adaptive).lower(),
                "READMIT_PREDICTION_LOG_DIR": str(run_dir / "plogs-load"),
            },
        )
        pids.append(pid)
        results["load_60s_c32"] = load(f"{url}/predict", bodies, 32, args.load_seconds)
        print(json.dumps({"load_60s_c32": results["load_60s_c32"]}))
    finally:
        for pid in pids:
            if deploy.pid_alive(pid):
                deploy.stop_server(pid)
    chosen = results["bento_adaptive"] if results["adaptive_batching_chosen"] else results["bento"]
    summary = {
        "p50_ms_c8": chosen["c8"]["p50_ms"],
        "p99_ms_c8": chosen["c8"]["p99_ms"],
        "rps_c8": chosen["c8"]["rps"],
        "fastapi_rps_c8": results["fastapi"]["c8"]["rps"],
        "fastapi_p50_ms_c8": results["fastapi"]["c8"]["p50_ms"],
        "batch_rows_per_s": results["batch_rows_per_s"],
        "inprocess_rows_per_s": results["inprocess_rows_per_s"],
        "inprocess_one_row_ms": results["inprocess_one_row_ms"],
        "scorer_one_record_ms": results["scorer_one_record_ms"],
        "adaptive_rps_c8": results["bento_adaptive"]["c8"]["rps"],
        "no_adaptive_rps_c8": results["bento"]["c8"]["rps"],
        "adaptive_batching_chosen": results["adaptive_batching_chosen"],
        "load_requests": results["load_60s_c32"]["requests"],
        "load_errors": results["load_60s_c32"]["errors"],
        "scorer": results["scorer"],
        "model_note": note,
    }
    print(json.dumps(results, indent=1), file=sys.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT_ROOT))
    main()
