"""Served traffic in time windows: drift, estimated and realised performance, coverage, skew.

The service ships its prediction log as chunks (`readmit.serving.prediction_log`); monitoring
reads each new chunk ONCE and keeps, per time window and chunk (a chunk whose rows straddle two
windows gives two pieces):

    monitoring/windows/<window>/<chunk>.profile.bin     whylogs profile of the logged features
    monitoring/windows/<window>/<chunk>.served.csv.gz   pseudonyms, probability, model tag, time,
                                                        cohort flag, offline re-score (sample)

A window's assessment merges its pieces (whylogs profiles merge), so monitoring's cost grows
linearly with traffic and a window can be re-assessed whenever outcomes arrive without reading the
log again. The assessment (`WindowAssessment`) holds:

* feature drift of the window's logged inputs and prediction drift of the probabilities the
  service actually returned, against the model's reference (same scores and thresholds as batch
  monitoring);
* the performance estimate before outcomes arrive (`estimation.estimate_performance`, CBPE) on
  the window's cohort rows, and realised performance once outcomes arrived (joined by
  `encounter_key`; an outcome received before its prediction was served is counted, never used);
* label coverage: the share of the window's cohort encounters (those with an encounter id: no
  outcome can reach the others) whose outcome arrived;
* the skew check: sampled logged rows re-scored offline with the model that answered them (their
  `model_tag`: a canary or a redeploy puts two in one window) must give the logged probability;
  a feature path that changed, or a model monitoring cannot load answering, shows here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from readmit import storage
from readmit.data import in_cohort
from readmit.data.outcomes import RECEIVED_AT
from readmit.experiments import spec as experiment
from readmit.features import history, make_label, served_history
from readmit.layout import StoreLayout
from readmit.monitoring import drift, estimation, profiling
from readmit.monitoring import served as served_log
from readmit.monitoring.served import PROBABILITY_COLUMN, Chunk, window_id, window_start
from readmit.pseudonyms import ENCOUNTER_KEY, PATIENT_KEY
from readmit.schema import INPUT_COLUMNS, LABEL_COLUMN, LabelDefinition
from readmit.serving.prediction_log import TIME_COLUMN
from readmit.serving.scoring import feed_records, history_step, make_scorer

MODEL_TAG = "model_tag"
IN_COHORT = "in_cohort"
RESCORED = "rescored"
SERVED_COLUMNS = (ENCOUNTER_KEY, PATIENT_KEY, PROBABILITY_COLUMN, MODEL_TAG, TIME_COLUMN, IN_COHORT,
                  RESCORED, *experiment.LOG_COLUMNS)  # fmt: skip
"""What a window keeps of each served row: no feature, no raw identifier; during a live
experiment, its id, the answering variant and (shadow) the challenger's probability."""
LABEL = "label"
PROFILE_SUFFIX = ".profile.bin"
SERVED_SUFFIX = ".served.csv.gz"
DEFAULT_SKEW_TOLERANCE = 1e-6
SERVED_PREFIX = "served-"
"""A served window's report id: `served-<window>`."""


@dataclass(frozen=True)
class Piece:
    """The rows of one log chunk that fall in one time window."""

    window: str
    chunk: str
    profile: Any
    served: pd.DataFrame


def chunk_stem(chunk: Chunk) -> str:
    """A chunk's file name without its date folder and suffix (unique per writer and flush)."""
    return chunk.name.rsplit("/", 1)[-1].split(".jsonl", 1)[0]


def sample_rows(n: int, size: int, seed_text: str) -> np.ndarray:
    """Which rows of a piece to re-score: `size` of `n`, the same on every rerun."""
    if size <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n, size), replace=False))


