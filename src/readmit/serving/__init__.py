"""Pure helpers of the HTTP service: request models, request -> record, scoring, error bodies,
Prometheus metrics, prediction-log columns, and the ASGI guard in front of the API.

`bentos/readmission/service.py` only wires these to BentoML. Everything here can be unit-tested
without a server. No function here logs or returns a patient or encounter identifier.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from readmit import pseudonyms
from readmit.experiments.spec import CHALLENGER_PROBABILITY, EXPERIMENT_ID, LOG_COLUMNS, VARIANT
from readmit.features.history import as_of
from readmit.schema import (
    COLUMN_BY_NAME,
    ID_COLUMNS,
    INPUT_COLUMNS,
    OUTCOME_COLUMNS,
    Kind,
    encounter_model,
)
from readmit.serving.prediction_log import TIME_COLUMN, utc_now
from readmit.serving.scoring import risk_labels
from readmit.settings import Settings

T = TypeVar("T")

MONITOR_NAME = "readmission_predictions"
"""Folder (under the prediction log dir) that bentoml.monitor writes `data/*.log` JSON lines to."""
MAX_IDENTIFIER = 2**53
"""Largest accepted identifier: exact in float64, which pandas may pass ids through."""
PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Seconds of one scoring call of a model (the fast path scores a record in about 0.3 ms)."""

# --------------------------------------------------------------------------- request / response


def _identifier_field(name: str) -> tuple[Any, Any]:
    """An optional identifier: a whole JSON number from 1 to 2**53, nothing looser.

    Strict on purpose: "123", 123.0 or -5 get a 4xx naming the field, because an identifier
    that a client coerced is the sign of a broken feed, and a wrong key silently loses history.
    """
    return (
        int | None,
        Field(
            default=None,
            ge=1,
            le=MAX_IDENTIFIER,
            strict=True,
            description=f"Optional `{name}` of the feed row. Only used, keyed, to look the "
            "patient up in the history store; never logged, returned or counted.",
        ),
    )


@cache
def predict_request_model() -> type[BaseModel]:
    """One feed row as sent to /predict: the data contract plus the optional identifiers.

    The encounter fields come from `schema.encounter_model()` (the same definitions as the GX
    suite); only `encounter_id` and `patient_nbr` are added here. An outcome column is refused
    with a message that says where outcomes belong (`problems_from_errors`).
    """
    return create_model(
        "EncounterRequest",
        __base__=encounter_model(),
        **{name: _identifier_field(name) for name in ID_COLUMNS},  # type: ignore[call-overload]
    )


@cache
def batch_request_model(max_batch_size: int) -> type[BaseModel]:
    """Body of /predict_batch: `{"encounters": [...]}` with 1 to `max_batch_size` items.

    An object (not a bare list) so that malformed JSON is rejected by pydantic's own parser as
    a 400, and so the body can grow fields later without breaking clients.
    """
    item = predict_request_model()
    return create_model(
        "BatchRequest",
        __config__=ConfigDict(extra="forbid"),
        encounters=(
            list[item],  # type: ignore[valid-type]
            Field(
                min_length=1,
                max_length=max_batch_size,
                description=f"1 to {max_batch_size} encounters, scored in order.",
            ),
        ),
    )


IN_COHORT_DOC = (
    "False when the encounter ended in death or hospice (discharge_disposition_id 11, 13, 14, "
    "19, 20, 21): the model was not trained on such encounters and readmission is not expected; "
    "the probability is given for completeness only."
)


class Prediction(BaseModel):
    """Result for one encounter."""

    probability: float = Field(description="Predicted probability of the label (e.g. <30 days).")
    risk: Literal["high", "low"] = Field(description="'high' at or above the model threshold.")
    in_cohort: bool = Field(description=IN_COHORT_DOC)
    threshold: float = Field(description="The model's operating threshold.")
    model_tag: str


