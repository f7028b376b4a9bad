"""The predecessor's serving design, kept as a baseline: plain FastAPI + joblib.

One request = one encounter; the app builds a one-row DataFrame and runs the same fitted
pipeline's `predict_proba` (no per-record fast path, no batching, no monitoring).

    python benchmarks/fastapi_baseline.py --model-file <store>/models/readmission/<v>/model.joblib
"""

from __future__ import annotations

import argparse
from typing import Any

import joblib
import pandas as pd
from fastapi import FastAPI

from readmit.data import coerce_types
from readmit.serving import predict_request_model

Encounter = predict_request_model()  # the same request contract as the bento


def create_app(model_file: str, threshold: float = 0.5) -> FastAPI:
    """FastAPI app scoring one encounter per request through a DataFrame."""
    model = joblib.load(model_file)
    app = FastAPI(title="readmission baseline (FastAPI + joblib)")

    @app.post("/predict")
    def predict(encounter: Encounter) -> dict[str, Any]:  # type: ignore[valid-type]
        record = encounter.model_dump(by_alias=True)  # type: ignore[attr-defined]
        frame = coerce_types(pd.DataFrame([record]))
        probability = float(model.predict_proba(frame)[0, 1])
        return {"probability": probability, "risk": "high" if probability >= threshold else "low"}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    """Serve the baseline with uvicorn on 127.0.0.1."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-file", required=True)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--port", type=int, default=3900)
    args = parser.parse_args()
    app = create_app(args.model_file, args.threshold)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