def rescore(model: Any, rows: pd.DataFrame, store: Any | None = None) -> np.ndarray:
    """Offline probabilities of logged rows through the service's own per-record scorer.

    With the served-history store, each row sees the store as of its logged time
    (`history.as_of`), which is the view the service scored it with."""
    if not len(rows):
        return np.zeros(0, dtype=np.float64)
    records = feed_records(rows)  # logged rows carry pseudonyms, never raw identifiers
    scorer, step = make_scorer(model), history_step(model)
    if store is None or step is None:
        return np.asarray(scorer.predict_proba_many(records), dtype=float)
    times = pd.to_datetime(rows[TIME_COLUMN], utc=True)
    out = []
    step.attach(store)
    try:
        for record, at in zip(records, times, strict=True):
            with history.as_of(at.timestamp()):
                out.append(scorer.predict_proba_one(record))
    finally:
        step.attach(None)
    return np.asarray(out, dtype=float)


def served_table(rows: pd.DataFrame, rescored: Mapping[int, float]) -> pd.DataFrame:
    """The part of logged rows a window keeps (`SERVED_COLUMNS`); `rescored` by row position."""
    out = rows.reindex(columns=[ENCOUNTER_KEY, PATIENT_KEY, PROBABILITY_COLUMN, MODEL_TAG,
                                TIME_COLUMN]).reset_index(drop=True)  # fmt: skip
    out[IN_COHORT] = in_cohort(rows.reset_index(drop=True))
    out[RESCORED] = pd.Series(rescored, dtype="float64").reindex(range(len(out))).to_numpy()
    logged = rows.reindex(columns=list(experiment.LOG_COLUMNS)).reset_index(drop=True)
    return pd.concat([out, logged], axis=1)


class AnsweringModels:
    """The model that answered each logged row, by its `model_tag`, for the skew re-score.

    During a canary, a blue/green redeploy or a rollback, rows of one window were answered by
    different models: each is re-scored with its own (loaded once per tag by `load`), so the
    skew check compares a row with the model that produced it. A tag `load` cannot resolve (an
    unknown model, one this store does not hold) is re-scored with `default`, the production
    model: its rows then show as skew, which is what they are to monitoring.
    """

    def __init__(self, default: Any, load: Callable[[str], Any] | None = None) -> None:
        self.default, self.load = default, load
        self._loaded: dict[str, Any] = {}

    def __call__(self, tag: str | None) -> Any:
        """The model to re-score a row answered by `tag` with."""
        if self.load is None or not tag:
            return self.default
        if tag not in self._loaded:
            try:
                self._loaded[tag] = self.load(tag)
            except Exception:  # an unknown or unloadable model: its rows show as skew
                self._loaded[tag] = self.default
        return self._loaded[tag]


def registered_models(default: Any) -> AnsweringModels:
    """Answering models from the registry (verified like every load), else `default`."""
    from readmit.model import registry

    return AnsweringModels(default, lambda tag: registry.load_model(tag).model)


def rescore_answered(models: AnsweringModels, rows: pd.DataFrame, store: Any | None) -> np.ndarray:
    """`rescore` of each row with the model that answered it (`AnsweringModels`)."""
    out = np.full(len(rows), np.nan)
    tags = rows[MODEL_TAG] if MODEL_TAG in rows else pd.Series([None] * len(rows))
    for tag, positions in pd.Series(range(len(rows))).groupby(tags.to_numpy(), dropna=False):
        where = positions.to_numpy()
        out[where] = rescore(models(None if pd.isna(tag) else str(tag)), rows.iloc[where], store)
    return out