class RowPrediction(BaseModel):
    """Result for one encounter of a batch (model and threshold are given once per batch)."""

    probability: float
    risk: Literal["high", "low"]
    in_cohort: bool = Field(description=IN_COHORT_DOC)
    model_tag: str | None = Field(
        default=None,
        description="During a live experiment, the model that answered this encounter (a "
        "canary answers a share of patients with the challenger, at its own threshold; the "
        "batch's `model_tag` and `threshold` are the champion's); null otherwise.",
    )


class BatchPrediction(BaseModel):
    """Results of /predict_batch, in request order."""

    model_tag: str
    threshold: float
    count: int
    predictions: list[RowPrediction]


class VariantInfo(BaseModel):
    """One model of a live experiment, as this worker served it."""

    model_tag: str
    requests: int = Field(
        description="Encounters this worker scored with the model (a batch counts each; in "
        "shadow mode the challenger scores every encounter without answering)."
    )
    latency_p50_ms: float | None = Field(
        description="Median time the model took to score one call (a /predict, an adaptive "
        "batch or a batch's share), over this worker's recent calls."
    )
    latency_p95_ms: float | None


class ExperimentInfo(BaseModel):
    """The live experiment the service was built for (`readmit.experiments.spec`)."""

    id: str
    mode: str = Field(description="shadow or canary (as built, when the arguments are invalid).")
    canary_share: float | None = Field(
        description="Share of patients the challenger answers (canary)."
    )
    champion: str
    challenger: str
    running: bool = Field(
        description="False when the challenger could not be loaded: the champion then serves "
        "alone and the rows are logged without the experiment."
    )
    reason: str | None = Field(default=None, description="Why the challenger is not served.")
    variants: dict[str, VariantInfo] = Field(default_factory=dict)


class ModelInfo(BaseModel):
    """What GET /model says about the served model."""

    model_tag: str
    stage: str
    label_definition: str | None
    threshold: float
    trained_at: str | None
    metrics: dict[str, Any]
    feature_names: list[str] | None = None
    scorer: str = Field(description="FrameScorer (batch pipeline) or the per-record fast path.")
    manifest_sha256: str | None = Field(
        default=None,
        description="Digest of the served model's signed manifest (`readmit.model.signing`), "
        "verified at load: what an approval and the audit log name.",
    )
    experiment: ExperimentInfo | None = Field(
        default=None, description="The live experiment (shadow or canary), null without one."
    )


# --------------------------------------------------------------------------- records and scoring


def encounter_record(request: BaseModel, key: bytes) -> dict[str, Any]:
    """Request model -> record keyed by the data set's names (None = missing, like `?`), its
    identifiers pseudonymised on arrival (`readmit.pseudonyms`): nothing after this line sees
    a raw `patient_nbr` or `encounter_id`."""
    return pseudonyms.pseudonymise_record(request.model_dump(by_alias=True), key)


ADAPTIVE_MAX_BATCH = 64
ADAPTIVE_MAX_LATENCY_MS = 5000
"""High on purpose: BentoML's dispatcher answers 503 past it; a closed-loop client backs off."""


def make_dispatcher(
    score_group: Callable[[list[dict[str, Any]]], Sequence[T]],
    max_batch_size: int = ADAPTIVE_MAX_BATCH,
    max_latency_ms: int = ADAPTIVE_MAX_LATENCY_MS,
) -> Callable[[dict[str, Any]], Awaitable[T]]:
    """BentoML's adaptive batching (its CorkDispatcher) in front of single-record scoring.

    Concurrent /predict calls are grouped and scored in one `predict_proba_many`, while the
    HTTP contract stays one encounter per request. A call the dispatcher cannot serve within
    `max_latency_ms` gets BentoML's 503 ("process is overloaded").
    """
    from bentoml._internal.marshal.dispatcher import CorkDispatcher
    from bentoml.exceptions import ServiceUnavailable

    def overloaded() -> float:
        raise ServiceUnavailable("process is overloaded")

    dispatcher: Any = CorkDispatcher(
        max_latency_in_ms=max_latency_ms,
        max_batch_size=max_batch_size,
        fallback=overloaded,
        get_batch_size=lambda _record: 1,
    )

    async def score(records: Sequence[dict[str, Any]]) -> Sequence[T]:
        return score_group(list(records))

    return dispatcher(score)  # type: ignore[return-value]


