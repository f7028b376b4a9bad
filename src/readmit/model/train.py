"""Candidate models: a logistic-regression baseline and XGBoost tuned on patient-grouped CV.

Why it is shaped like this (2 cores, a ~90 s search budget on ~80k rows):

* The label-free feature steps (patient history, encounter features) run ONCE on the training
  frame: encounter features are row-wise, and patient history only looks at earlier encounters
  of the same patient (folds are grouped by patient, so a fold's history is identical whether
  computed per fold or once). The encoder learns from labels (target encoding), so it is fitted
  per fold, on the fold's training part only; each fold's matrices are then built once and
  reused by every candidate.
* Folds are `StratifiedGroupKFold` on `patient_nbr`: a patient never sits on both sides.
* The search is a budgeted random search with racing: every candidate trains with early stopping
  on its first fold; one clearly behind the best candidate's first fold is dropped there. The
  first candidate is a known-good default, so a tiny budget still yields a full CV estimate.
* The final model is refitted on all training rows with the mean early-stopping round count
  scaled by the data-size ratio; its operating threshold is chosen on the out-of-fold
  predictions (never on the holdout) and stored on the fitted model.
* `train_models` is three phases, `prepare_training` -> search -> `finish_training`, so that a
  flow can run the search elsewhere: `readmit.model.fanout` evaluates the same candidates on a Dask
  cluster from picklable per-fold arrays (`FoldArrays`), the sequential search stays the default.
"""

from __future__ import annotations

import copy
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.base import clone
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from readmit import pseudonyms
from readmit.features import EncounterFeatures, FeatureEncoder, PatientHistory, make_label
from readmit.model.evaluate import max_f1_threshold
from readmit.schema import LabelDefinition

FoldT = TypeVar("FoldT")
Folds = list[tuple[np.ndarray, np.ndarray]]
THRESHOLD_RULE = "max_f1_oof"
"""Operating threshold: the probability that maximises F1 on out-of-fold training predictions."""

DEFAULT_XGB_PARAMS: dict[str, Any] = {
    "max_depth": 7,
    "learning_rate": 0.0545,
    "min_child_weight": 2.5,
    "subsample": 0.71,
    "colsample_bytree": 0.31,
    "reg_lambda": 7.5,
    "gamma": 2.0,
}
"""A known-good starting point, always evaluated first: the best of 22 candidates by
patient-grouped CV ROC AUC (0.6876; the landscape is flat, the previous default had 0.6871) in a
420 s search on the training part of the full data (`benchmarks/model_quality.py
--search-budget 420`). Chosen by CV only, never by the holdout."""
REFIT_SHRINKAGE = 2
"""The final refit runs at learning_rate / 2 with twice the rounds: grouped-CV ROC AUC 0.6892
against 0.6870 at the searched rate (same parameters, fixed rounds, 3 folds), for about 12 s more
on the full data. Candidates are compared at the faster rate; only the winner is refitted slowly."""
DEFAULT_N_ITER = 60
"""Most candidates a search evaluates (the time budget usually binds first)."""
DEFAULT_N_JOBS = 2
"""XGBoost threads of the in-process search and of the final fit (the machine has 2 cores)."""


class ReadmissionModel(Pipeline):
    """The one fitted object the registry saves: raw encounters in, probabilities out.

    A scikit-learn `Pipeline` (history -> encounter features -> encoder -> classifier) plus what
    training learned about using it: `threshold_` (operating threshold, `threshold_rule_`) and
    `label_definition_`. Batch scoring, evaluation, the service and `readmit.serving.fastpath` all
    use it.
    """


@dataclass
class Trial:
    """One search candidate: its parameters and how far it got."""

    params: dict[str, Any]
    fold_auc: list[float] = field(default_factory=list)
    best_rounds: list[int] = field(default_factory=list)
    seconds: float = 0.0
    complete: bool = False
    worker: str | None = None
    """Dask worker address that evaluated it (None: in-process)."""
    pid: int | None = None
    """Process that evaluated it (set by the fan-out)."""

    @property
    def mean_auc(self) -> float:
        """Mean ROC AUC over the folds evaluated so far (NaN before any)."""
        return float(np.mean(self.fold_auc)) if self.fold_auc else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {**asdict(self), "mean_auc": None if not self.fold_auc else self.mean_auc}


