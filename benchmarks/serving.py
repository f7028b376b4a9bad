"""Serving benchmark: in-process limit, the bento over HTTP (1 and 2 workers, adaptive batching
on/off), BentoML's floor (a do-nothing endpoint, `noop_service.py`), the FastAPI + joblib
baseline, and a bounded 60 s load at concurrency 32. All on 127.0.0.1, bounded in count and
time. The load generator is `wrk` (C, one thread; apt package, installed by
deployments/local/install.sh); it still shares the machine's cores (2 here) with the server, and
the figures include that.

    python benchmarks/serving.py [--model-tag readmission:<v>] [--seconds 8] [--load-seconds 60]

Model: `--model-tag`, else the production model of the project's store, else (with a note) a
stand-in trained here on 30,000 rows with the project's feature pipeline. The last line printed
is one JSON object (p50_ms_c8, p99_ms_c8, rps_c8, fastapi_rps_c8, batch_rows_per_s,
inprocess_rows_per_s, load_errors, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from readmit import data, serving
from readmit.model import registry
from readmit.ops import deploy, processes
from readmit.schema import INPUT_COLUMNS
from readmit.serving import scoring
from readmit.settings import PROJECT_ROOT, get_settings

HERE = Path(__file__).resolve().parent
KEY = get_settings().pseudonym_key_bytes


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

    from readmit import features, pseudonyms

    key = get_settings().pseudonym_key_bytes
    frame = data.exclude_died_or_hospice(data.read_encounters(get_settings().data_uri).frame)
    train = pseudonyms.add_keys(data.in_time_order(frame).iloc[:30_000], key)
    pipe = Pipeline(
        [
            ("history", features.PatientHistory(pseudonyms.fingerprint(key))),
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
    scorer = scoring.make_scorer(model)
    records = [
        serving.encounter_record(serving.predict_request_model()(**b), KEY) for b in bodies[:300]
    ]
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

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {}
%(bodies)s
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "non2xx": %%d, "socket_errors": %%d, "duration_us": %%d, ' ..
    '"p50_us": %%d, "p95_us": %%d, "p99_us": %%d}\\n',
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def wrk_script(bodies: list[dict[str, Any]], folder: Path) -> Path:
    """A wrk Lua script that posts the given bodies round-robin and prints one JSON summary."""
    lines = "\n".join(f"table.insert(bodies, [==[{json.dumps(b)}]==])" for b in bodies[:200])
    path = folder / "post.lua"
    path.write_text(WRK_SCRIPT % {"bodies": lines})
    return path


def load(url: str, script: Path, concurrency: int, seconds: float) -> dict[str, Any]:
    """Closed-loop load with wrk (a C client: the Python client took a core from the server).

    `concurrency` connections post for `seconds` after a 1 s warm-up; non-2xx answers and
    socket errors (timeout 10 s) are errors.
    """
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: run deployments/local/install.sh (apt package wrk)")

    def run(duration: float) -> dict[str, Any]:
        seconds_arg = f"-d{max(1, round(duration))}s"
        cmd = ["wrk", "-t1", f"-c{concurrency}", seconds_arg, "--timeout", "10s"]
        out = subprocess.run(
            [*cmd, "-s", str(script), url], capture_output=True, text=True, check=True
        ).stdout
        line = next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))
        return dict(json.loads(line.removeprefix("WRKJSON ")))

    run(1)
    r = run(seconds)
    errors = r["non2xx"] + r["socket_errors"]
    return {
        "concurrency": concurrency,
        "requests": r["requests"],
        "errors": errors,
        "rps": round((r["requests"] - errors) / (r["duration_us"] / 1e6), 1),
        "p50_ms": round(r["p50_us"] / 1000, 2),
        "p95_ms": round(r["p95_us"] / 1000, 2),
        "p99_ms": round(r["p99_us"] / 1000, 2),
    }


def batch_rows_per_s(
    url: str, bodies: list[dict[str, Any]], clients: int = 1, seconds: float = 8.0
) -> dict[str, Any]:
    """Rows per second through /predict_batch with 1,000-row requests, `clients` at a time.

    Bodies are encoded once up front: the client's JSON encoding is not the server's cost.
    """
    import httpx

    payloads = [
        json.dumps({"encounters": bodies[i : i + 1000]}).encode() for i in range(0, 2000, 1000)
    ]
    headers = {"content-type": "application/json"}
    counts = [0] * clients

    def client(k: int, stop_at: float) -> None:
        with httpx.Client(timeout=120) as http:
            while time.perf_counter() < stop_at:
                resp = http.post(url, content=payloads[counts[k] % 2], headers=headers)
                assert resp.status_code == 200, resp.text[:300]
                counts[k] += 1

    client(0, time.perf_counter() + 1.0)  # warm-up
    counts[0] = 0
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k, t0 + seconds)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    return {
        "clients": clients,
        "rows_per_s": round(1000 * sum(counts) / elapsed),
        "ms_per_request": round(1000 * elapsed * clients / max(1, sum(counts)), 1),
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
        if processes.http_get(f"{url}/healthz")[0] == 200:
            return proc, url
        if proc.poll() is not None:
            raise RuntimeError(f"baseline exited: see {log}")
        time.sleep(0.3)
    deploy.stop_server(proc.pid)
    raise RuntimeError("baseline did not start")


def config_name(workers: int, adaptive: bool) -> str:
    """Key of a served configuration in the results, e.g. `workers2_adaptive_true`."""
    return f"workers{workers}_adaptive_{str(adaptive).lower()}"


def bento_env(run_dir: Path, workers: int, adaptive: bool) -> dict[str, str]:
    """The service settings of one configuration (its own prediction-log folder)."""
    return {
        "READMIT_SERVE_WORKERS": str(workers),
        "READMIT_ADAPTIVE_BATCHING": str(adaptive).lower(),
        "READMIT_PREDICTION_LOG_URI": str(run_dir / f"plogs-{config_name(workers, adaptive)}"),
    }


def bento_round(
    bento: str,
    run_dir: Path,
    script: Path,
    workers: int,
    adaptive: bool,
    levels: list[int],
    seconds: float,
) -> tuple[dict[str, Any], str, int]:
    """Start the bento with `workers` and adaptive batching on/off; load it at `levels`."""
    pid, url = serve_bento(bento, run_dir, bento_env(run_dir, workers, adaptive))
    out = {f"c{c}": load(f"{url}/predict", script, c, seconds) for c in levels}
    return out, url, pid


def choose(configs: dict[str, dict[str, Any]]) -> str:
    """The configuration with the lowest p50 at concurrency 8 among those without errors."""
    clean = [k for k, v in configs.items() if v["c8"]["errors"] == v["c32"]["errors"] == 0]
    return min(clean or configs, key=lambda k: configs[k]["c8"]["p50_ms"])


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
    print(f"model {tag} ({note}); scorer {type(scoring.make_scorer(loaded.model)).__name__}")
    frame, bodies = encounter_rows(2000)
    results: dict[str, Any] = {"model_tag": tag, "model_note": note}
    results.update(in_process(loaded.model, frame, bodies))
    print(json.dumps(results))

    run_dir = Path(tempfile.mkdtemp(prefix="readmit-bench-"))
    script = wrk_script(bodies, run_dir)
    bento = deploy.build_bento(tag, settings)
    model_file = str(
        Path(settings.bentoml_home) / "models" / tag.replace(":", "/") / "model.joblib"
    )
    pids: list[int] = []
    configs: dict[str, dict[str, Any]] = {}
    settings_of = {config_name(w, a): (w, a) for w in (1, 2) for a in (False, True)}
    try:
        for name, (workers, adaptive) in settings_of.items():
            out, url, pid = bento_round(
                bento, run_dir, script, workers, adaptive, [1, 8, 32], args.seconds
            )
            pids.append(pid)
            configs[name] = out
            print(json.dumps({name: out}))
            deploy.stop_server(pid)
        results["bento"] = configs
        floor: dict[str, Any] = {}
        for workers in (1, 2):  # BentoML's own cost: a /predict that does nothing
            env = {"READMIT_SERVE_WORKERS": str(workers)}
            pid, url = serve_bento("benchmarks.noop_service:Noop", run_dir, env)
            pids.append(pid)
            floor[f"workers{workers}"] = {
                f"c{c}": load(f"{url}/predict", script, c, args.seconds) for c in (1, 8)
            }
            deploy.stop_server(pid)
        results["noop_floor"] = floor
        print(json.dumps({"noop_floor": floor}))
        chosen = choose(configs)
        results["chosen"] = chosen
        workers, adaptive = settings_of[chosen]
        pid, url = serve_bento(bento, run_dir, bento_env(run_dir, workers, adaptive))
        pids.append(pid)
        results["batch"] = {
            f"clients{k}": batch_rows_per_s(f"{url}/predict_batch", bodies, k) for k in (1, 2)
        }
        results["batch_rows_per_s"] = max(b["rows_per_s"] for b in results["batch"].values())
        print(json.dumps({"chosen": chosen, "batch": results["batch"]}))
        results["load_60s_c32"] = load(f"{url}/predict", script, 32, args.load_seconds)
        print(json.dumps({"load_60s_c32": results["load_60s_c32"]}))
        deploy.stop_server(pid)
        threshold = float(loaded.metadata.get("threshold", 0.5))
        proc, furl = serve_fastapi(model_file, threshold, run_dir / "fastapi.log")
        pids.append(proc.pid)
        results["fastapi"] = {
            f"c{c}": load(f"{furl}/predict", script, c, args.seconds) for c in (1, 8, 32)
        }
        print(json.dumps({"fastapi": results["fastapi"]}))
        deploy.stop_server(proc.pid)
    finally:
        for pid in pids:
            if processes.alive(pid):
                deploy.stop_server(pid)
    best = configs[chosen]

    summary = {
        "p50_ms_c8": best["c8"]["p50_ms"],
        "p99_ms_c8": best["c8"]["p99_ms"],
        "rps_c8": best["c8"]["rps"],
        "fastapi_rps_c8": results["fastapi"]["c8"]["rps"],
        "fastapi_p50_ms_c8": results["fastapi"]["c8"]["p50_ms"],
        "batch_rows_per_s": results["batch_rows_per_s"],
        "batch_rows_per_s_by_clients": {k: v["rows_per_s"] for k, v in results["batch"].items()},
        "inprocess_rows_per_s": results["inprocess_rows_per_s"],
        "batch_share_of_inprocess": round(
            results["batch_rows_per_s"] / results["inprocess_rows_per_s"], 3
        ),
        "inprocess_one_row_ms": results["inprocess_one_row_ms"],
        "scorer_one_record_ms": results["scorer_one_record_ms"],
        "chosen": chosen,
        "adaptive_rps_c8": configs[config_name(workers, True)]["c8"]["rps"],
        "no_adaptive_rps_c8": configs[config_name(workers, False)]["c8"]["rps"],
        "p50_ms_c8_by_config": {k: v["c8"]["p50_ms"] for k, v in configs.items()},
        "noop_p50_ms_c8_by_workers": {k: v["c8"]["p50_ms"] for k, v in floor.items()},
        "noop_rps_c8_by_workers": {k: v["c8"]["rps"] for k, v in floor.items()},
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