def score_as_of_now(scorer: Any, records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, str]:
    """Probabilities of `records` with the served history as of one instant, and that instant
    (ISO UTC) to log with their rows.

    The log's time is the view the service scored with: monitoring may record served encounters
    while a request is scored, and the skew check re-scores a logged row as of its logged time,
    so a row is only comparable if the service saw exactly what was recorded before that time.
    """
    at = utc_now()
    with as_of(at.timestamp()):
        probabilities = scorer.predict_proba_many(records)
    return np.asarray(probabilities, dtype=np.float64), at.isoformat(timespec="microseconds")


def predictions(probabilities: np.ndarray, threshold: float) -> tuple[list[float], list[str]]:
    """Plain-Python probabilities and risk labels (JSON-ready)."""
    risks = risk_labels(np.asarray(probabilities, dtype=float), threshold)
    return [float(p) for p in probabilities], [str(r) for r in risks]


def example_encounter() -> dict[str, Any]:
    """A valid encounter (data-set names) derived from the schema: docs, curl and self-check."""
    realistic = {
        "age": "[70-80)",
        "gender": "Female",
        "race": "Caucasian",
        "admission_type_id": 1,
        "discharge_disposition_id": 1,
        "admission_source_id": 7,
        "time_in_hospital": 4,
        "num_lab_procedures": 45,
        "num_procedures": 1,
        "num_medications": 16,
        "number_diagnoses": 9,
        "diag_1": "428",
        "diag_2": "250.01",
        "diag_3": "401",
        "max_glu_serum": "None",
        "A1Cresult": ">8",
        "insulin": "Up",
        "change": "Ch",
        "diabetesMed": "Yes",
    }
    out: dict[str, Any] = {}
    for name in INPUT_COLUMNS:
        column = COLUMN_BY_NAME[name]
        if name in realistic:
            out[name] = realistic[name]
        elif column.nullable:
            out[name] = None
        elif column.values is not None:
            out[name] = "No" if "No" in column.values else column.values[0]
        else:
            out[name] = column.min_value
    return out


# --------------------------------------------------------------------------- errors

_PROBLEMS = {
    "missing": "missing required field",
    "extra_forbidden": "unknown field",
    "literal_error": "unknown category",
    "enum": "unknown category",
    "int_parsing": "wrong type: expected an integer",
    "int_type": "wrong type: expected an integer",
    "int_from_float": "wrong type: expected a whole number",
    "string_type": "wrong type: expected a string",
    "float_type": "wrong type: expected a number",
    "bool_type": "wrong type: expected a boolean",
    "model_type": "wrong type: expected a JSON object",
    "model_attributes_type": "wrong type: expected a JSON object",
    "dict_type": "wrong type: expected a JSON object",
    "list_type": "wrong type: expected a list",
    "greater_than_equal": "out of range",
    "less_than_equal": "out of range",
    "greater_than": "out of range",
    "less_than": "out of range",
    "string_pattern_mismatch": "invalid format",
    "json_invalid": "malformed JSON",
    "json_type": "malformed JSON",
    "too_short": "empty batch",
    "too_long": "batch over the limit",
}


def field_path(loc: Iterable[Any]) -> str:
    """pydantic `loc` -> `encounters[3].age` (`(body)` for the request body as a whole)."""
    out = ""
    for part in loc:
        if part in ("root", "body") and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(body)"


OUTCOME_PROBLEM = "outcome not accepted"
OUTCOME_MESSAGE = (
    "outcomes are not known at prediction time: send them with the training data or the "
    "outcomes feed, never in a scoring request"
)