def split_chunk(
    chunk: Chunk,
    frame: pd.DataFrame,
    window: timedelta,
    model: Any | None = None,
    skew_rows: int = 0,
    store: Any | None = None,
) -> list[Piece]:
    """A chunk's rows by time window: each piece profiled, kept, and a sample re-scored (by
    `model`, or with an `AnsweringModels`, by the model that answered each row)."""
    models = model if isinstance(model, AnsweringModels) else AnsweringModels(model)
    starts = window_start(frame[TIME_COLUMN], window)
    pieces = []
    for start, rows in frame.groupby(starts, sort=True):
        wid = window_id(pd.Timestamp(start))
        picked = sample_rows(len(rows), skew_rows if model is not None else 0, chunk.name + wid)
        rescored = (
            rescore_answered(models, rows.iloc[picked], store) if len(picked) else np.zeros(0)
        )
        features = rows.reindex(columns=list(INPUT_COLUMNS))
        pieces.append(
            Piece(
                window=wid,
                chunk=chunk_stem(chunk),
                profile=profiling.profile_frame(features),
                served=served_table(rows, dict(zip(picked.tolist(), rescored, strict=True))),
            )
        )
    return pieces


def write_piece(layout: StoreLayout, piece: Piece) -> None:
    """Store a piece (profile first: a window lists its pieces by their served table)."""
    base = f"{layout.window_dir(piece.window)}/{piece.chunk}"
    profiling.write_profile(piece.profile, base + PROFILE_SUFFIX)
    body = piece.served.to_csv(index=False).encode()
    storage.write_bytes(base + SERVED_SUFFIX, gzip.compress(body, compresslevel=1))


def list_windows(layout: StoreLayout) -> dict[str, list[str]]:
    """Window id -> its pieces' base URLs (without suffix), in time order."""
    out: dict[str, list[str]] = {}
    for url in sorted(storage.list_files(layout.windows_dir(), f"*/*{SERVED_SUFFIX}")):
        wid = url.rsplit("/", 2)[-2]
        out.setdefault(wid, []).append(url.removesuffix(SERVED_SUFFIX))
    return dict(sorted(out.items()))


def read_served(bases: Sequence[str]) -> pd.DataFrame:
    """A window's served rows, from its pieces."""
    text = {ENCOUNTER_KEY: str, PATIENT_KEY: str, MODEL_TAG: str, experiment.EXPERIMENT_ID: str,
            experiment.VARIANT: str}  # fmt: skip
    frames = [
        pd.read_csv(io.BytesIO(gzip.decompress(storage.read_bytes(b + SERVED_SUFFIX))), dtype=text)
        for b in bases
    ]
    served = pd.concat(frames, ignore_index=True).reindex(columns=list(SERVED_COLUMNS))
    served[TIME_COLUMN] = pd.to_datetime(served[TIME_COLUMN], utc=True, format="ISO8601")
    served[IN_COHORT] = served[IN_COHORT].astype(bool)
    return served


def read_window_profile(bases: Sequence[str]) -> Any:
    """A window's feature profile: its pieces' profiles merged."""
    return profiling.merge_profiles(profiling.read_profile(b + PROFILE_SUFFIX) for b in bases)


@dataclass(frozen=True)
class Skew:
    """Offline re-scores of sampled logged rows against what the service logged."""

    checked: int
    max_abs_diff: float | None
    mismatched: int
    tolerance: float

    @property
    def ok(self) -> bool | None:
        """True when every re-scored row matches (None: nothing was checked)."""
        return None if self.checked == 0 else self.mismatched == 0


def skew_of(served: pd.DataFrame, tolerance: float = DEFAULT_SKEW_TOLERANCE) -> Skew:
    """Compare logged and re-scored probabilities of the rows that were re-scored."""
    checked = served[served[RESCORED].notna()]
    if not len(checked):
        return Skew(0, None, 0, tolerance)
    diff = (checked[RESCORED] - checked[PROBABILITY_COLUMN]).abs().to_numpy()
    return Skew(len(checked), float(diff.max()), int((diff > tolerance).sum()), tolerance)


@dataclass(frozen=True)
class Joined:
    """A window's cohort encounters (latest prediction each) with the outcomes that matured."""

    probabilities: np.ndarray
    labels: np.ndarray
    labelled: np.ndarray
    before_prediction: int
    joinable: int = 0
    """Encounters an outcome can reach (they carry an encounter key): label coverage's base."""