@dataclass
class TrainingResult:
    """Everything training produced; `model` and `baseline` are fitted `ReadmissionModel`s."""

    model: ReadmissionModel
    baseline: ReadmissionModel
    best_params: dict[str, Any]
    cv_scores: dict[str, Any]
    feature_names: list[str]
    timings: dict[str, float]
    search_trials: list[dict[str, Any]]
    label_definition: str = "<30"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (everything but the fitted models)."""
        return {
            "best_params": self.best_params,
            "cv_scores": self.cv_scores,
            "feature_names": list(self.feature_names),
            "timings": self.timings,
            "search_trials": self.search_trials,
            "label_definition": self.label_definition,
            "threshold": float(self.model.threshold_),
            "baseline_threshold": float(self.baseline.threshold_),
        }


TARGET_COLUMNS = ("diag_1_code", "diag_2_code", "diag_3_code")
"""Full ICD-9 codes (~700 values each), target-encoded: about +0.001 to +0.002 grouped-CV ROC
AUC over one-hot groups and categories alone (also encoding medical_specialty and payer_code
added nothing)."""
TARGET_SMOOTHING = 100.0


def build_preprocessor(
    key_fingerprint: str | None,
    min_frequency: int = 300,
    target_columns: tuple[str, ...] = TARGET_COLUMNS,
) -> list[tuple[str, Any]]:
    """Unfitted feature steps: patient history (keyed pseudonyms), encounter features, encoder."""
    return [
        ("history", PatientHistory(key_fingerprint=key_fingerprint)),
        (
            "encounter",
            EncounterFeatures(icd9_codes=any(c.endswith("_code") for c in target_columns)),
        ),
        (
            "encode",
            FeatureEncoder(
                min_frequency=min_frequency,
                target_columns=target_columns,
                smoothing=TARGET_SMOOTHING,
            ),
        ),
    ]


def fit_label_free_steps(
    steps: list[tuple[str, Any]], frame: pd.DataFrame
) -> tuple[list[tuple[str, Any]], pd.DataFrame]:
    """Fit the steps before the encoder on `frame`; returns them with their output frame."""
    data: Any = frame
    for _, step in steps:
        data = step.fit_transform(data)
    return steps, data


def grouped_folds(frame: pd.DataFrame, y: np.ndarray, n_splits: int, seed: int) -> Folds:
    """Patient-grouped, label-stratified folds (no patient on both sides of any fold)."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    groups = pseudonyms.patient_groups(frame).to_numpy()
    return list(splitter.split(np.zeros(len(y)), y, groups=groups))


def candidate_list(seed: int, n_iter: int) -> list[dict[str, Any]]:
    """The search's candidates in order: the known-good default, then `n_iter - 1` random ones.

    Both search paths take this list, so the same seed means the same candidates everywhere.
    """
    rng = np.random.default_rng(seed)
    return [dict(DEFAULT_XGB_PARAMS)] + [sample_params(rng) for _ in range(n_iter - 1)]


def sample_params(rng: np.random.Generator) -> dict[str, Any]:
    """One random XGBoost configuration (ranges that suit ~80k rows of tabular data)."""
    return {
        "max_depth": int(rng.integers(3, 8)),
        "learning_rate": float(math.exp(rng.uniform(math.log(0.04), math.log(0.15)))),
        "min_child_weight": float(math.exp(rng.uniform(math.log(2), math.log(100)))),
        "subsample": float(rng.uniform(0.6, 1.0)),
        "colsample_bytree": float(rng.uniform(0.15, 0.7)),
        "reg_lambda": float(math.exp(rng.uniform(math.log(0.5), math.log(30)))),
        "gamma": float(rng.choice([0.0, 0.0, 0.5, 1.0, 2.0])),
    }


def native_params(params: dict[str, Any], seed: int, n_jobs: int) -> dict[str, Any]:
    """Parameters for `xgb.train` equivalent to `XGBClassifier(**params)`."""
    return {
        "objective": "binary:logistic",
        "eval_metric": "auc",
        "tree_method": "hist",
        "nthread": n_jobs,
        "seed": seed,
        **params,
    }


@dataclass
class FoldData:
    """One CV fold, quantised once and reused by every candidate."""

    train: xgb.QuantileDMatrix
    valid: xgb.DMatrix
    y_valid: np.ndarray
    valid_idx: np.ndarray