def problems_from_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """pydantic error dicts -> `[{"field", "problem", "message"}]`, input values left out.

    Input values are never echoed: a wrong `patient_nbr` must not come back in an error. An
    outcome column (`readmitted`) is named as such, with where outcomes belong.
    """
    problems = []
    for err in errors:
        kind = str(err.get("type", "invalid"))
        problem = _PROBLEMS.get(kind, kind.replace("_", " "))
        message = str(err.get("msg", problem))
        loc = tuple(err.get("loc", ()))
        if kind == "extra_forbidden" and loc and loc[-1] in OUTCOME_COLUMNS:
            problem, message = OUTCOME_PROBLEM, OUTCOME_MESSAGE
        problems.append(
            {"field": field_path(err.get("loc", ())), "problem": problem, "message": message}
        )
    return problems


def error_body(error: str, problems: Sequence[Mapping[str, str]] = ()) -> dict[str, Any]:
    """The one shape of every error the service returns."""
    return {"error": error, "problems": list(problems)}


def summarise_problems(problems: Sequence[Mapping[str, str]]) -> str:
    """One line naming each field and its problem."""
    parts = [f"{p['field']}: {p['problem']}" for p in problems[:10]]
    more = f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""
    return "invalid request: " + "; ".join(parts) + more


def rewrite_error(status: int, body: bytes) -> dict[str, Any]:
    """BentoML's own 4xx body (pydantic errors or `[{"error": ...}]`) -> our error shape."""
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        parsed = {}
    if isinstance(parsed, list):
        parsed = parsed[0] if parsed and isinstance(parsed[0], dict) else {}
    details = parsed.get("detail") if isinstance(parsed, dict) else None
    if isinstance(details, list) and details:
        problems = problems_from_errors(d for d in details if isinstance(d, dict))
        return error_body(summarise_problems(problems), problems)
    message = parsed.get("error") if isinstance(parsed, dict) else None
    return error_body(str(message or f"bad request (HTTP {status})"))


class HideRejectedInput(logging.Filter):
    """Drop the traceback BentoML logs for a rejected request: it quotes the input values.

    pydantic's error text carries `input_value=...`, which can hold a `patient_nbr` or an
    `encounter_id` a client sent. The client gets field and problem; the log keeps one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record, without exception text for validation/JSON errors."""
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__name__ in ("ValidationError", "JSONDecodeError"):
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = f"{record.msg} (rejected input: {type(exc).__name__}; values not logged)"
        return True


BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"


def hide_rejected_input() -> None:
    """Install `HideRejectedInput` on the logger of BentoML request exceptions (idempotent)."""
    logger = logging.getLogger(BENTOML_ERROR_LOGGER)
    if not any(isinstance(f, HideRejectedInput) for f in logger.filters):
        logger.addFilter(HideRejectedInput())


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class ServiceMetrics:
    """Our Prometheus metrics, next to BentoML's request metrics on /metrics."""

    predictions: Any  # Counter{risk, endpoint}
    probability: Any  # Histogram{endpoint}
    model_info: Any  # Gauge{model_tag, stage, label_definition, trained_at} = 1
    model_ready: Any  # Gauge = 1 when a model is loaded
    invalid_requests: Any  # Counter{endpoint, problem}
    log_rows_lost: Any  # Counter: prediction-log rows dropped (the store refused them too long)
    log_ship_failures: Any  # Counter: prediction-log chunks the store refused (rows kept queued)
    log_rows_queued: Any  # Gauge (summed over live workers): prediction-log rows not yet shipped
    variant_requests: Any  # Counter{variant, model_tag}: encounters scored per experiment variant
    variant_latency: Any  # Histogram{variant}: seconds per scoring call of a variant's model
    variant_errors: Any  # Counter{variant}: scoring calls of a variant that failed (challenger)
    challenger_ready: Any  # Gauge{experiment_id, challenger_tag}: 1 challenger loaded, else 0