def matured_outcomes(
    served: pd.DataFrame, outcomes: pd.DataFrame, label_definition: LabelDefinition
) -> tuple[pd.DataFrame, int]:
    """Cohort rows (latest prediction per encounter, in time order; each row without an
    encounter key is its own encounter, which no outcome can reach) with their outcome: a 0/1
    `label` where it matured, and the count of outcomes left out because they were received
    before the encounter was served (a reused identifier, a replay, a clock)."""
    cohort = served[served[IN_COHORT]]
    keyed = cohort[ENCOUNTER_KEY].notna()  # a request without an encounter id: never joinable
    cohort = pd.concat([cohort[keyed].drop_duplicates(ENCOUNTER_KEY, keep="last"), cohort[~keyed]])
    cohort = cohort.sort_values(TIME_COLUMN, kind="stable").reset_index(drop=True)
    hit = cohort[[ENCOUNTER_KEY, TIME_COLUMN]].merge(
        outcomes[[ENCOUNTER_KEY, LABEL_COLUMN, RECEIVED_AT]].drop_duplicates(ENCOUNTER_KEY),
        on=ENCOUNTER_KEY, how="left",
    )  # fmt: skip
    received = pd.to_datetime(hit[RECEIVED_AT], utc=True, format="ISO8601")
    early = received.notna() & (received < hit[TIME_COLUMN])
    labelled = (hit[LABEL_COLUMN].notna() & ~early).to_numpy()
    labels = np.full(len(hit), np.nan)
    if labelled.any():
        labels[labelled] = make_label(hit.loc[labelled, [LABEL_COLUMN]], label_definition)
    return cohort.assign(**{LABEL: labels}), int(early.sum())


def join_outcomes(
    served: pd.DataFrame, outcomes: pd.DataFrame, label_definition: LabelDefinition
) -> Joined:
    """Cohort rows of a window joined to stored outcomes by `encounter_key` (an outcome
    received before the encounter was served is counted and left out: `matured_outcomes`)."""
    cohort, early = matured_outcomes(served, outcomes, label_definition)
    labelled = cohort[LABEL].notna().to_numpy()
    return Joined(
        probabilities=cohort[PROBABILITY_COLUMN].to_numpy(dtype=float),
        labels=np.nan_to_num(cohort[LABEL].to_numpy(), nan=0).astype(np.int64),
        labelled=labelled,
        before_prediction=early,
        joinable=int(cohort[ENCOUNTER_KEY].notna().sum()),
    )


@dataclass
class WindowAssessment:
    """Everything monitoring concluded about one window of served traffic (no identifiers)."""

    window: str
    n_served: int
    n_cohort: int
    model_tags: dict[str, int]
    report: drift.DriftReport
    estimate: estimation.PerformanceEstimate | None
    n_labelled: int
    label_coverage: float
    outcomes_before_prediction: int
    skew: Skew
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def realised_auc(self) -> float | None:
        """Realised ROC AUC of the labelled cohort rows (None until enough outcomes)."""
        perf = self.report.performance
        return perf.roc_auc if perf is not None else None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (assessment.json)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("report", "estimate", "skew")}
        return drift._jsonable({
            **out, "report": self.report.to_dict(),
            "estimate": self.estimate.to_dict() if self.estimate else None,
            "skew": {**asdict(self.skew), "ok": self.skew.ok},
            "realised_auc": self.realised_auc,
        })  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """One row of the per-window table (Prefect artifact, `make run` summary)."""
        est = self.estimate
        band = f"{est.low:.3f}-{est.high:.3f}" if est and est.low is not None else None
        return drift._jsonable({
            "window": self.window, "served": self.n_served, "severity": self.report.severity,
            "features": ", ".join(self.report.responsible[:5]),
            "estimated_auc": round(est.estimated_auc, 4) if est and est.estimated_auc else None,
            "band_90": band,
            "realised_auc": round(self.realised_auc, 4) if self.realised_auc else None,
            "label_coverage": round(self.label_coverage, 3),
            "skew_ok": self.skew.ok, "models": ", ".join(sorted(self.model_tags)),
        })  # fmt: skip


