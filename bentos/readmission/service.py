"""BentoML adapter of the readmission model: loads it once, calls `readmit.serving`.

Endpoints: POST /predict, POST /predict_batch, GET /model, plus BentoML's /healthz, /livez,
/readyz and /metrics. Build configuration lives in `bentofile.yaml` beside this file only.

Which model: `READMIT_MODEL_TAG` if set, else the model packed into the bento at build time
(`bentoml build --arg model_tag=...`, what `readmit.ops.deploy` does), else the registry's
production model. With none usable the service still starts; /readyz and the API answer 503
with the reason.

Settings are read when this module is imported, because the OpenAPI schema publishes the batch
limit and BentoML takes worker and monitoring config from the class decorator. Nothing else
happens at import: the model is loaded in `__init__`, inside the worker.
"""

from __future__ import annotations

import logging
from typing import Any

import bentoml
from fastapi import FastAPI
from starlette.responses import JSONResponse

from readmit import data, pseudonyms, serving
from readmit.model import registry
from readmit.serving import prediction_log, runtime, scoring
from readmit.settings import get_settings

logger = logging.getLogger("readmit.service")

SETTINGS = get_settings()
KEY = SETTINGS.pseudonym_key_bytes  # pseudonyms of patients and encounters: readmit.pseudonyms
runtime.install_timeout_fix()  # before BentoML builds the app: see serving_runtime
EncounterRequest = serving.predict_request_model()
BatchRequest = serving.batch_request_model(SETTINGS.max_batch_size)
PACKED_MODEL_TAG: str | None = getattr(bentoml.use_arguments(), "model_tag", None) or None

model_app = FastAPI(title="readmission model info")