@cache
def service_metrics() -> ServiceMetrics:
    """Create the metrics once per process, inside the worker.

    prometheus_client must be imported after BentoML sets PROMETHEUS_MULTIPROC_DIR in the worker,
    so this is called from the service's __init__, never at import. `Info` does not work in
    multiprocess mode, so the model version is a gauge whose labels carry the information.
    """
    import prometheus_client as prom

    return ServiceMetrics(
        predictions=prom.Counter(
            "readmit_predictions", "Encounters scored, by risk label.", ["risk", "endpoint"]
        ),
        probability=prom.Histogram(
            "readmit_prediction_probability",
            "Predicted probabilities.",
            ["endpoint"],
            buckets=PROBABILITY_BUCKETS,
        ),
        model_info=prom.Gauge(
            "readmit_model_info",
            "Served model (value 1; the labels carry the version).",
            ["model_tag", "stage", "label_definition", "trained_at"],
            multiprocess_mode="max",
        ),
        model_ready=prom.Gauge(
            "readmit_model_ready", "1 when a usable model is loaded.", multiprocess_mode="min"
        ),
        invalid_requests=prom.Counter(
            "readmit_invalid_requests", "Rejected requests, by problem.", ["endpoint", "problem"]
        ),
        log_rows_lost=prom.Counter(
            "readmit_prediction_log_rows_lost",
            "Prediction-log rows dropped because the store refused them beyond the queue limit.",
        ),
        log_ship_failures=prom.Counter(
            "readmit_prediction_log_ship_failures",
            "Prediction-log chunks the store refused (full disk, S3 outage); their rows stay "
            "queued and are retried.",
        ),
        log_rows_queued=prom.Gauge(
            "readmit_prediction_log_queued_rows",
            "Prediction-log rows waiting to be shipped after the last attempt (live workers).",
            multiprocess_mode="livesum",
        ),
        variant_requests=prom.Counter(
            "readmit_variant_requests",
            "Encounters scored by each model of a live experiment (shadow: both score all).",
            ["variant", "model_tag"],
        ),
        variant_latency=prom.Histogram(
            "readmit_variant_latency_seconds",
            "Time a live experiment's model took per scoring call.",
            ["variant"],
            buckets=LATENCY_BUCKETS,
        ),
        variant_errors=prom.Counter(
            "readmit_variant_errors",
            "Scoring calls of a live experiment's challenger that failed (the champion answered).",
            ["variant"],
        ),
        challenger_ready=prom.Gauge(
            "readmit_experiment_challenger_ready",
            "1 when the live experiment's challenger is loaded, 0 when the champion serves alone.",
            ["experiment_id", "challenger_tag"],
            multiprocess_mode="min",
        ),
    )


def observe_predictions(
    metrics: ServiceMetrics, endpoint: str, probabilities: Sequence[float], risks: Sequence[str]
) -> None:
    """Count predictions by risk label and add probabilities to the histogram."""
    for risk in ("high", "low"):
        n = sum(1 for r in risks if r == risk)
        if n:
            metrics.predictions.labels(risk=risk, endpoint=endpoint).inc(n)
    histogram = metrics.probability.labels(endpoint=endpoint)
    for p in probabilities:
        histogram.observe(p)


# --------------------------------------------------------------------------- prediction logs


def prediction_log_uri(settings: Settings) -> str:
    """Where the service ships prediction-log chunks: the setting, else the artifact store."""
    return settings.prediction_log_uri or settings.layout.prediction_logs()


def monitoring_config(settings: Settings) -> dict[str, Any]:
    """The service's `monitoring=` config: the shipping prediction log, or, with
    `settings.prediction_log_enabled` off, BentoML's monitoring disabled (`bentoml.monitor`
    then hands out its NoOpMonitor: nothing is queued, shipped or written, requests are
    answered as usual)."""
    if not settings.prediction_log_enabled:
        return {"enabled": False}
    return {
        "enabled": True,
        "type": "readmit.serving.prediction_log.ShippingMonitor",
        "options": {
            "store_uri": prediction_log_uri(settings),
            "flush_seconds": settings.log_flush_seconds,
        },
    }


def _monitor_type(name: str) -> str:
    kind = COLUMN_BY_NAME[name].kind
    return (
        "numerical" if kind is Kind.INT and COLUMN_BY_NAME[name].values is None else ("categorical")
    )