def assess_window(
    reference: Any,
    wid: str,
    profile: Any,
    served: pd.DataFrame,
    outcomes: pd.DataFrame,
    label_definition: LabelDefinition,
    skew_tolerance: float = DEFAULT_SKEW_TOLERANCE,
) -> WindowAssessment:
    """Assess one window from its merged profile, its served rows and the stored outcomes."""
    features = drift.score_features(reference.profile, profile, reference.thresholds)
    probabilities = served[PROBABILITY_COLUMN].to_numpy(dtype=float)
    prediction = drift.score_predictions(
        reference.prediction_profile,
        profiling.profile_predictions(probabilities),
        reference.prediction_thresholds,
    )
    joined = join_outcomes(served, outcomes, label_definition)
    n_labelled = int(joined.labelled.sum())
    performance = None
    if n_labelled:
        performance = drift.assess_performance(
            joined.labels[joined.labelled],
            joined.probabilities[joined.labelled],
            reference.performance,
        )
    estimate = None
    if len(joined.probabilities):
        seed = int.from_bytes(hashlib.sha256(wid.encode()).digest()[:4], "big")
        estimate = estimation.estimate_performance(joined.probabilities, seed=seed)
    report = drift.drift_report(
        f"{SERVED_PREFIX}{wid}",
        features,
        prediction=prediction,
        performance=performance,
        thresholds=reference.thresholds,
    )
    n_cohort = len(joined.probabilities)
    return WindowAssessment(
        window=wid,
        n_served=len(served),
        n_cohort=n_cohort,
        model_tags=served[MODEL_TAG].value_counts().to_dict(),
        report=report,
        estimate=estimate,
        n_labelled=n_labelled,
        label_coverage=n_labelled / joined.joinable if joined.joinable else 0.0,
        outcomes_before_prediction=joined.before_prediction,
        skew=skew_of(served, skew_tolerance),
    )


def served_encounter_keys(layout: StoreLayout) -> set[str]:
    """Encounter pseudonyms of every served row monitoring has read (for the outcomes feed)."""
    keys: set[str] = set()
    for bases in list_windows(layout).values():
        keys.update(read_served(bases)[ENCOUNTER_KEY].dropna().astype(str))
    return keys


def touched(pieces: Iterable[Piece]) -> list[str]:
    """Window ids that got new rows."""
    return sorted({p.window for p in pieces})


@dataclass
class Ingested:
    """What one monitoring run read from the prediction log."""

    pieces: list[Piece]
    chunks: list[str]
    bad: list[served_log.BadChunk]
    rows: int


def watermark_name(watermark: datetime, grace: timedelta) -> str:
    """The chunk name below which chunks were all read: `grace` before the newest chunk read
    (a pod's chunk may land a little after another pod's later one)."""
    floor = (watermark - grace).astimezone(UTC)
    return f"{floor.strftime('%Y-%m-%d')}/{floor.strftime('%Y%m%dT%H%M%S.%fZ')}"


def new_chunks(
    log_uri: str, seen: Collection[str], watermark: datetime | None, grace: timedelta
) -> list[served_log.Chunk]:
    """Chunks not read yet: named after the watermark less the grace, and not in `seen`."""
    after = None if watermark is None else watermark_name(watermark, grace)
    return [c for c in served_log.list_chunks(log_uri, after) if c.name not in seen]


@dataclass
class ChunkRead:
    """One chunk read by one worker: its stored pieces (without profiles), the encounters to
    record in the served-history store, or why it was set aside."""

    name: str
    pieces: list[Piece]
    rows: int
    served: list[served_history.ServedRow]
    bad: served_log.BadChunk | None = None