@dataclass
class FoldArrays:
    """One CV fold as plain arrays: what crosses process boundaries (XGBoost matrices do not
    pickle). `key` names this encoding, so a worker can build its matrices once and reuse them.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    valid_idx: np.ndarray
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


def encode_fold(
    features: pd.DataFrame,
    y: np.ndarray,
    groups: np.ndarray,
    train_idx: np.ndarray,
    valid_idx: np.ndarray,
    encoder: FeatureEncoder,
) -> FoldArrays:
    """Design matrices of one fold, the encoder fitted on the fold's training part only."""
    fold_encoder = clone(encoder)
    x_train = fold_encoder.fit_transform(
        features.iloc[train_idx], y[train_idx], groups=groups[train_idx]
    )
    x_valid = fold_encoder.transform(features.iloc[valid_idx])
    return FoldArrays(x_train, y[train_idx], x_valid, y[valid_idx], valid_idx)


def fold_matrices(fold: FoldArrays, n_jobs: int) -> FoldData:
    """XGBoost matrices of one fold (quantised once, reused by every candidate)."""
    dtrain = xgb.QuantileDMatrix(fold.x_train, fold.y_train, nthread=n_jobs)
    dvalid = xgb.DMatrix(fold.x_valid, fold.y_valid, nthread=n_jobs)
    return FoldData(dtrain, dvalid, fold.y_valid, fold.valid_idx)


def baseline_fold(fold: FoldArrays, seed: int) -> np.ndarray:
    """Logistic-regression baseline's predictions on the fold's validation part."""
    baseline = Pipeline(baseline_steps(seed)).fit(fold.x_train, fold.y_train)
    return np.asarray(baseline.predict_proba(fold.x_valid)[:, 1])


def prepare_folds(
    features: pd.DataFrame,
    y: np.ndarray,
    groups: np.ndarray,
    folds: Folds,
    encoder: FeatureEncoder,
    *,
    seed: int,
    keep: Callable[[FoldArrays], FoldT],
) -> tuple[list[FoldT], np.ndarray, list[float]]:
    """Per fold: encoder fitted on the training part only, and the logistic-regression
    baseline's out-of-fold predictions (same arrays, no second encoding).

    `keep` turns each fold's arrays into what the search needs: `fold_matrices` in-process (the
    arrays are dropped fold by fold, only the compact quantised matrices stay in memory), or the
    arrays themselves for shipping to other processes (`readmit.model.fanout`).
    """
    out, oof, fold_auc = [], np.full(len(y), np.nan), []
    for train_idx, valid_idx in folds:
        fold = encode_fold(features, y, groups, train_idx, valid_idx, encoder)
        oof[valid_idx] = baseline_fold(fold, seed)
        fold_auc.append(float(roc_auc_score(y[valid_idx], oof[valid_idx])))
        out.append(keep(fold))
    return out, oof, fold_auc


def run_fold(
    params: dict[str, Any], fold: FoldData, *, seed: int, n_jobs: int, patience: int = 50
) -> tuple[float, int, np.ndarray]:
    """Train with early stopping on the fold's validation part: (ROC AUC, rounds, predictions).

    Early stopping and scoring share the validation fold, so CV AUC is slightly optimistic;
    that is fine for ranking candidates, and the holdout gives the unbiased figure.
    """
    booster = xgb.train(
        native_params(params, seed, n_jobs),
        fold.train,
        num_boost_round=3000,
        evals=[(fold.valid, "valid")],
        early_stopping_rounds=patience,
        verbose_eval=False,
    )
    rounds = booster.best_iteration + 1
    predictions = booster.predict(fold.valid, iteration_range=(0, rounds))
    return float(roc_auc_score(fold.y_valid, predictions)), rounds, predictions


def race_candidate(
    params: dict[str, Any],
    folds: list[FoldData],
    best: Trial | None,
    deadline: float,
    *,
    seed: int,
    n_jobs: int,
    margin: float,
) -> tuple[Trial, np.ndarray | None]:
    """Evaluate one candidate fold by fold; stop early if it trails `best` or time runs out.

    Returns the trial and, when all folds ran, its out-of-fold predictions.
    """
    trial = Trial(params=params)
    oof = np.full(sum(len(f.valid_idx) for f in folds), np.nan)
    start = time.perf_counter()
    for k, fold in enumerate(folds):
        if best is not None and time.perf_counter() > deadline:
            break
        auc, rounds, predictions = run_fold(params, fold, seed=seed, n_jobs=n_jobs)
        trial.fold_auc.append(auc)
        trial.best_rounds.append(rounds)
        oof[fold.valid_idx] = predictions
        if best is not None and trial.mean_auc < float(np.mean(best.fold_auc[: k + 1])) - margin:
            break
    trial.seconds = round(time.perf_counter() - start, 3)
    trial.complete = len(trial.fold_auc) == len(folds)
    return trial, (oof if trial.complete else None)


