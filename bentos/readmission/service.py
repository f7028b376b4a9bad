"""BentoML adapter of the readmission model: loads it once, calls `readmit.serving`.

Endpoints: POST /predict, POST /predict_batch, GET /model, plus BentoML's /healthz, /livez,
/readyz and /metrics. Build configuration lives in `bentofile.yaml` beside this file only.

Which model: `READMIT_MODEL_TAG` if set, else the model packed into the bento at build time
(`bentoml build --arg model_tag=...`, what `readmit.ops.deploy` does), else the registry's
production model. With none usable the service still starts; /readyz and the API answer 503
with the reason.

A live experiment (`readmit.experiments.spec`): a bento built with the experiment's arguments
(`--arg experiment_id=... challenger_tag=...`, `readmit.ops.deploy.build_bento(...,
experiment=spec)`) packs the challenger too and serves both (`readmit.serving.experiment`:
shadow or canary). A challenger that cannot be loaded leaves the champion serving alone, ready:
the log says so, `readmit_experiment_challenger_ready` is 0 and /model shows the reason.

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
from readmit.experiments.spec import ExperimentSpec
from readmit.model import registry
from readmit.serving import experiment, prediction_log, runtime, scoring
from readmit.settings import get_settings

logger = logging.getLogger("readmit.service")

SETTINGS = get_settings()
KEY = SETTINGS.pseudonym_key_bytes  # pseudonyms of patients and encounters: readmit.pseudonyms
runtime.install_timeout_fix()  # before BentoML builds the app: see serving_runtime
EncounterRequest = serving.predict_request_model()
BatchRequest = serving.batch_request_model(SETTINGS.max_batch_size)
PACKED_MODEL_TAG: str | None = getattr(bentoml.use_arguments(), "model_tag", None) or None
BENTO_ARGS: dict[str, Any] = dict(vars(bentoml.use_arguments()))
CHALLENGER_TAG: str | None = BENTO_ARGS.get("challenger_tag") or None  # a live experiment's

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
    # None outside an experiment: BentoML packs only Model attributes (as for packed_model).
    challenger_model = bentoml.models.BentoModel(CHALLENGER_TAG) if CHALLENGER_TAG else None
    experiment_reason: str | None  # why the experiment's challenger is not served (None: it is)

    def _attach_served_history(self, loaded: registry.LoadedModel) -> None:
        """Served encounters count in a returning patient's history (monitoring records them);
        an unusable store is logged and the model's own history is used."""
        try:
            scoring.attach_served_history(loaded.model, SETTINGS.history_store_uri)
        except Exception as exc:
            logger.error(
                "served-history store unusable (%r): only the model's own patient history is used",
                exc,
            )

    def _load(self, tag: str | None) -> tuple[registry.LoadedModel, experiment.ServedModel]:
        """A model ready to serve: verified, keyed like this service, self-checked, with the
        served-history store attached. Champion and challenger are loaded the same way."""
        loaded = registry.load_model(tag)
        scoring.require_model_key(loaded.model, KEY)
        threshold = float(loaded.metadata["threshold"])
        scorer = scoring.make_scorer(scoring.single_threaded(loaded.model))
        # Self-check: a model that cannot score the example encounter is not usable.
        scorer.predict_proba_one(serving.example_encounter())
        self._attach_served_history(loaded)
        return loaded, experiment.ServedModel(loaded.tag, scorer, threshold)

    def _start_experiment(self, champion: experiment.ServedModel) -> experiment.Variants:
        """The models this worker serves: the champion, and the challenger of the experiment
        the bento was built for. A challenger that cannot be loaded (or invalid experiment
        arguments) leaves the champion serving alone and ready: logged, on /metrics
        (`readmit_experiment_challenger_ready` 0) and on /model (`experiment.reason`)."""
        variants = experiment.Variants(
            champion, on_scored=self._observe_variant, on_error=self._variant_failed
        )
        if not BENTO_ARGS.get("experiment_id"):
            return variants
        ready = self.metrics.challenger_ready.labels(
            experiment_id=str(BENTO_ARGS["experiment_id"]), challenger_tag=str(CHALLENGER_TAG)
        )
        try:
            spec = ExperimentSpec.from_bento_args(BENTO_ARGS, champion.tag)
            if spec is None:
                raise ValueError("the bento's experiment arguments name no experiment")
            variants.spec = spec
            _, variants.challenger = self._load(spec.challenger)
        except Exception as exc:  # the champion still serves: say why the challenger does not
            self.experiment_reason = f"challenger {CHALLENGER_TAG} is not usable: {exc!r}"
            logger.error(
                "experiment %s: %s; %s serves alone, outside the experiment",
                BENTO_ARGS["experiment_id"],
                self.experiment_reason,
                champion.tag,
            )
            ready.set(0)
            return variants
        ready.set(1)
        logger.info(
            "experiment %s (%s, canary share %s): champion %s, challenger %s",
            spec.id,
            spec.mode,
            spec.canary_share,
            champion.tag,
            spec.challenger,
        )
        return variants

    def _observe_variant(self, variant: str, model_tag: str, records: int, seconds: float) -> None:
        """A scoring call of an experiment's model: /metrics and this worker's own counters."""
        self.metrics.variant_requests.labels(variant=variant, model_tag=model_tag).inc(records)
        self.metrics.variant_latency.labels(variant=variant).observe(seconds)
        self.variant_stats.record(variant, records, seconds)

    def _variant_failed(self, variant: str, model_tag: str, exc: BaseException) -> None:
        """A challenger that failed to score: counted, logged (first and every 100th)."""
        self.metrics.variant_errors.labels(variant=variant).inc()
        self.variant_failures += 1
        if self.variant_failures == 1 or self.variant_failures % 100 == 0:
            logger.error(
                "the %s %s failed to score (%d failures so far; the champion answered): %r",
                variant,
                model_tag,
                self.variant_failures,
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
        self.variants: experiment.Variants | None = None  # champion (and challenger): who answers
        self.variant_stats = experiment.VariantStats()  # this worker's counters, for /model
        self.variant_failures = 0
        self.experiment_reason = None
        wanted = SETTINGS.model_tag or PACKED_MODEL_TAG
        try:
            self.loaded, champion = self._load(wanted)
            self.threshold, self.scorer = champion.threshold, champion.scorer
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
        self.variants = self._start_experiment(champion)
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

    def _score_group(self, records: list[dict[str, Any]]) -> list[experiment.Answers]:
        """A group of /predict calls, scored as of one instant (split by variant in a canary):
        each call's answer, with the logged time."""
        if self.variants is None:  # the API answers 503 before dispatching without a model
            raise RuntimeError("no model is loaded")
        return self.variants.score(records).split()

    def _log(
        self, endpoint: str, records: list[dict[str, Any]], answers: experiment.Answers
    ) -> None:
        """Metrics, and the prediction log (queued, then shipped: serving.prediction_log)."""
        probs, risks, tags = answers.probabilities, answers.risks, answers.model_tags
        serving.observe_predictions(self.metrics, endpoint, probs, risks)
        if not SETTINGS.prediction_log_enabled:  # benchmarking only: monitoring sees nothing
            return  # (bentoml.monitor is a no-op then too: serving.monitoring_config)
        # The monitor is looked up once: a `with bentoml.monitor(...)` costs ~50 us a call.
        if self.prediction_monitor is None:
            with bentoml.monitor(serving.MONITOR_NAME) as mon:  # as BentoML's config selects it
                self.prediction_monitor = mon
        monitor = self.prediction_monitor
        if isinstance(monitor, prediction_log.ShippingMonitor):  # one call, not one per column
            rows = serving.log_rows(records, probs, risks, tags, answers.experiment)
            monitor.log_rows(rows, answers.at)
            return
        with bentoml.monitor(serving.MONITOR_NAME) as mon:  # any other backend: column by column
            for name, role, kind, values in serving.log_columns(
                records, probs, risks, tags, answers.experiment
            ):
                mon.log_batch(values, name, role, kind)

    def _unavailable(self) -> JSONResponse:
        reason = self.not_ready_reason or "no model"
        return JSONResponse(serving.error_body(f"service not ready: {reason}"), status_code=503)

    @bentoml.api(route="/predict")
    async def predict(self, encounter: EncounterRequest, /) -> serving.Prediction:  # type: ignore[valid-type]
        """Score one encounter (the data set's field names; null = missing)."""
        if self.variants is None or self.loaded is None:
            return self._unavailable()  # type: ignore[return-value]
        record = serving.encounter_record(encounter, KEY)
        if self.dispatch is not None:
            answers: experiment.Answers = await self.dispatch(record)
        else:
            answers = self.variants.score([record])
        self._log("predict", [record], answers)
        return serving.Prediction(
            probability=answers.probabilities[0],
            risk=answers.risks[0],  # type: ignore[arg-type]
            in_cohort=data.record_in_cohort(record),
            threshold=answers.thresholds[0],
            model_tag=answers.model_tags[0],  # the model that answered (a canary has two)
        )

    @bentoml.api(route="/predict_batch")
    def predict_batch(self, request: BatchRequest, /) -> serving.BatchPrediction:  # type: ignore[valid-type]
        """Score up to `max_batch_size` encounters (settings; 1,000 by default) in one call."""
        if self.variants is None or self.loaded is None:
            return self._unavailable()  # type: ignore[return-value]
        records = [serving.encounter_record(e, KEY) for e in request.encounters]  # type: ignore[attr-defined]
        answers = self.variants.score(records)  # a canary splits the batch by variant
        self._log("predict_batch", records, answers)
        per_row = answers.experiment is not None  # during an experiment each row names its model
        return serving.BatchPrediction(
            model_tag=self.loaded.tag,
            threshold=self.threshold,
            count=len(answers),
            predictions=[
                serving.RowPrediction(
                    probability=p,
                    risk=r,  # type: ignore[arg-type]
                    in_cohort=data.record_in_cohort(record),
                    model_tag=tag if per_row else None,
                )
                for p, r, tag, record in zip(
                    answers.probabilities, answers.risks, answers.model_tags, records, strict=True
                )
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
            manifest_sha256=self.loaded.manifest_sha256,
            experiment=self._experiment_info(),
        )

    def _experiment_info(self) -> serving.ExperimentInfo | None:
        """The experiment the bento was built for, as this worker serves it (None without)."""
        if self.variants is None:
            return None
        if self.variants.spec is None:
            if not BENTO_ARGS.get("experiment_id"):
                return None
            return serving.ExperimentInfo(  # arguments that do not make an experiment
                id=str(BENTO_ARGS["experiment_id"]),
                mode=str(BENTO_ARGS.get("experiment_mode")),
                canary_share=None,
                champion=self.variants.champion.tag,
                challenger=str(CHALLENGER_TAG),
                running=False,
                reason=self.experiment_reason,
            )
        return experiment.experiment_info(
            self.variants.spec, self.variants, self.variant_stats, self.experiment_reason
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