def ingest_chunk(
    layout: StoreLayout,
    chunk: served_log.Chunk,
    window: timedelta,
    model: Any | None,
    skew_rows: int,
    store: Any | None = None,
    record: bool = True,
) -> ChunkRead:
    """Read one chunk (unreadable: set aside), store its window pieces (profile, served rows,
    skew re-score as of each row's time) and return what to record in the served-history
    store (nothing when `record` is off: no store). Runs in any process."""
    try:
        frame = served_log.read_chunk(chunk)
    except ValueError as exc:
        return ChunkRead(
            chunk.name, [], 0, [], served_log.set_aside(chunk, layout.bad_chunks_dir(), str(exc))
        )
    pieces = []
    for piece in split_chunk(chunk, frame, window, model, skew_rows, store):
        write_piece(layout, piece)
        pieces.append(replace(piece, profile=None))  # stored: memory stays flat
    served = served_history.served_rows(frame) if record else []
    return ChunkRead(chunk.name, pieces, len(frame), served)


def record_reads(reads: Sequence[ChunkRead], store: Any | None) -> Ingested:
    """Gather chunk reads (in chunk order) and record their encounters in the served-history
    store, after every re-score (which sees the store as of each row's own time)."""
    good = [r for r in reads if r.bad is None]
    if store is not None:
        for read in good:
            store.add(read.served)
    return Ingested(
        [p for r in good for p in r.pieces],
        [r.name for r in good],
        [r.bad for r in reads if r.bad is not None],
        sum(r.rows for r in good),
    )


def ingest_chunks(
    layout: StoreLayout,
    chunks: Sequence[served_log.Chunk],
    window: timedelta,
    model: Any | None,
    skew_rows: int,
    store: Any | None = None,
) -> Ingested:
    """Read chunks in this process (unreadable ones set aside), store their window pieces, and
    record their encounters in the served-history store."""
    reads = [
        ingest_chunk(layout, c, window, model, skew_rows, store, record=store is not None)
        for c in chunks
    ]
    return record_reads(reads, store)


_WORKER_MODELS: dict[str, Any] = {}


def ingest_chunk_on_worker(
    model_tag: str,
    root: str,
    chunk: served_log.Chunk,
    window_s: float,
    skew_rows: int,
    store_uri: str | None,
) -> ChunkRead:
    """`ingest_chunk` in a Dask worker: the model loaded by tag once per process (from the
    worker's model store, or imported from the artifact store), the served-history store
    opened by URI (read only here: the driver records)."""
    if model_tag not in _WORKER_MODELS:
        from readmit.model import registry

        _WORKER_MODELS[model_tag] = registered_models(registry.load_model(model_tag).model)
    store = served_history.open_store(store_uri) if store_uri else None
    return ingest_chunk(
        StoreLayout(root), chunk, timedelta(seconds=window_s), _WORKER_MODELS[model_tag],
        skew_rows, store, record=store is not None,
    )  # fmt: skip


def ingest_on_dask(
    address: str,
    layout: StoreLayout,
    chunks: Sequence[served_log.Chunk],
    *,
    model_tag: str,
    window: timedelta,
    skew_rows: int,
    store_uri: str | None,
) -> list[ChunkRead]:
    """Fan chunk reading out over a Dask cluster, like the training search: "local" (a
    LocalCluster for this call, one single-threaded worker per core) or a scheduler address.
    Returns the reads in chunk order."""
    from distributed import Client, LocalCluster

    from readmit.model.fanout import local_cluster_kwargs

    cluster = LocalCluster(**local_cluster_kwargs()) if address == "local" else None
    client = Client(cluster if cluster is not None else address)
    try:
        futures = client.map(
            ingest_chunk_on_worker, [model_tag] * len(chunks), [layout.root] * len(chunks),
            list(chunks), [window.total_seconds()] * len(chunks), [skew_rows] * len(chunks),
            [store_uri] * len(chunks), pure=False,
        )  # fmt: skip
        return list(client.gather(futures))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def advance_state(
    state: dict[str, Any], chunks: Sequence[served_log.Chunk], grace: timedelta
) -> dict[str, Any]:
    """Monitoring state after reading `chunks`: the newest chunk time read and the names read
    within the grace before it (so a late chunk is read once, and the list stays short)."""
    if not chunks:
        return state
    previous = state.get("served_watermark")
    times = [c.first_row_at for c in chunks]
    if previous:
        times.append(datetime.fromisoformat(previous))
    watermark = max(times)
    floor = watermark_name(watermark, grace)
    seen = {*state.get("served_seen", []), *(c.name for c in chunks)}
    return {
        **state,
        "served_watermark": watermark.isoformat(),
        "served_seen": sorted(n for n in seen if n > floor),
    }