RACE_MARGIN = 0.003
"""How far (mean ROC AUC over the folds run so far) a candidate may trail the best one."""


@dataclass
class CandidateResult:
    """What a worker sends back: the trial and, when every fold ran, its OOF predictions."""

    trial: Trial
    oof: np.ndarray | None


class _Future(Protocol):
    def result(self) -> Any: ...


F = TypeVar("F", bound=_Future)
Submit = Callable[[int, dict[str, Any], list[float] | None, float], F]
"""(candidate index, params, best complete trial's fold AUCs or None, seconds left) -> future."""


def score_candidate(
    params: dict[str, Any],
    folds: list[FoldData],
    race_against: list[float] | None,
    time_left_s: float,
    *,
    seed: int,
    n_jobs: int,
    margin: float = RACE_MARGIN,
) -> CandidateResult:
    """One candidate's grouped CV, fold by fold, racing the best complete trial so far.

    Args:
        params: XGBoost parameters of the candidate.
        folds: The folds' XGBoost matrices.
        race_against: Per-fold ROC AUCs of the best complete trial so far; None: no racing and
            no deadline (the candidate runs every fold).
        time_left_s: Seconds until the search's deadline, counted from the start of this call.
        seed: XGBoost seed.
        n_jobs: XGBoost threads.
        margin: How far behind the best a candidate may be after a fold; `math.inf`: no racing.
    """
    best = None if race_against is None else Trial(params={}, fold_auc=list(race_against))
    deadline = time.perf_counter() + time_left_s
    trial, oof = race_candidate(
        params, folds, best, deadline, seed=seed, n_jobs=n_jobs, margin=margin
    )
    trial.pid = os.getpid()
    return CandidateResult(trial, oof)


class _Done:
    """A finished "future": the in-process search runs a candidate when it is submitted."""

    def __init__(self, value: CandidateResult) -> None:
        self.value = value

    def result(self) -> CandidateResult:
        return self.value


