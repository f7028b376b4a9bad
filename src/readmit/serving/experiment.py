"""The service's side of a live experiment: champion and challenger scored side by side.

`Variants` holds the models one worker serves, the champion always and, in a bento built for an
experiment (`readmit.experiments.spec.ExperimentSpec.bento_args`), the challenger too, and
scores a group of records as of ONE instant (`score`, the `history.as_of` view both models see
and the time the rows are logged with: `readmit.serving.score_as_of_now`):

* no experiment, or a challenger that could not be loaded: the champion alone, as before; the
  rows' experiment columns stay empty (the rows are not part of the experiment);
* shadow: both models score every record; the champion answers; the row carries the
  experiment id, `variant="champion"` and the challenger's probability;
* canary: `answering_variant` per record (a sticky share of patients): the records are split
  by variant, each group is scored by its model at its own threshold, the answers are put back
  in input order; the row's `model_tag` and `variant` name the model that answered.

A challenger that fails while scoring never fails a request: in shadow mode the row keeps an
empty challenger probability; in canary mode the champion answers those records and their rows
are logged without the experiment (they are in neither arm). Each failure is reported to
`on_error`.

Nothing here knows BentoML or Prometheus: the service passes `on_scored` / `on_error` (its
metrics and its `VariantStats`).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from readmit.experiments.spec import CHALLENGER, CHAMPION, ExperimentSpec, answering_variant
from readmit.features.history import as_of
from readmit.pseudonyms import PATIENT_KEY
from readmit.serving import (
    ExperimentInfo,
    ExperimentLog,
    VariantInfo,
    predictions,
    score_as_of_now,
)
from readmit.serving.prediction_log import utc_now
from readmit.serving.scoring import Scorer

Record = Mapping[str, Any]
OnScored = Callable[[str, str, int, float], None]
"""(variant, model tag, records scored, seconds) after each scoring call of an experiment."""
OnError = Callable[[str, str, BaseException], None]
"""(variant, model tag, error) when a model of an experiment failed to score."""
LATENCY_WINDOW = 10_000
"""Scoring calls per variant a worker keeps for /model's percentiles (the most recent)."""


@dataclass(frozen=True)
class ServedModel:
    """One loaded model as the service scores with it."""

    tag: str
    scorer: Scorer
    threshold: float


@dataclass(frozen=True)
class Answers:
    """What one scoring gave, per record in input order, and the instant it was scored as of."""

    probabilities: list[float]
    risks: list[str]
    model_tags: list[str]
    thresholds: list[float]
    experiment: ExperimentLog | None
    at: str

    def __len__(self) -> int:
        return len(self.probabilities)

    def one(self, i: int) -> Answers:
        """The answer of record `i` alone (adaptive batching hands each caller its own)."""
        log = self.experiment
        return Answers(
            [self.probabilities[i]],
            [self.risks[i]],
            [self.model_tags[i]],
            [self.thresholds[i]],
            None
            if log is None
            else ExperimentLog(
                [log.experiment_ids[i]], [log.variants[i]], [log.challenger_probabilities[i]]
            ),
            self.at,
        )

    def split(self) -> list[Answers]:
        """One `Answers` per record."""
        return [self.one(i) for i in range(len(self))]


def _single_model(model: ServedModel, probabilities: np.ndarray, at: str) -> Answers:
    probs, risks = predictions(probabilities, model.threshold)
    n = len(probs)
    return Answers(probs, risks, [model.tag] * n, [model.threshold] * n, None, at)