LOGGED_FEATURES: tuple[str, ...] = tuple(c for c in INPUT_COLUMNS if c not in ID_COLUMNS)
LOGGED_FROM_RECORD: tuple[str, ...] = (*pseudonyms.KEY_COLUMNS, *LOGGED_FEATURES)
"""What a prediction-log row takes from a (pseudonymised) record, in this order."""
PREDICTION_COLUMNS = ("probability", "risk", "model_tag")
EXPERIMENT_LOG_COLUMNS = LOG_COLUMNS
"""After the prediction: the live experiment's id, the answering variant and (shadow) the
challenger's probability (`readmit.experiments.spec.LOG_COLUMNS`); None outside an experiment."""


@dataclass(frozen=True)
class ExperimentLog:
    """Per row (in record order), what a live experiment adds to the prediction log."""

    experiment_ids: Sequence[str | None]
    variants: Sequence[str | None]
    challenger_probabilities: Sequence[float | None]


def log_rows(
    records: Sequence[Mapping[str, Any]],
    probabilities: Sequence[float],
    risks: Sequence[str],
    model_tag: str | Sequence[str],
    experiment: ExperimentLog | None = None,
) -> list[dict[str, Any]]:
    """The prediction-log rows of these answers, one per record: the pseudonyms, the features,
    the prediction, then the experiment's columns (the monitor adds the time).

    Only the pseudonyms and the contract's input features are taken from the (pseudonymised)
    records, so a raw identifier, or anything else a record might carry, can never reach the
    log. The pseudonyms join outcomes to these rows later (`readmit.pseudonyms`). `model_tag`
    is one tag, or one per record (a canary answers with two models); without `experiment`
    the experiment columns are None.
    """
    n = len(records)
    tags = [model_tag] * n if isinstance(model_tag, str) else model_tag
    if experiment is None:
        ids: Sequence[Any] = [None] * n
        variants, challenger = ids, ids
    else:
        ids, variants = experiment.experiment_ids, experiment.variants
        challenger = experiment.challenger_probabilities
    rows = []
    for record, probability, risk, tag, eid, variant, other in zip(
        records, probabilities, risks, tags, ids, variants, challenger, strict=True
    ):
        row = {name: record.get(name) for name in LOGGED_FROM_RECORD}
        row["probability"], row["risk"], row["model_tag"] = probability, risk, tag
        row[EXPERIMENT_ID], row[VARIANT], row[CHALLENGER_PROBABILITY] = eid, variant, other
        rows.append(row)
    return rows


def log_columns(
    records: Sequence[Mapping[str, Any]],
    probabilities: Sequence[float],
    risks: Sequence[str],
    model_tag: str | Sequence[str],
    experiment: ExperimentLog | None = None,
) -> list[tuple[str, str, str, list[Any]]]:
    """The same rows (`log_rows`) as columns for `bentoml.monitor`'s column API:
    (name, role, type, values)."""
    rows = log_rows(records, probabilities, risks, model_tag, experiment)
    cols = [
        (name, "feature", "categorical", [row[name] for row in rows])
        for name in pseudonyms.KEY_COLUMNS
    ]
    cols += [
        (name, "feature", _monitor_type(name), [row[name] for row in rows])
        for name in LOGGED_FEATURES
    ]
    kinds = {
        "probability": "numerical",
        "risk": "categorical",
        "model_tag": "categorical",
        EXPERIMENT_ID: "categorical",
        VARIANT: "categorical",
        CHALLENGER_PROBABILITY: "numerical",
    }
    cols += [
        (name, "prediction", kinds[name], [row[name] for row in rows])
        for name in (*PREDICTION_COLUMNS, *EXPERIMENT_LOG_COLUMNS)
    ]
    return cols


def logged_rows(
    records: Sequence[Mapping[str, Any]],
    probabilities: Sequence[float],
    risks: Sequence[str],
    model_tag: str | Sequence[str],
    at: str,
    experiment: ExperimentLog | None = None,
) -> list[dict[str, Any]]:
    """The prediction-log rows the service writes for these answers (`log_rows`), stamped
    `at` (ISO UTC): what replays, benchmarks and tests ship when they stand in for the service."""
    rows = log_rows(records, probabilities, risks, model_tag, experiment)
    return [{**row, TIME_COLUMN: at} for row in rows]