def windows_to_assess(
    layout: StoreLayout, pieces: Sequence[Piece], outcomes_arrived: bool
) -> list[str]:
    """Windows that got new rows; with new outcomes, also every window whose outcomes were not
    all in at its last assessment (its realised figures may have changed)."""
    out = set(touched(pieces))
    if outcomes_arrived:
        for wid in list_windows(layout):
            url = f"{layout.window_dir(wid)}/assessment.json"
            if (
                wid in out
                or not storage.exists(url)
                or storage.read_json(url).get("label_coverage", 0.0) < 1.0
            ):
                out.add(wid)
    return sorted(out)


def assess_stored_windows(
    layout: StoreLayout,
    reference: Any,
    window_ids: Collection[str],
    outcomes: pd.DataFrame,
    label_definition: LabelDefinition,
    *,
    model_tag: str,
    skew_tolerance: float = DEFAULT_SKEW_TOLERANCE,
) -> list[WindowAssessment]:
    """Assess the stored windows named in `window_ids` (oldest first) and store each assessment
    as JSON and a self-contained HTML report next to its pieces."""
    from readmit.reports.report import render_drift_report_html

    assessed = []
    for wid, bases in list_windows(layout).items():
        if wid not in window_ids:
            continue
        result = assess_window(
            reference, wid, read_window_profile(bases), read_served(bases), outcomes,
            label_definition, skew_tolerance,
        )  # fmt: skip
        folder = layout.window_dir(wid)
        storage.write_json(f"{folder}/assessment.json", result.to_dict())
        title = f"Served traffic {wid} vs {model_tag}"
        storage.write_text(
            f"{folder}/assessment.html", render_drift_report_html(result.report, title)
        )
        assessed.append(result)
    return assessed


def read_new_chunks(
    layout: StoreLayout,
    log_uri: str,
    state: dict[str, Any],
    *,
    model: Any | None,
    window: timedelta,
    grace: timedelta,
    skew_rows: int,
    store_uri: str | None = None,
    dask_address: str | None = None,
    model_tag: str | None = None,
) -> tuple[Ingested, dict[str, Any]]:
    """One monitoring run's reading of the prediction log: the chunks not read yet, stored as
    window pieces (unreadable ones set aside), their encounters recorded in the served-history
    store when given, and the state that remembers them. With `dask_address` ("local" or a
    scheduler) and `model_tag`, chunks are read on a Dask cluster (`ingest_on_dask`)."""
    watermark = state.get("served_watermark")
    chunks = new_chunks(
        log_uri,
        set(state.get("served_seen", [])),
        datetime.fromisoformat(watermark) if watermark else None,
        grace,
    )
    store = served_history.open_store(store_uri) if store_uri else None
    if dask_address and dask_address != "none" and model_tag and chunks:
        reads = ingest_on_dask(
            dask_address, layout, chunks, model_tag=model_tag, window=window,
            skew_rows=skew_rows, store_uri=store_uri,
        )  # fmt: skip
        read = record_reads(reads, store)
    else:
        answering = registered_models(model) if model is not None else None
        read = ingest_chunks(layout, chunks, window, answering, skew_rows, store)
    return read, advance_state(state, chunks, grace)