class Variants:
    """The models a worker serves and the rule of who answers (see the module doc)."""

    def __init__(
        self,
        champion: ServedModel,
        spec: ExperimentSpec | None = None,
        challenger: ServedModel | None = None,
        *,
        on_scored: OnScored | None = None,
        on_error: OnError | None = None,
    ) -> None:
        self.champion = champion
        self.spec = spec
        self.challenger = challenger
        self.on_scored = on_scored
        self.on_error = on_error

    @property
    def running(self) -> bool:
        """True when an experiment is served: a spec and a loaded challenger."""
        return self.spec is not None and self.challenger is not None

    def score(self, records: Sequence[Record]) -> Answers:
        """Score `records` as of one instant; the answers in input order (module doc)."""
        spec, challenger = self.spec, self.challenger
        if spec is None or challenger is None:  # the champion alone: the path without one
            probabilities, stamp = score_as_of_now(self.champion.scorer, records)
            return _single_model(self.champion, probabilities, stamp)
        at = utc_now()
        stamp = at.isoformat(timespec="microseconds")
        with as_of(at.timestamp()):  # both models see the same history view (score_as_of_now)
            if spec.mode == "shadow":
                return self._shadow(spec, challenger, records, stamp)
            return self._canary(spec, challenger, records, stamp)

    def _timed(self, variant: str, model: ServedModel, records: Sequence[Record]) -> np.ndarray:
        start = time.perf_counter()
        probabilities = np.asarray(model.scorer.predict_proba_many(records), dtype=np.float64)
        if self.on_scored is not None:
            self.on_scored(variant, model.tag, len(records), time.perf_counter() - start)
        return probabilities

    def _challenger_scores(
        self, challenger: ServedModel, records: Sequence[Record]
    ) -> np.ndarray | None:
        """The challenger's probabilities, or None when it failed (reported, never raised)."""
        try:
            return self._timed(CHALLENGER, challenger, records)
        except Exception as exc:  # a challenger must never fail a request
            if self.on_error is not None:
                self.on_error(CHALLENGER, challenger.tag, exc)
            return None

    def _shadow(
        self, spec: ExperimentSpec, challenger: ServedModel, records: Sequence[Record], at: str
    ) -> Answers:
        answers = _single_model(self.champion, self._timed(CHAMPION, self.champion, records), at)
        other = self._challenger_scores(challenger, records)
        n = len(records)
        shadow = [None] * n if other is None else [float(p) for p in other]
        log = ExperimentLog([spec.id] * n, [CHAMPION] * n, shadow)
        return Answers(
            answers.probabilities, answers.risks, answers.model_tags, answers.thresholds, log, at
        )

    def _canary(
        self, spec: ExperimentSpec, challenger: ServedModel, records: Sequence[Record], at: str
    ) -> Answers:
        n = len(records)
        chosen = [answering_variant(spec, record.get(PATIENT_KEY)) for record in records]
        to_challenger = [i for i in range(n) if chosen[i] == CHALLENGER]
        probabilities = np.zeros(n, dtype=np.float64)
        ids: list[str | None] = [spec.id] * n
        variants: list[str | None] = list(chosen)
        if to_challenger:
            scored = self._challenger_scores(challenger, [records[i] for i in to_challenger])
            if scored is None:  # the champion answers them, outside the experiment
                for i in to_challenger:
                    ids[i] = variants[i] = None
                to_challenger = []
            else:
                probabilities[to_challenger] = scored
        answered = set(to_challenger)
        to_champion = [i for i in range(n) if i not in answered]
        if to_champion:
            probabilities[to_champion] = self._timed(
                CHAMPION, self.champion, [records[i] for i in to_champion]
            )
        models = [challenger if i in answered else self.champion for i in range(n)]
        risks = [
            "high" if p >= model.threshold else "low"
            for p, model in zip(probabilities, models, strict=True)
        ]
        return Answers(
            [float(p) for p in probabilities],
            risks,
            [m.tag for m in models],
            [m.threshold for m in models],
            ExperimentLog(ids, variants, [None] * n),
            at,
        )


class VariantStats:
    """A worker's own counters per variant: encounters scored and recent scoring times."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self._lock = threading.Lock()
        self._requests: collections.Counter[str] = collections.Counter()
        self._seconds: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=window)
        )

    def record(self, variant: str, records: int, seconds: float) -> None:
        """One scoring call of `variant`'s model over `records` encounters."""
        with self._lock:
            self._requests[variant] += records
            self._seconds[variant].append(seconds)

    def summary(self, tags: Mapping[str, str]) -> dict[str, VariantInfo]:
        """Per variant (`tags`: variant -> model tag): encounters and p50/p95 in ms."""
        out = {}
        for variant, tag in tags.items():
            with self._lock:
                seconds = np.asarray(self._seconds.get(variant, ()), dtype=float)
                requests = self._requests[variant]
            p50, p95 = (
                (round(float(q) * 1000, 3) for q in np.percentile(seconds, [50, 95]))
                if seconds.size
                else (None, None)
            )
            out[variant] = VariantInfo(
                model_tag=tag, requests=requests, latency_p50_ms=p50, latency_p95_ms=p95
            )
        return out


def experiment_info(
    spec: ExperimentSpec, variants: Variants, stats: VariantStats, reason: str | None
) -> ExperimentInfo:
    """What /model says about the experiment this worker was built for."""
    tags: dict[str, str] = {CHAMPION: variants.champion.tag}
    if variants.challenger is not None:
        tags[CHALLENGER] = variants.challenger.tag
    return ExperimentInfo(
        id=spec.id,
        mode=spec.mode,
        canary_share=spec.canary_share,
        champion=variants.champion.tag,
        challenger=spec.challenger,
        running=variants.running,
        reason=reason,
        variants=stats.summary(tags),
    )