def search_xgboost(
    folds: list[FoldData],
    *,
    seed: int,
    budget_s: float,
    n_iter: int,
    n_jobs: int,
    margin: float = RACE_MARGIN,
    refit_share: float = 0.6 * REFIT_SHRINKAGE,
    candidates: list[dict[str, Any]] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[Trial, np.ndarray, list[Trial]]:
    """The search in this process: `run_search` with one slot, each candidate scored when it is
    submitted. Returns (best trial, its OOF predictions, all trials).

    `candidates` replaces `candidate_list(seed, n_iter)`; `margin=math.inf` disables racing.
    """
    if candidates is None:
        candidates = candidate_list(seed, n_iter)

    def submit(_: int, params: dict[str, Any], against: list[float] | None, left: float) -> _Done:
        scored = score_candidate(
            params, folds, against, left, seed=seed, n_jobs=n_jobs, margin=margin
        )
        return _Done(scored)

    return run_search(
        candidates,
        submit,
        lambda running: running[0],
        slots=1,
        budget_s=budget_s,
        refit_share=refit_share,
        log=log,
    )


def may_start(
    best: Trial | None, finished: list[Trial], elapsed_s: float, budget_s: float, refit_share: float
) -> tuple[bool, float]:
    """Whether a new candidate may start, and the seconds left before the search deadline.

    Until a candidate has completed, candidates start unconditionally (the first wave always
    completes, whatever the budget). Then one more fold must fit before the deadline, which
    holds back `refit_share` x the best trial's time for the final refit.
    """
    if best is None:
        return True, math.inf
    left = budget_s - refit_share * best.seconds - elapsed_s
    folds_run = sum(len(t.fold_auc) for t in finished)
    per_fold = sum(t.seconds for t in finished) / max(folds_run, 1)
    return per_fold <= left, left


def run_search(
    candidates: list[dict[str, Any]],
    submit: Submit[F],
    wait_first: Callable[[list[F]], F],
    *,
    slots: int,
    budget_s: float,
    refit_share: float = 0.6 * REFIT_SHRINKAGE,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[Trial, np.ndarray, list[Trial]]:
    """Keep `slots` candidates running until the candidates or the budget run out.

    Returns (best complete trial by mean CV ROC AUC, its OOF predictions, all trials in
    candidate order), like `train.search_xgboost`.

    Args:
        candidates: Parameter sets, in order (`train.candidate_list`).
        submit: Starts one candidate somewhere and returns its future (`.result()` gives a
            `CandidateResult`).
        wait_first: Blocks until one of the given futures is done and returns it.
        slots: Candidates run at once (the cluster's threads).
        budget_s: Wall-time budget of the search and the final refit.
        refit_share: Share of the best trial's time held back for the refit.
        log: Progress messages.
    """
    start = time.perf_counter()
    queue = list(enumerate(candidates))
    running: dict[F, int] = {}
    trials: dict[int, Trial] = {}
    best: tuple[int, Trial, np.ndarray] | None = None
    while queue or running:
        while queue and len(running) < slots:
            elapsed = time.perf_counter() - start
            leader = best[1] if best else None
            ok, left = may_start(leader, list(trials.values()), elapsed, budget_s, refit_share)
            if not ok:
                log(f"budget reached after {elapsed:.0f} s: {len(queue)} candidates not started")
                queue.clear()
                break
            index, params = queue.pop(0)
            running[submit(index, params, leader.fold_auc if leader else None, left)] = index
        if not running:
            break
        future = wait_first(list(running))
        index = running.pop(future)
        result: CandidateResult = future.result()
        trials[index] = trial = result.trial
        if result.oof is not None and (best is None or trial.mean_auc > best[1].mean_auc):
            best = (index, trial, result.oof)
        log(progress_line(index, len(candidates), trial, best))
    if best is None:
        raise RuntimeError("no candidate completed")
    return best[1], best[2], [trials[i] for i in sorted(trials)]


def search_done_line(best: Trial, trials: list[Trial]) -> str:
    """The log line that closes a search."""
    complete = sum(t.complete for t in trials)
    return (
        f"search done: best mean ROC AUC {best.mean_auc:.4f}; {len(trials)} candidates, "
        f"{complete} complete"
    )


def progress_line(
    index: int, total: int, trial: Trial, best: tuple[int, Trial, np.ndarray] | None
) -> str:
    """One log line per finished candidate: where it ran, how it did, the best so far."""
    status = "complete" if trial.complete else f"stopped after {len(trial.fold_auc)} fold(s)"
    where = f"{trial.worker or 'in-process'} (pid {trial.pid})"
    best_text = f"{best[1].mean_auc:.4f} (candidate {best[0] + 1})" if best else "none yet"
    return (
        f"candidate {index + 1}/{total} on {where}: mean ROC AUC {trial.mean_auc:.4f}, "
        f"{status}, {trial.seconds:.1f} s; best so far {best_text}"
    )


def refit_plan(best: Trial, n_splits: int) -> tuple[dict[str, Any], int]:
    """Parameters and rounds of the final fit: the fold models' mean early-stopping rounds,
    scaled up for the larger data (x (1 + 1/k)), then slowed by `REFIT_SHRINKAGE`."""
    params = {**best.params, "learning_rate": best.params["learning_rate"] / REFIT_SHRINKAGE}
    rounds = float(np.mean(best.best_rounds)) * (1 + 1 / n_splits) * REFIT_SHRINKAGE
    return params, max(1, round(rounds))


def fit_xgboost(
    X: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
    rounds: int,
    *,
    seed: int,
    n_jobs: int,
) -> xgb.XGBClassifier:
    """Final XGBoost on all training rows with a fixed number of rounds."""
    clf = xgb.XGBClassifier(
        n_estimators=rounds,
        tree_method="hist",
        n_jobs=n_jobs,
        random_state=seed,
        eval_metric="logloss",
        **params,
    )
    return clf.fit(X, y)


def baseline_steps(seed: int, C: float = 0.05) -> list[tuple[str, Any]]:
    """Logistic regression on the same design matrix (imputed, standardised)."""
    return [
        ("impute", SimpleImputer(strategy="mean")),  # median is 30x slower on 80k x 350
        ("scale", StandardScaler()),
        ("classifier", LogisticRegression(C=C, max_iter=1000, tol=1e-4, random_state=seed)),
    ]


def oof_summary(y: np.ndarray, oof: np.ndarray, folds: Folds) -> dict[str, Any]:
    """Out-of-fold ROC AUC / PR AUC / Brier, and the Brier an isotonic recalibration would get.

    The isotonic figure is cross-fitted (fit on the other folds' OOF predictions), so it says
    honestly whether calibrating would help before anyone adds it to the model.
    """
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import average_precision_score, brier_score_loss

    calibrated = np.empty_like(oof)
    for train_idx, valid_idx in folds:
        iso = IsotonicRegression(out_of_bounds="clip").fit(oof[train_idx], y[train_idx])
        calibrated[valid_idx] = iso.predict(oof[valid_idx])
    return {
        "oof_roc_auc": round(float(roc_auc_score(y, oof)), 6),
        "oof_pr_auc": round(float(average_precision_score(y, oof)), 6),
        "oof_brier": round(float(brier_score_loss(y, oof)), 6),
        "oof_brier_isotonic": round(float(brier_score_loss(y, calibrated)), 6),
    }


def assemble(
    feature_steps: list[tuple[str, Any]],
    model_steps: list[tuple[str, Any]],
    threshold: float,
    label: str,
) -> ReadmissionModel:
    """One fitted object from fitted parts, carrying its threshold and label definition."""
    model = ReadmissionModel([*feature_steps, *model_steps])
    model.threshold_ = float(threshold)
    model.threshold_rule_ = THRESHOLD_RULE
    model.label_definition_ = label
    return model


def cv_report(
    y: np.ndarray,
    folds: Folds,
    trials: list[Trial],
    xgboost_cv: tuple[list[float], np.ndarray],
    baseline_cv: tuple[list[float], np.ndarray],
) -> dict[str, Any]:
    """Grouped-CV figures of both models (per-fold and out-of-fold) and the search's size."""
    return {
        "n_splits": len(folds),
        "grouped_by": "patient_nbr",
        "xgboost": {"fold_roc_auc": xgboost_cv[0], **oof_summary(y, xgboost_cv[1], folds)},
        "baseline": {"fold_roc_auc": baseline_cv[0], **oof_summary(y, baseline_cv[1], folds)},
        "trials": len(trials),
        "trials_complete": sum(t.complete for t in trials),
    }


def auto_min_frequency(n_rows: int) -> int:
    """Own indicator for categories in ~0.4% of rows (between 10 and 300 encounters)."""
    return int(np.clip(n_rows // 265, 10, 300))


def _timer(timings: dict[str, float], step: str, start: float) -> float:
    now = time.perf_counter()
    timings[step] = round(now - start, 3)
    return now


@dataclass
class Prepared:
    """Training inputs up to the search: labels, patient groups, folds, and the feature steps.

    `steps` are the fitted label-free steps followed by the UNFITTED encoder (fitted per fold
    for CV, on all rows for the final model); `features` is the label-free steps' output.
    """

    y: np.ndarray
    groups: np.ndarray
    folds: Folds
    steps: list[tuple[str, Any]]
    features: pd.DataFrame
    label: LabelDefinition
    seed: int

    @property
    def encoder(self) -> FeatureEncoder:
        """The unfitted encoder (last step)."""
        encoder: FeatureEncoder = self.steps[-1][1]
        return encoder


def prepare_training(
    train_frame: pd.DataFrame,
    *,
    label: LabelDefinition = "<30",
    seed: int = 42,
    n_splits: int = 3,
    pseudonym_key: bytes | None = None,
    min_frequency: int | None = None,
) -> Prepared:
    """Labels, label-free features (computed once, see module doc) and patient-grouped folds.

    The frame is keyed on arrival (`pseudonyms.add_keys`): the history store holds pseudonyms
    and the key's fingerprint, never the key or a raw identifier.
    """
    if pseudonym_key is None:
        from readmit.settings import get_settings

        pseudonym_key = get_settings().pseudonym_key_bytes
    y = make_label(train_frame, label).astype(np.int64)
    groups = pseudonyms.patient_groups(train_frame).to_numpy()
    steps = build_preprocessor(
        pseudonyms.fingerprint(pseudonym_key), min_frequency or auto_min_frequency(len(y))
    )
    keyed = pseudonyms.add_keys(train_frame, pseudonym_key)
    feature_steps, features = fit_label_free_steps(steps[:-1], keyed)
    folds = grouped_folds(train_frame, y, n_splits, seed)
    return Prepared(y, groups, folds, [*feature_steps, steps[-1]], features, label, seed)


def finish_training(
    prepared: Prepared,
    search: tuple[Trial, np.ndarray, list[Trial]],
    baseline_cv: tuple[list[float], np.ndarray],
    timings: dict[str, float],
    *,
    n_jobs: int,
) -> TrainingResult:
    """Refit the encoder and the best XGBoost on all rows, fit the LR baseline, assemble both.

    Args:
        prepared: What `prepare_training` returned.
        search: (best trial, its out-of-fold predictions, all trials) of either search path.
        baseline_cv: The baseline's per-fold ROC AUC and out-of-fold predictions.
        timings: Step timings so far; the final fit and the baseline are added to it.
        n_jobs: Threads for the final XGBoost fit.
    """
    best, oof, trials = search
    y, groups, seed, label = prepared.y, prepared.groups, prepared.seed, prepared.label
    start = time.perf_counter()
    encoder = prepared.encoder
    X = encoder.fit_transform(prepared.features, y, groups=groups)
    refit_params, rounds = refit_plan(best, len(prepared.folds))
    clf = fit_xgboost(X, y, refit_params, rounds, seed=seed, n_jobs=n_jobs)
    start = _timer(timings, "train_final_fit", start)
    lr = Pipeline(baseline_steps(seed)).fit(X, y)
    _timer(timings, "train_baseline", start)
    fitted_steps = prepared.steps
    model = assemble(fitted_steps, [("classifier", clf)], max_f1_threshold(y, oof), label)
    lr_oof = baseline_cv[1]
    baseline = assemble(copy.deepcopy(fitted_steps), lr.steps, max_f1_threshold(y, lr_oof), label)
    cv_scores = cv_report(y, prepared.folds, trials, (best.fold_auc, oof), baseline_cv)
    return TrainingResult(
        model=model,
        baseline=baseline,
        best_params={**refit_params, "n_estimators": rounds},
        cv_scores=cv_scores,
        feature_names=[str(n) for n in encoder.get_feature_names_out()],
        timings=timings,
        search_trials=[t.to_dict() for t in trials],
        label_definition=label,
    )


def train_models(
    train_frame: pd.DataFrame,
    *,
    label: LabelDefinition = "<30",
    seed: int = 42,
    search_budget_s: float = 90.0,
    n_iter: int = DEFAULT_N_ITER,
    n_jobs: int = DEFAULT_N_JOBS,
    n_splits: int = 3,
    pseudonym_key: bytes | None = None,
    min_frequency: int | None = None,
) -> TrainingResult:
    """Fit the feature pipeline, tune XGBoost on patient-grouped CV, fit the LR baseline.

    The sequential, in-process path; `readmit.model.fanout` runs the same search on a Dask cluster.

    Args:
        train_frame: Raw encounters (schema dtypes) with `patient_nbr`, `encounter_id` and
            `readmitted`; died/hospice encounters already excluded.
        label: "<30" (30-day readmission) or "any".
        seed: Seed of folds, search and models.
        search_budget_s: Wall-time budget of the XGBoost search plus its final refit (the
            features and the baseline come on top: about 10-15 s on the full data).
        n_iter: Maximum number of candidates (the budget usually binds first).
        n_jobs: Threads for XGBoost (the machine has 2 cores).
        n_splits: Patient-grouped folds.
        pseudonym_key: Key of the patient and encounter pseudonyms; default from settings.
        min_frequency: Rows a category needs for its own indicator; default scales with size.
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    p = prepare_training(
        train_frame,
        label=label,
        seed=seed,
        n_splits=n_splits,
        pseudonym_key=pseudonym_key,
        min_frequency=min_frequency,
    )
    fold_data, lr_oof, lr_fold_auc = prepare_folds(
        p.features, p.y, p.groups, p.folds, p.encoder, seed=seed,
        keep=lambda fold: fold_matrices(fold, n_jobs),
    )  # fmt: skip
    start = _timer(timings, "train_features_and_baseline_cv", start)
    search = search_xgboost(
        fold_data, seed=seed, budget_s=search_budget_s, n_iter=n_iter, n_jobs=n_jobs
    )
    del fold_data
    _timer(timings, "train_search", start)
    return finish_training(p, search, (lr_fold_auc, lr_oof), timings, n_jobs=n_jobs)