# --------------------------------------------------------------------------- ASGI guard

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def send_json(send: Send, status: int, body: Mapping[str, Any]) -> None:
    """Send a complete JSON response."""
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


OPEN_PATHS = frozenset(
    {
        "/",
        "/healthz",
        "/livez",
        "/metrics",
        "/docs.json",
        "/schema.json",
        "/docs",
        "/openapi.json",
        "/redoc",
    }
)
"""BentoML's and FastAPI's own infrastructure routes: never gated (health, metrics, docs)."""
OPEN_PREFIXES = ("/static_content/", "/docs/")


class RequestGuard:
    """ASGI middleware in front of every route that is not infrastructure (`OPEN_PATHS`).

    Why: BentoML answers malformed input with its own shapes (and a bare 500 for some), has no
    body size limit and a fixed readiness message. This guard gives every rejection one JSON
    shape naming field and problem, a 413 above `max_body_bytes`, a 415 for non-JSON bodies,
    and a 503 with the reason while no model is usable (on /readyz and the API routes).
    """

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        *,
        body_paths: Iterable[str],
        max_body_bytes: int,
        not_ready_reason: Callable[[], str | None],
        on_invalid: Callable[[str, Sequence[Mapping[str, str]]], None] | None = None,
        readyz_path: str = "/readyz",
    ) -> None:
        self.app = app
        self.body_paths = frozenset(body_paths)
        self.max_body_bytes = max_body_bytes
        self.not_ready_reason = not_ready_reason
        self.on_invalid = on_invalid
        self.readyz_path = readyz_path

    def gated(self, path: str) -> bool:
        """True for every route but the infrastructure ones: a new endpoint is gated by default."""
        return path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or (path != self.readyz_path and not self.gated(path)):
            return await self.app(scope, receive, send)
        reason = self.not_ready_reason()
        if path == self.readyz_path:
            if reason:
                return await send_json(send, 503, {"ready": False, "reason": reason})
            return await self.app(scope, receive, send)
        if reason:
            return await send_json(send, 503, error_body(f"service not ready: {reason}"))
        if path not in self.body_paths or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        return await self._guard_body(path, scope, receive, send)

    async def _reject(self, send: Send, path: str, status: int, problem: str, msg: str) -> None:
        problems = [{"field": "(body)", "problem": problem, "message": msg}]
        if self.on_invalid:
            self.on_invalid(path, problems)
        await send_json(send, status, error_body(f"invalid request: {msg}", problems))

    async def _guard_body(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        media = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if media not in (b"application/json", b""):
            msg = f"content type {media.decode(errors='replace')!r}: send application/json"
            return await self._reject(send, path, 415, "unsupported media type", msg)
        declared = headers.get(b"content-length", b"")
        too_big = f"body over the limit of {self.max_body_bytes} bytes"
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._reject(send, path, 413, "body too large", too_big)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await self._reject(send, path, 413, "body too large", too_big)
            chunks.append(chunk)
            more = message.get("more_body", False)
        if size == 0:
            return await self._reject(send, path, 400, "malformed JSON", "the body is empty")
        await self.app(scope, _replay(b"".join(chunks), receive), self._rewriting(path, send))

    def _rewriting(self, path: str, send: Send) -> Send:
        """Wrap `send` so that BentoML's 4xx bodies are replaced by our error shape."""
        state: dict[str, Any] = {"start": None, "body": b""}

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                state["start"] = message
                return
            if state["start"] is None:
                return await send(message)
            state["body"] += message.get("body", b"")
            if message.get("more_body", False):
                return
            status = state["start"]["status"]
            body = rewrite_error(status, state["body"])
            if self.on_invalid:
                self.on_invalid(path, body["problems"])
            payload = json.dumps(body).encode()
            kept = [
                (k, v)
                for k, v in state["start"].get("headers", [])
                if k.lower() not in (b"content-length", b"content-type")
            ]
            headers = [
                *kept,
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload, "more_body": False})

        return wrapped


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields the already-read body once, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