@bentoml.asgi_app(model_app, path="/")
@bentoml.service(
    name="readmission",
    description="30-day readmission risk of diabetic inpatient encounters.",
    workers=SETTINGS.serve_workers,
    traffic={"timeout": 60},
    metrics={"enabled": True},
    monitoring=serving.monitoring_config(SETTINGS),
)
class Readmission:
    """Scores encounters with one model, loaded once per worker."""

    packed_model = bentoml.models.BentoModel(PACKED_MODEL_TAG) if PACKED_MODEL_TAG else None

    def _attach_served_history(self) -> None:
        """Served encounters count in a returning patient's history (monitoring records them);
        an unusable store is logged and the model's own history is used."""
        assert self.loaded is not None
        try:
            scoring.attach_served_history(self.loaded.model, SETTINGS.history_store_uri)
        except Exception as exc:
            logger.error(
                "served-history store unusable (%r): only the model's own patient history is used",
                exc,
            )

    def __init__(self) -> None:
        serving.hide_rejected_input()
        self.metrics = serving.service_metrics()
        prediction_log.add_loss_listener(self.metrics.log_rows_lost.inc)
        prediction_log.add_failure_listener(lambda _: self.metrics.log_ship_failures.inc())
        prediction_log.add_queued_listener(self.metrics.log_rows_queued.set)
        self.loaded: registry.LoadedModel | None = None
        self.scorer: scoring.Scorer | None = None
        self.threshold = 0.5
        self.not_ready_reason: str | None = None
        self.dispatch: Any = None
        self.prediction_monitor: Any = None  # this worker's prediction-log monitor (`_log`)
        wanted = SETTINGS.model_tag or PACKED_MODEL_TAG
        try:
            self.loaded = registry.load_model(wanted)
            scoring.require_model_key(self.loaded.model, KEY)
            self.threshold = float(self.loaded.metadata["threshold"])
            self.scorer = scoring.make_scorer(scoring.single_threaded(self.loaded.model))
            # Self-check: a model that cannot score the example encounter is not usable.
            self.scorer.predict_proba_one(serving.example_encounter())
            self._attach_served_history()
        except (registry.NoModelError, pseudonyms.KeyMismatchError) as exc:
            self.not_ready_reason = str(exc)
        except Exception as exc:  # any unusable model: keep serving health, say why
            self.not_ready_reason = f"model {wanted or 'production'} is not usable: {exc!r}"
        if self.not_ready_reason:
            logger.error("no usable model: %s", self.not_ready_reason)
            self.metrics.model_ready.set(0)
            return
        assert self.loaded is not None
        meta = self.loaded.metadata
        self.metrics.model_info.labels(
            model_tag=self.loaded.tag,
            stage=self.loaded.stage,
            label_definition=str(meta.get("label_definition")),
            trained_at=str(meta.get("trained_at")),
        ).set(1)
        self.metrics.model_ready.set(1)
        if SETTINGS.adaptive_batching:
            self.dispatch = serving.make_dispatcher(self._score_group)
        runtime.settle_heap()
        logger.info(
            "serving %s with %s (threshold %.4f)",
            self.loaded.tag,
            type(self.scorer).__name__,
            self.threshold,
        )

    @bentoml.on_shutdown
    def ship_queued_prediction_logs(self) -> None:
        """Prediction-log rows are queued in memory (readmit.serving.prediction_log): ship them."""
        prediction_log.close_all()

    def __is_ready__(self) -> bool:
        return self.not_ready_reason is None

    def _score_group(self, records: list[dict[str, Any]]) -> list[tuple[float, str]]:
        """A group of /predict calls, scored as of one instant: (probability, logged time)."""
        assert self.scorer is not None
        probabilities, at = serving.score_as_of_now(self.scorer, records)
        return [(float(p), at) for p in probabilities]

    def _log(
        self,
        endpoint: str,
        records: list[dict[str, Any]],
        probs: list[float],
        risks: list[str],
        at: str,
    ) -> None:
        """Metrics, and the prediction log (queued, then shipped: serving.prediction_log)."""
        assert self.loaded is not None
        serving.observe_predictions(self.metrics, endpoint, probs, risks)
        if not SETTINGS.prediction_log_enabled:  # benchmarking only: monitoring sees nothing
            return  # (bentoml.monitor is a no-op then too: serving.monitoring_config)
        # The monitor is looked up once: a `with bentoml.monitor(...)` costs ~50 us a call.
        if self.prediction_monitor is None:
            with bentoml.monitor(serving.MONITOR_NAME) as mon:  # as BentoML's config selects it
                self.prediction_monitor = mon
        monitor = self.prediction_monitor
        if isinstance(monitor, prediction_log.ShippingMonitor):  # one call, not one per column
            monitor.log_rows(serving.log_rows(records, probs, risks, self.loaded.tag), at)
            return
        with bentoml.monitor(serving.MONITOR_NAME) as mon:  # any other backend: column by column
            for name, role, kind, values in serving.log_columns(
                records, probs, risks, self.loaded.tag
            ):
                mon.log_batch(values, name, role, kind)

    def _unavailable(self) -> JSONResponse:
        reason = self.not_ready_reason or "no model"
        return JSONResponse(serving.error_body(f"service not ready: {reason}"), status_code=503)

    @bentoml.api(route="/predict")
    async def predict(self, encounter: EncounterRequest, /) -> serving.Prediction:  # type: ignore[valid-type]
        """Score one encounter (the data set's field names; null = missing)."""
        if self.scorer is None or self.loaded is None:
            return self._unavailable()  # type: ignore[return-value]
        record = serving.encounter_record(encounter, KEY)
        if self.dispatch is not None:
            probability, at = await self.dispatch(record)
        else:
            scored, at = serving.score_as_of_now(self.scorer, [record])
            probability = float(scored[0])
        probs, risks = serving.predictions([probability], self.threshold)
        self._log("predict", [record], probs, risks, at)
        return serving.Prediction(
            probability=probs[0],
            risk=risks[0],
            in_cohort=data.record_in_cohort(record),
            threshold=self.threshold,  # type: ignore[arg-type]
            model_tag=self.loaded.tag,
        )

    @bentoml.api(route="/predict_batch")
    def predict_batch(self, request: BatchRequest, /) -> serving.BatchPrediction:  # type: ignore[valid-type]
        """Score up to `max_batch_size` encounters (settings; 1,000 by default) in one call."""
        if self.scorer is None or self.loaded is None:
            return self._unavailable()  # type: ignore[return-value]
        records = [serving.encounter_record(e, KEY) for e in request.encounters]  # type: ignore[attr-defined]
        scored, at = serving.score_as_of_now(self.scorer, records)
        probs, risks = serving.predictions(scored, self.threshold)
        self._log("predict_batch", records, probs, risks, at)
        return serving.BatchPrediction(
            model_tag=self.loaded.tag,
            threshold=self.threshold,
            count=len(probs),
            predictions=[
                serving.RowPrediction(
                    probability=p,
                    risk=r,  # type: ignore[arg-type]
                    in_cohort=data.record_in_cohort(record),
                )
                for p, r, record in zip(probs, risks, records, strict=True)
            ],
        )

    @model_app.get("/model", response_model=serving.ModelInfo)
    def model_info(self) -> serving.ModelInfo | JSONResponse:
        """The served model: version, holdout metrics, trained-at time, label definition."""
        if self.loaded is None:
            return self._unavailable()
        meta = self.loaded.metadata
        return serving.ModelInfo(
            model_tag=self.loaded.tag,
            stage=self.loaded.stage,
            label_definition=meta.get("label_definition"),
            threshold=self.threshold,
            trained_at=meta.get("trained_at"),
            metrics=meta.get("metrics") or {},
            feature_names=meta.get("feature_names"),
            scorer=type(self.scorer).__name__,
        )


def _not_ready_reason() -> str | None:
    """Readiness of this worker's service instance (None = ready)."""
    try:
        instance = bentoml.get_current_service()
    except bentoml.exceptions.BentoMLException:
        return "the service is starting"
    return instance.not_ready_reason  # type: ignore[no-any-return]


def _count_invalid(path: str, problems: Any) -> None:
    try:
        counter = serving.service_metrics().invalid_requests
    except Exception:  # metrics must never turn a 4xx into a 500
        return
    for problem in problems or [{"problem": "invalid"}]:
        counter.labels(endpoint=path.strip("/"), problem=problem["problem"]).inc()


# Every route but BentoML's infrastructure is gated (503 while not ready); the JSON-body checks
# (413/415, error rewriting) apply to every @bentoml.api route, read from the service itself:
# an endpoint added later cannot bypass the guard.
API_PATHS = tuple(api.route for api in Readmission.apis.values())
Readmission.add_asgi_middleware(
    serving.RequestGuard,
    body_paths=API_PATHS,
    max_body_bytes=SETTINGS.max_request_bytes,
    not_ready_reason=_not_ready_reason,
    on_invalid=_count_invalid,
)
