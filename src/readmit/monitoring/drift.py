"""Drift: seeded drift injection for simulation, and drift scores with calibrated severity.

Scoring works on whylogs profiles on both sides, so the training flow's reference profile is the
whole reference, batches can be scored from their stored profiles, and rolling windows are just
merged profiles. Profiles built by `readmit.monitoring.profiling` keep exact category counts
(frequent items with room for every value) and KLL quantile sketches for numbers.

Per feature, effect sizes only: PSI over categories (rare reference categories pooled into
"(other)") or over reference-decile bins of numbers, Hellinger distance (reported), Wasserstein-1
of numbers in units of the reference standard deviation, the change in the share of missing
values, and the share of values never seen in the reference. No p-value is computed: at these
sample sizes they flag almost everything. Each decision statistic gets a threshold calibrated on
no-drift batches of the reference period (patient-grouped K-fold, `null_pairs`: each batch against
the merge of the other, patient-disjoint groups): the largest value seen on the clean batches times
a margin, never below a floor. A feature's ratio is its largest score/threshold; the batch
severity comes from how far and how many features exceed (see `SeverityPolicy`).

What the training flow stores next to the reference profile: `write_thresholds(
calibrate_from_frame(train_frame))`, and for prediction drift and performance the holdout's
`calibrate_predictions(p_holdout)` (a profile and thresholds) and `performance_baseline(y, p)`.

What each path can see:
- At arrival (no labels yet): feature drift and prediction drift. Covariate shift, hospital mix,
  missing surge and unseen categories are visible here.
- When labels arrive: the label column's drift (`readmitted` in the labelled batch's profile)
  and realised performance (ROC AUC, calibration) vs the training holdout. A label-rate shift
  shows up in the label's PSI and in calibration-in-the-large (observed vs mean predicted); a
  concept change keeps every marginal distribution (labels are swapped between a high-risk and a
  low-risk group), so only the drop in ROC AUC reveals it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

import numpy as np
import pandas as pd
import whylogs_sketching as ds
from sklearn.metrics import roc_auc_score

from readmit import storage
from readmit.monitoring import profiling
from readmit.pseudonyms import patient_groups
from readmit.schema import AGE_BANDS, COLUMN_BY_NAME, LABEL_COLUMN, READMITTED_VALUES, Column, Kind

# ----------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------

Strength = Literal["weak", "moderate", "strong"]
STRENGTHS: tuple[Strength, ...] = ("weak", "moderate", "strong")
Mode = Literal["sudden", "gradual"]

EMERGENCY_ADMISSION_TYPE = 1
"""`admission_type_id` 1 is "Emergency" in IDS_mapping.csv (shipped in data/raw/)."""
HOSPITAL_MIX_TARGETS: dict[str, Any] = {"admission_source_id": 4, "payer_code": "BC"}
"""A new network's typical encounter: transferred from another hospital (IDS_mapping: source 4),
insured by Blue Cross. Checked against the schema's value sets when used."""
POSITIVE_LABEL = "<30"
NEGATIVE_LABEL = "NO"
NEW_ICD9_CODE = "E000"
"""ICD-9-CM E000 ("external cause status") was introduced in October 2009, after the data period
(1999-2008): a valid code that cannot be in the reference."""


class Severity(StrEnum):
    """Drift severity, ordered: none < minor < moderate < major."""

    NONE = "none"
    MINOR = "minor"
    MODERATE = "moderate"
    MAJOR = "major"

    @property
    def rank(self) -> int:
        """Position in the order (0 = none)."""
        return list(Severity).index(self)


# ----------------------------------------------------------------------------------------------
# Injection scenarios: pure, seeded functions frame -> frame
# ----------------------------------------------------------------------------------------------


def _rows(frame: pd.DataFrame, share: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask choosing about `share` of the rows."""
    return rng.random(len(frame)) < max(0.0, min(1.0, share))


def _pick(mask: pd.Series | np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of `count` rows drawn without replacement among those where mask is true."""
    candidates = np.flatnonzero(np.asarray(mask, dtype=bool))
    count = int(min(max(count, 0), len(candidates)))
    return np.sort(rng.choice(candidates, size=count, replace=False))


def _valid_value(column: Column, value: Any) -> bool:
    if column.values is not None:
        return value in column.values
    if column.kind is Kind.CODE and column.regex is not None:
        return re.fullmatch(column.regex, str(value)) is not None
    return True


def covariate_shift(frame: pd.DataFrame, amount: float, *, seed: int = 0) -> pd.DataFrame:
    """An older, more acute population: `amount` of the rows move up one age band and half that
    share of non-emergency admissions become emergencies. Labels are left as they are."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    band_index = out["age"].map({band: i for i, band in enumerate(AGE_BANDS)})
    can_age = band_index.notna() & (band_index < len(AGE_BANDS) - 1)
    older = _rows(out, amount, rng) & can_age.to_numpy(dtype=bool)
    out.loc[older, "age"] = [AGE_BANDS[int(i) + 1] for i in band_index[older]]
    not_emergency = out["admission_type_id"].ne(EMERGENCY_ADMISSION_TYPE).fillna(False)
    to_emergency = _rows(out, amount / 2, rng) & not_emergency.to_numpy(dtype=bool)
    out.loc[to_emergency, "admission_type_id"] = EMERGENCY_ADMISSION_TYPE
    return out


def hospital_mix_change(
    frame: pd.DataFrame,
    amount: float,
    *,
    seed: int = 0,
    targets: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """A new hospital network joins: `amount` of the rows get its admission source and payer.

    The same rows change in every target column, as one hospital's encounters would.

    Raises:
        ValueError: a target value is not in the column's value set (it would fail validation).
    """
    chosen = dict(targets or HOSPITAL_MIX_TARGETS)
    for name, value in chosen.items():
        if not _valid_value(COLUMN_BY_NAME[name], value):
            raise ValueError(f"{name}={value!r} is not in the schema's value set")
    rng = np.random.default_rng(seed)
    out = frame.copy()
    rows = _rows(out, amount, rng)
    for name, value in chosen.items():
        out.loc[rows, name] = value
    return out


def missing_surge(
    frame: pd.DataFrame, amount: float, *, seed: int = 0, column: str = "race"
) -> pd.DataFrame:
    """A feed stops sending one field: its missing share rises by `amount` of the headroom left
    below the schema's tolerance (`max_missing`), so the batch still passes validation.

    Raises:
        ValueError: the column may never be missing (validation would quarantine the batch).
    """
    spec = COLUMN_BY_NAME[column]
    if spec.max_missing <= 0:
        raise ValueError(
            f"{column} may not be missing (max_missing=0): the validation suite quarantines "
            "such a batch; pick a nullable column"
        )
    rng = np.random.default_rng(seed)
    out = frame.copy()
    present = out[column].notna()
    current = 1.0 - present.mean() if len(out) else 0.0
    target = current + min(max(amount, 0.0), 1.0) * max(spec.max_missing - current, 0.0)
    extra = math.floor((target - current) * len(out))
    out.loc[out.index[_pick(present, extra, rng)], column] = pd.NA
    return out


def unseen_category(
    frame: pd.DataFrame,
    amount: float,
    *,
    seed: int = 0,
    column: str = "admission_source_id",
    value: Any = None,
    allow_invalid: bool = False,
) -> pd.DataFrame:
    """A value the reference never had appears in `amount` of the rows.

    By default the value is VALID (in the schema's value set, or matching the ICD-9 pattern) but
    unseen: for a coded column, the last schema value absent from the frame (admission_source_id
    26, "transfer from ambulatory surgery center", never occurs in the data); for ICD-9 columns,
    `NEW_ICD9_CODE`. Drift scoring catches it through the column's unseen share and PSI.
    A value outside the schema is a different failure: the validation suite quarantines the batch
    (expect_column_values_to_be_in_set / _match_regex on that column) and it is never monitored
    as clean. Pass `allow_invalid=True` to produce such a batch on purpose.

    Raises:
        ValueError: an invalid value without `allow_invalid`, or no unseen valid value is left.
    """
    spec = COLUMN_BY_NAME[column]
    if spec.kind not in (Kind.CATEGORY, Kind.CODE, Kind.INT) or (
        spec.kind is Kind.INT and spec.values is None
    ):
        raise ValueError(f"{column} is not a categorical column")
    if value is None:
        if spec.kind is Kind.CODE:
            value = NEW_ICD9_CODE
        else:
            present = set(frame[column].dropna().tolist())
            absent = [v for v in spec.values or () if v not in present]
            if not absent:
                raise ValueError(f"every value of {column} already occurs in the frame")
            value = absent[-1]
    if not allow_invalid and not _valid_value(spec, value):
        raise ValueError(
            f"{column}={value!r} is outside the schema: the validation suite would quarantine "
            "the batch (pass allow_invalid=True to build such a batch on purpose)"
        )
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out.loc[_rows(out, amount, rng), column] = value
    return out


def label_rate_shift(
    frame: pd.DataFrame, amount: float, *, seed: int = 0, positive: str = POSITIVE_LABEL
) -> pd.DataFrame:
    """Prior shift: the share of `positive` labels rises by `amount` (absolute), by keeping every
    positive encounter and dropping a random part of the others. P(features | label) is
    unchanged, so the batch shrinks; only labelled monitoring sees it (label PSI, calibration).

    Raises:
        ValueError: no label column, or no positive encounter to build on.
    """
    if LABEL_COLUMN not in frame.columns:
        raise ValueError(f"label-rate shift needs the {LABEL_COLUMN} column")
    is_positive = frame[LABEL_COLUMN].eq(positive).fillna(False).to_numpy(dtype=bool)
    rate = is_positive.mean() if len(frame) else 0.0
    if rate <= 0:
        raise ValueError(f"no {positive!r} labels in the frame")
    new_rate = min(rate + max(amount, 0.0), 0.95)
    keep_negative = rate * (1 - new_rate) / (new_rate * (1 - rate))
    rng = np.random.default_rng(seed)
    keep = is_positive | (rng.random(len(frame)) < keep_negative)
    return frame.loc[keep].reset_index(drop=True)


def concept_change(
    frame: pd.DataFrame,
    amount: float,
    *,
    seed: int = 0,
    feature: str = "number_inpatient",
    positive: str = POSITIVE_LABEL,
) -> pd.DataFrame:
    """The relation feature -> outcome weakens or reverses, every marginal stays put.

    `amount` of the positive encounters in the high-`feature` group (above its median; for prior
    inpatient stays: any) become negative, and as many negatives in the low group become positive.
    Features and label rate are unchanged; only the realised ROC AUC shows it.

    Raises:
        ValueError: no label column.
    """
    if LABEL_COLUMN not in frame.columns:
        raise ValueError(f"concept change needs the {LABEL_COLUMN} column")
    if positive not in READMITTED_VALUES:
        raise ValueError(f"{positive!r} is not a label value ({', '.join(READMITTED_VALUES)})")
    values = pd.to_numeric(frame[feature], errors="coerce").astype(float)
    high = (values > np.nanmedian(values)).to_numpy(dtype=bool)
    is_positive = frame[LABEL_COLUMN].eq(positive).fillna(False).to_numpy(dtype=bool)
    rng = np.random.default_rng(seed)
    count = round(max(amount, 0.0) * int((high & is_positive).sum()))
    demote = _pick(high & is_positive, count, rng)
    promote = _pick(~high & ~is_positive, len(demote), rng)
    demote = demote[: len(promote)]
    out = frame.copy()
    out.loc[out.index[demote], LABEL_COLUMN] = NEGATIVE_LABEL
    out.loc[out.index[promote], LABEL_COLUMN] = positive
    return out


@dataclass(frozen=True)
class Scenario:
    """A drift scenario: its injector, the amount for each strength, and who can see it."""

    name: str
    inject: Callable[..., pd.DataFrame]
    amounts: Mapping[str, float]
    needs_labels: bool
    description: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "covariate_shift", covariate_shift, {"weak": 0.08, "moderate": 0.2, "strong": 0.45},
            False, "older population, more emergency admissions",
        ),
        Scenario(
            "hospital_mix", hospital_mix_change, {"weak": 0.03, "moderate": 0.08, "strong": 0.2},
            False, "new network: admission source and payer mix change",
        ),
        Scenario(
            "missing_surge", missing_surge, {"weak": 0.15, "moderate": 0.4, "strong": 0.85},
            False, "race goes missing more often (up to the schema's tolerance)",
        ),
        Scenario(
            "unseen_category", unseen_category, {"weak": 0.005, "moderate": 0.02, "strong": 0.08},
            False, "a valid admission source never seen in the reference",
        ),
        Scenario(
            "label_rate", label_rate_shift, {"weak": 0.015, "moderate": 0.04, "strong": 0.08},
            True, "30-day readmission rate rises (prior shift)",
        ),
        Scenario(
            "concept_change", concept_change, {"weak": 0.15, "moderate": 0.4, "strong": 0.8},
            True, "prior inpatient stays stop predicting readmission",
        ),
    )
}  # fmt: skip


def inject(
    frame: pd.DataFrame,
    scenario: str,
    strength: Strength,
    *,
    seed: int = 0,
    ramp: float = 1.0,
    **options: Any,
) -> pd.DataFrame:
    """Apply a named scenario at a strength; `ramp` in [0, 1] scales the amount (gradual drift).

    Raises:
        ValueError: unknown scenario or strength.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown drift scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if strength not in STRENGTHS:
        raise ValueError(f"unknown strength {strength!r}; known: {', '.join(STRENGTHS)}")
    spec = SCENARIOS[scenario]
    amount = spec.amounts[strength] * min(max(ramp, 0.0), 1.0)
    return spec.inject(frame, amount, seed=seed, **options)


def ramp_levels(n_batches: int, mode: Mode, ramp_batches: int = 5) -> list[float]:
    """Share of the full amount in each batch: all 1.0 (sudden) or (i+1)/k up to 1.0 (gradual)."""
    if mode == "sudden":
        return [1.0] * n_batches
    if mode != "gradual" or ramp_batches < 1:
        raise ValueError("mode must be 'sudden' or 'gradual' with ramp_batches >= 1")
    return [min(1.0, (i + 1) / ramp_batches) for i in range(n_batches)]


def inject_sequence(
    batches: Sequence[pd.DataFrame],
    scenario: str,
    strength: Strength,
    *,
    mode: Mode = "sudden",
    ramp_batches: int = 5,
    seed: int = 0,
    **options: Any,
) -> list[pd.DataFrame]:
    """A drift episode over consecutive batches: sudden (full amount from the first batch) or
    gradual (a linear ramp reaching the full amount at batch `ramp_batches`). Batch i uses seed
    `seed + i`, so an episode is reproducible."""
    levels = ramp_levels(len(batches), mode, ramp_batches)
    return [
        inject(batch, scenario, strength, seed=seed + i, ramp=level, **options)
        for i, (batch, level) in enumerate(zip(batches, levels, strict=True))
    ]


def sample_batches(
    frame: pd.DataFrame, n_batches: int, batch_size: int, *, seed: int = 0
) -> list[pd.DataFrame]:
    """No-drift batches from a pool, drawn by whole patients (the last one trimmed to size).

    If the pool holds enough rows, batches are patient-disjoint from each other; otherwise each
    batch is an independent draw of patients (batches overlap, but each one is still a random
    sample of the pool). Draw the pool patient-disjoint from the reference (e.g. the holdout).
    """
    rng = np.random.default_rng(seed)
    groups = _patients_or_rows(frame)
    codes, uniques = pd.factorize(groups)
    sizes = np.bincount(codes, minlength=len(uniques))
    disjoint = n_batches * batch_size <= len(frame)
    order = rng.permutation(len(uniques))
    batches = []
    for _ in range(n_batches):
        if not disjoint:
            order = rng.permutation(len(uniques))
        cut = int(np.searchsorted(np.cumsum(sizes[order]), batch_size)) + 1
        chosen, order = order[:cut], (order[cut:] if disjoint else order)
        rows = np.flatnonzero(np.isin(codes, chosen))[:batch_size]
        batches.append(frame.iloc[rows].reset_index(drop=True))
    return batches


# ----------------------------------------------------------------------------------------------
# Effect sizes
# ----------------------------------------------------------------------------------------------

OTHER = "(other)"
MIN_CATEGORY_SHARE = 0.005
"""Reference categories rarer than this are pooled into "(other)": keeps PSI stable for
high-cardinality codes (ICD-9) without hiding a shift towards rare values."""
SMOOTHING = 0.5
QUANTILE_GRID = np.linspace(0.005, 0.995, 100)
MAX_INTEGER_POINTS = 2000
DECILES = np.linspace(0.1, 0.9, 9)


def psi(reference: Sequence[float], batch: Sequence[float], alpha: float = SMOOTHING) -> float:
    """Population stability index between two count vectors over the same bins.

    Counts are smoothed with `alpha` per bin so empty bins do not give infinities.
    """
    ref = np.asarray(reference, dtype=float) + alpha
    cur = np.asarray(batch, dtype=float) + alpha
    p, q = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def hellinger(reference: Sequence[float], batch: Sequence[float]) -> float:
    """Hellinger distance (0 = same, 1 = disjoint) between two count vectors."""
    ref, cur = np.asarray(reference, dtype=float), np.asarray(batch, dtype=float)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return 0.0
    p, q = ref / ref.sum(), cur / cur.sum()
    return float(np.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)))


@dataclass(frozen=True)
class _ColumnSketch:
    """What drift needs from one profiled column."""

    n: int
    missing: int
    counts: dict[str, float]
    kll: Any | None

    @property
    def present(self) -> int:
        return self.n - self.missing


KINDS = frozenset({"categorical", "label", "numeric", "prediction"})


@dataclass(frozen=True)
class Comparison:
    """One column of the reference against the same column of a batch: what a drift
    statistic reads (binned counts over the same bins, and the raw sketches)."""

    name: str
    kind: str
    ref: _ColumnSketch
    cur: _ColumnSketch
    ref_counts: list[float]
    cur_counts: list[float]
    integer: bool

    @property
    def comparable(self) -> bool:
        """Both sides have values (else distances are 0, the missing share still counts)."""
        return self.ref.present > 0 and self.cur.present > 0


@dataclass(frozen=True)
class Statistic:
    """A drift statistic, the one entry that defines it everywhere.

    Args:
        name: Key in scores, thresholds and reports.
        compute: The effect size of one `Comparison`.
        kinds: Column kinds it is computed for.
        decides: Kinds in which its calibrated threshold decides a feature's level (the others
            are reported only).
        floor: Smallest threshold, so a statistic that is always 0 on clean data (a column that
            is never missing) is not a hair trigger.
        noise_power: How its null level falls with batch size n (n ** -power): thresholds grow
            for batches smaller than the calibration batches, never shrink.
        column: Its header in the HTML report.
        digits: Decimals shown in the report.
    """

    name: str
    compute: Callable[[Comparison], float]
    kinds: frozenset[str]
    decides: frozenset[str]
    floor: float
    noise_power: float
    column: str
    digits: int = 4


def _missing_change(c: Comparison) -> float:
    return abs(c.cur.missing / max(c.cur.n, 1) - c.ref.missing / max(c.ref.n, 1))


def _unseen_share(c: Comparison) -> float:
    unseen = sum(n for k, n in c.cur.counts.items() if k not in c.ref.counts)
    return unseen / c.cur.present if c.cur.present else 0.0


STATISTICS: tuple[Statistic, ...] = (
    Statistic(
        "psi",
        lambda c: psi(c.ref_counts, c.cur_counts) if c.comparable else 0.0,
        kinds=KINDS,
        decides=KINDS,
        floor=0.01,
        noise_power=1.0,
        column="PSI",
    ),
    Statistic(
        "hellinger",
        lambda c: hellinger(c.ref_counts, c.cur_counts) if c.comparable else 0.0,
        kinds=KINDS,
        decides=frozenset(),
        floor=0.0,
        noise_power=0.5,
        column="Hellinger",
    ),
    Statistic(
        "wasserstein",
        lambda c: _wasserstein(c.ref, c.cur, c.integer),
        kinds=frozenset({"numeric", "prediction"}),
        decides=frozenset({"numeric", "prediction"}),
        floor=0.03,
        noise_power=0.5,
        column="Wasserstein (sd)",
        digits=3,
    ),
    Statistic(
        "missing",
        _missing_change,
        kinds=KINDS,
        decides=frozenset({"categorical", "label", "numeric"}),
        floor=0.01,
        noise_power=0.5,
        column="missing share change",
    ),
    Statistic(
        "unseen",
        _unseen_share,
        kinds=frozenset({"categorical", "label"}),
        decides=frozenset({"categorical"}),
        floor=0.005,
        noise_power=0.5,
        column="unseen share",
    ),
)
"""Every drift statistic: adding one is one entry here (PSI ~ 1/n, the others ~ 1/sqrt(n))."""
STATISTIC: dict[str, Statistic] = {s.name: s for s in STATISTICS}


def deciding(kind: str) -> tuple[str, ...]:
    """Names of the statistics whose thresholds decide a column of this kind."""
    return tuple(s.name for s in STATISTICS if kind in s.decides)


def _kind(name: str, view: Any) -> str:
    if name == profiling.PREDICTION_COLUMN:
        return "prediction"
    spec = COLUMN_BY_NAME.get(name)
    if spec is not None:
        if spec.kind is Kind.LABEL:
            return "label"
        return "numeric" if spec.kind is Kind.INT and spec.values is None else "categorical"
    dist = view.get_column(name).get_metric("distribution")
    return "numeric" if dist is not None and dist.kll.value.get_n() > 0 else "categorical"


def _item_key(name: str, item: str) -> str:
    """Frequent items store integers as '4.000000': back to '4' for integer-coded columns."""
    spec = COLUMN_BY_NAME.get(name)
    if spec is not None and spec.kind is Kind.INT:
        try:
            number = float(item)
        except ValueError:
            return item
        return str(int(number)) if number.is_integer() else item
    return item


def _sketch(view: Any, name: str) -> _ColumnSketch:
    column = view.get_column(name)
    counts_metric = column.get_metric("counts")
    n, missing = int(counts_metric.n.value), int(counts_metric.null.value)
    counts: dict[str, float] = {}
    fi = column.get_metric("frequent_items")
    if fi is not None and not fi.frequent_strings.value.is_empty():
        items = fi.frequent_strings.value.get_frequent_items(
            ds.frequent_items_error_type.NO_FALSE_NEGATIVES
        )
        for item, estimate, *_ in items:
            key = _item_key(name, item)
            counts[key] = counts.get(key, 0.0) + float(estimate)
    dist = column.get_metric("distribution")
    kll = dist.kll.value if dist is not None and dist.kll.value.get_n() > 0 else None
    return _ColumnSketch(n=n, missing=missing, counts=counts, kll=kll)


def _categorical_bins(
    name: str, ref: _ColumnSketch, cur: _ColumnSketch
) -> tuple[list[str], list, list]:
    """Reference categories (rare ones pooled) with reference and batch counts per bin.

    Bins follow the schema's order where there is one (age bands read young to old), otherwise
    the reference frequency.
    """
    total = max(ref.present, 1)
    kept = [k for k, c in ref.counts.items() if c / total >= MIN_CATEGORY_SHARE]
    spec = COLUMN_BY_NAME.get(name)
    order = {str(v): i for i, v in enumerate(spec.values)} if spec and spec.values else {}
    kept.sort(key=lambda k: (order.get(k, len(order)), -ref.counts[k]))
    ref_counts = [ref.counts[k] for k in kept]
    cur_counts = [cur.counts.get(k, 0.0) for k in kept]
    ref_counts.append(max(ref.present - sum(ref_counts), 0.0))
    cur_counts.append(max(cur.present - sum(cur_counts), 0.0))
    return [*kept, OTHER], ref_counts, cur_counts


def _edges(ref: _ColumnSketch, integer: bool) -> list[float]:
    """Bin edges at the reference deciles (half-integers for counts); none if all missing."""
    if ref.kll is None:
        return []
    quantiles = np.array(ref.kll.get_quantiles(DECILES.tolist()), dtype=np.float64)
    edges = np.floor(quantiles) + 0.5 if integer else quantiles
    return sorted({round(float(e), 12) for e in edges})


def _bin_label(lo: float | None, hi: float | None, integer: bool) -> str:
    if integer:
        first = None if lo is None else math.ceil(lo)
        last = None if hi is None else math.floor(hi)
        if first is None:
            return f"≤{last}"
        if last is None:
            return f"≥{first}"
        return str(first) if first == last else f"{first}–{last}"
    left = "-∞" if lo is None else f"{lo:.3g}"
    right = "∞" if hi is None else f"{hi:.3g}"
    return f"[{left}, {right})"


def _numeric_bins(
    ref: _ColumnSketch, cur: _ColumnSketch, integer: bool
) -> tuple[list[str], list, list]:
    """Reference-decile bins (half-integer edges for counts) with counts from both sketches."""
    edges = _edges(ref, integer)

    def counts(side: _ColumnSketch) -> list[float]:
        if side.kll is None or not edges:
            return [float(side.present)] + [0.0] * len(edges)
        cdf = np.asarray(side.kll.get_cdf(edges), dtype=float)
        return (np.diff(np.concatenate([[0.0], cdf])) * side.present).tolist()

    bounds = [None, *edges, None]
    labels = [_bin_label(bounds[i], bounds[i + 1], integer) for i in range(len(edges) + 1)]
    return labels, counts(ref), counts(cur)


def _cdf(kll: Any, points: np.ndarray) -> np.ndarray:
    """P(X < x) at each point (the sketch appends P(X < inf) = 1, dropped here)."""
    return np.asarray(kll.get_cdf(points.tolist()), dtype=float)[:-1]


def _wasserstein(ref: _ColumnSketch, cur: _ColumnSketch, integer: bool) -> float:
    """Wasserstein-1 = integral of |F_ref - F_batch|, in reference standard deviations.

    Integrating the two CDFs (at every half-integer for counts, on a fine grid of reference and
    batch quantiles otherwise) is smooth; differencing quantiles on a grid is not for discrete
    data (a grid point next to a step flips by a whole unit).
    """
    if ref.kll is None or cur.kll is None:
        return 0.0
    lo = min(ref.kll.get_min_value(), cur.kll.get_min_value())
    hi = max(ref.kll.get_max_value(), cur.kll.get_max_value())
    if integer and hi - lo <= MAX_INTEGER_POINTS:
        xs = np.arange(math.floor(lo), math.ceil(hi) + 1, dtype=float) + 0.5
        widths = np.ones_like(xs)
    else:
        grid = QUANTILE_GRID.tolist()
        points = np.concatenate([ref.kll.get_quantiles(grid), cur.kll.get_quantiles(grid)])
        xs = np.unique(np.concatenate([[lo], points, [hi]]))
        widths = np.diff(xs, append=xs[-1])
    gap = np.abs(_cdf(ref.kll, xs) - _cdf(cur.kll, xs))
    scale = float(np.std(ref.kll.get_quantiles(QUANTILE_GRID.tolist()))) or 1.0
    return float(np.sum(gap * widths) / scale)


def _shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [float(c) / total if total > 0 else 0.0 for c in counts]


def _scores(name: str, kind: str, ref: _ColumnSketch, cur: _ColumnSketch) -> tuple[dict, list]:
    """Effect sizes of one feature (every registered statistic of its kind) and the bins
    (label, reference share, batch share)."""
    integer = name in COLUMN_BY_NAME
    if kind in ("numeric", "prediction"):
        labels, ref_counts, cur_counts = _numeric_bins(ref, cur, integer)
    else:
        labels, ref_counts, cur_counts = _categorical_bins(name, ref, cur)
    comparison = Comparison(name, kind, ref, cur, list(ref_counts), list(cur_counts), integer)
    scores = {s.name: s.compute(comparison) for s in STATISTICS if kind in s.kinds}
    bins = list(zip(labels, _shares(ref_counts), _shares(cur_counts), strict=True))
    return scores, bins


def _common_columns(reference: Any, batch: Any) -> list[str]:
    return sorted(set(reference.get_columns()) & set(batch.get_columns()))


def raw_scores(reference: Any, batch: Any) -> dict[str, dict[str, float]]:
    """Effect sizes of every column the two profiles share (no thresholds, no severity)."""
    out = {}
    for name in _common_columns(reference, batch):
        kind = _kind(name, reference)
        out[name] = _scores(name, kind, _sketch(reference, name), _sketch(batch, name))[0]
    return out


# ----------------------------------------------------------------------------------------------
# Thresholds calibrated on no-drift batches
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """Per-feature thresholds for each decision statistic, from clean batches of `batch_size`."""

    features: dict[str, dict[str, float]]
    batch_size: int
    n_batches: int
    margin: float
    null_max: dict[str, dict[str, float]] = field(default_factory=dict)

    def for_rows(self, n_rows: int) -> dict[str, dict[str, float]]:
        """Thresholds for a batch of `n_rows`: raised for smaller batches (more noise)."""
        factor = self.batch_size / max(n_rows, 1)
        if factor <= 1:
            return self.features
        return {
            feature: {s: t * factor ** STATISTIC[s].noise_power for s, t in stats.items()}
            for feature, stats in self.features.items()
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (what `write_thresholds` stores)."""
        return {"version": 1, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Thresholds:
        """Inverse of `to_dict`."""
        return cls(
            features={f: dict(s) for f, s in data["features"].items()},
            batch_size=int(data["batch_size"]),
            n_batches=int(data["n_batches"]),
            margin=float(data["margin"]),
            null_max={f: dict(s) for f, s in data.get("null_max", {}).items()},
        )


def calibrate_thresholds(pairs: Sequence[tuple[Any, Any]], *, margin: float = 1.5) -> Thresholds:
    """Thresholds from (reference, clean batch) profile pairs: the largest clean value of each
    decision statistic times `margin`, never below its floor.

    Args:
        pairs: Profiles of a reference and of a no-drift batch patient-disjoint from it (see
            `null_pairs`; a fixed reference with held-out batches works too).
        margin: Safety factor over the largest value seen on clean batches.
    """
    if not pairs:
        raise ValueError("calibration needs at least one (reference, clean batch) pair")
    runs = [raw_scores(reference, batch) for reference, batch in pairs]
    null_max: dict[str, dict[str, float]] = {}
    features: dict[str, dict[str, float]] = {}
    for name in runs[0]:
        decide = deciding(_kind(name, pairs[0][0]))
        null_max[name] = {s: max(run[name][s] for run in runs if name in run) for s in decide}
        features[name] = {s: max(v * margin, STATISTIC[s].floor) for s, v in null_max[name].items()}
    sizes = [profiling.profile_rows(batch) for _, batch in pairs]
    return Thresholds(features, int(np.median(sizes)), len(pairs), margin, null_max)


def _patients_or_rows(frame: pd.DataFrame) -> pd.Series:
    """Patients of the rows (`pseudonyms.patient_groups`), or one group per row if unknown."""
    try:
        return patient_groups(frame)
    except ValueError:
        return pd.Series(range(len(frame)), index=frame.index)


def _patient_groups(
    frame: pd.DataFrame, n_groups: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Row positions of `n_groups` groups of about equal size; a patient stays in one group."""
    ids = _patients_or_rows(frame)
    codes, uniques = pd.factorize(ids)
    order = rng.permutation(len(uniques))
    sizes = np.bincount(codes, minlength=len(uniques))[order]
    group_of_patient = np.empty(len(uniques), dtype=int)
    group_of_patient[order] = np.minimum(
        (np.cumsum(sizes) - 1) * n_groups // max(len(frame), 1), n_groups - 1
    )
    group_of_row = group_of_patient[codes]
    return [np.flatnonzero(group_of_row == g) for g in range(n_groups)]


def null_pairs(
    frame: pd.DataFrame,
    *,
    n_batches: int = 20,
    batch_size: int = 5000,
    seed: int = 0,
    profile: Callable[[pd.DataFrame], Any] = profiling.profile_frame,
) -> list[tuple[Any, Any]]:
    """No-drift (reference, batch) pairs from the reference period, patient-grouped K-fold.

    The data is cut into groups of about `batch_size` rows, whole patients per group; each group
    is a clean batch and the merge of all the other groups its reference, so every batch is
    patient-disjoint from its reference and from the other batches of the same cut. New random
    cuts are made until `n_batches` pairs exist. Each cut costs one profiling pass plus merges.
    Independent batches matter: batches drawn with overlap from a small held-out pool share that
    pool's deviation, and thresholds from them come out too tight.
    """
    rng = np.random.default_rng(seed)
    n_groups = max(2, len(frame) // max(batch_size, 1))
    pairs: list[tuple[Any, Any]] = []
    while len(pairs) < n_batches:
        views = [profile(frame.iloc[rows]) for rows in _patient_groups(frame, n_groups, rng)]
        prefix = [views[0]]
        for view in views[1:]:
            prefix.append(prefix[-1].merge(view))
        suffix = [views[-1]]
        for view in reversed(views[:-1]):
            suffix.insert(0, view.merge(suffix[0]))
        for g in range(n_groups):
            rest = ([prefix[g - 1]] if g else []) + ([suffix[g + 1]] if g + 1 < n_groups else [])
            pairs.append((profiling.merge_profiles(rest), views[g]))
    return pairs[:n_batches]


def calibrate_from_frame(
    frame: pd.DataFrame,
    *,
    n_batches: int = 20,
    batch_size: int = 5000,
    margin: float = 1.5,
    seed: int = 0,
) -> Thresholds:
    """Feature thresholds from the reference data itself (see `null_pairs`): pass the frame the
    reference profile was built from (the training split), with `patient_nbr`."""
    pairs = null_pairs(frame, n_batches=n_batches, batch_size=batch_size, seed=seed)
    return calibrate_thresholds(pairs, margin=margin)


def calibrate_predictions(
    probabilities: Sequence[float] | np.ndarray,
    *,
    n_batches: int = 20,
    batch_size: int = 5000,
    margin: float = 1.5,
    seed: int = 0,
) -> tuple[Any, Thresholds]:
    """Reference profile and thresholds for prediction drift from held-out predictions (the
    training holdout: out-of-sample, unlike predictions on the training data)."""
    values = np.asarray(probabilities, dtype=float).ravel()
    frame = pd.DataFrame({profiling.PREDICTION_COLUMN: values})
    pairs = null_pairs(
        frame, n_batches=n_batches, batch_size=min(batch_size, len(values) // 2), seed=seed,
        profile=lambda part: profiling.profile_predictions(part[profiling.PREDICTION_COLUMN]),
    )  # fmt: skip
    reference = profiling.profile_predictions(values)
    return reference, calibrate_thresholds(pairs, margin=margin)


def write_thresholds(thresholds: Thresholds, url: str) -> str:
    """Store thresholds as JSON next to the reference profile; returns the URL."""
    return storage.write_json(url, thresholds.to_dict())


def read_thresholds(url: str) -> Thresholds:
    """Load thresholds written by `write_thresholds`."""
    return Thresholds.from_dict(storage.read_json(url))


# ----------------------------------------------------------------------------------------------
# Severity
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeverityPolicy:
    """Turns threshold ratios into levels. A feature's ratio is max(score / threshold).

    Feature level: ratio > minor_ratio minor, > moderate_ratio moderate, > major_ratio major.
    Batch level: the worst feature level, raised to moderate (major) when at least
    `moderate_features` (`major_features`) features exceed their thresholds.
    """

    minor_ratio: float = 1.0
    moderate_ratio: float = 2.0
    major_ratio: float = 4.0
    moderate_features: int = 3
    major_features: int = 6

    def level(self, ratio: float) -> Severity:
        """Level of one feature from its ratio."""
        if ratio > self.major_ratio:
            return Severity.MAJOR
        if ratio > self.moderate_ratio:
            return Severity.MODERATE
        if ratio > self.minor_ratio:
            return Severity.MINOR
        return Severity.NONE


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature (or of the label, or of the prediction) against the reference."""

    feature: str
    kind: str
    n_reference: int
    n_batch: int
    scores: dict[str, float]
    thresholds: dict[str, float]
    ratio: float
    driver: str
    level: Severity
    missing_reference: float
    missing_batch: float
    bins: list[tuple[str, float, float]]


def _feature_drift(
    name: str, reference: Any, batch: Any, thresholds: Mapping[str, float], policy: SeverityPolicy
) -> FeatureDrift:
    kind = _kind(name, reference)
    ref, cur = _sketch(reference, name), _sketch(batch, name)
    scores, bins = _scores(name, kind, ref, cur)
    ratios = {s: scores[s] / t for s, t in thresholds.items() if t > 0 and s in scores}
    driver = max(ratios, key=ratios.__getitem__) if ratios else ""
    ratio = ratios.get(driver, 0.0)
    return FeatureDrift(
        feature=name, kind=kind, n_reference=ref.n, n_batch=cur.n, scores=scores,
        thresholds=dict(thresholds), ratio=ratio, driver=driver, level=policy.level(ratio),
        missing_reference=ref.missing / max(ref.n, 1), missing_batch=cur.missing / max(cur.n, 1),
        bins=bins,
    )  # fmt: skip


def score_features(
    reference: Any,
    batch: Any,
    thresholds: Thresholds,
    policy: SeverityPolicy | None = None,
) -> list[FeatureDrift]:
    """Drift of every calibrated column present in both profiles, worst first.

    Columns missing from the batch (the label before it arrives) are simply not scored.

    Raises:
        ValueError: the batch profile is empty.
    """
    n_rows = profiling.profile_rows(batch)
    if n_rows == 0:
        raise ValueError("the batch profile has no rows: nothing to score")
    policy = policy or SeverityPolicy()
    limits = thresholds.for_rows(n_rows)
    names = [n for n in _common_columns(reference, batch) if n in limits]
    drifts = [_feature_drift(n, reference, batch, limits[n], policy) for n in names]
    return sorted(drifts, key=lambda d: -d.ratio)


def batch_severity(
    features: Sequence[FeatureDrift], policy: SeverityPolicy | None = None
) -> tuple[Severity, list[str]]:
    """Severity of a batch and the features responsible (above threshold, worst first)."""
    policy = policy or SeverityPolicy()
    exceeding = sorted(
        (f for f in features if f.ratio > policy.minor_ratio), key=lambda f: -f.ratio
    )
    if not exceeding:
        return Severity.NONE, []
    worst = max((f.level for f in exceeding), key=lambda s: s.rank)
    if len(exceeding) >= policy.major_features:
        worst = Severity.MAJOR
    elif len(exceeding) >= policy.moderate_features and worst.rank < Severity.MODERATE.rank:
        worst = Severity.MODERATE
    return worst, [f.feature for f in exceeding]


# ----------------------------------------------------------------------------------------------
# Performance where labels have arrived
# ----------------------------------------------------------------------------------------------


def expected_calibration_error(
    y_true: Sequence[int] | np.ndarray, y_prob: Sequence[float] | np.ndarray, n_bins: int = 10
) -> float:
    """ECE over equal-frequency bins of the predicted probability (stable for small risks)."""
    y, p = np.asarray(y_true, dtype=float), np.asarray(y_prob, dtype=float)
    if len(p) == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    gaps = [
        len(idx) * abs(y[idx].mean() - p[idx].mean())
        for idx in np.array_split(order, min(n_bins, len(p)))
    ]
    return float(sum(gaps) / len(p))


@dataclass(frozen=True)
class PerformanceBaseline:
    """The training holdout's figures that realised performance is compared with."""

    roc_auc: float
    ece: float
    observed_rate: float
    mean_predicted: float

    @property
    def calibration_gap(self) -> float:
        """Absolute difference between the observed rate and the mean prediction."""
        return abs(self.observed_rate - self.mean_predicted)

    def to_dict(self) -> dict[str, float]:
        """JSON-serialisable form (store it with the model's metadata)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PerformanceBaseline:
        """Inverse of `to_dict`."""
        return cls(
            **{k: float(data[k]) for k in ("roc_auc", "ece", "observed_rate", "mean_predicted")}
        )


def performance_baseline(
    y_true: Sequence[int] | np.ndarray, y_prob: Sequence[float] | np.ndarray
) -> PerformanceBaseline:
    """Holdout figures, computed exactly as monitoring computes them on labelled batches."""
    y, p = np.asarray(y_true, dtype=int), np.asarray(y_prob, dtype=float)
    return PerformanceBaseline(
        roc_auc=float(roc_auc_score(y, p)),
        ece=expected_calibration_error(y, p),
        observed_rate=float(y.mean()),
        mean_predicted=float(p.mean()),
    )


@dataclass(frozen=True)
class PerformanceTolerance:
    """How far realised performance may fall behind the holdout before it counts as a drop.

    Defaults sit about four standard errors above the noise of a 5,000-row batch (AUC SE about
    0.013, observed-rate SE about 0.0045).
    """

    auc_drop: float = 0.05
    calibration_gap: float = 0.025
    ece_increase: float = 0.05
    min_positives: int = 30


@dataclass(frozen=True)
class PerformanceResult:
    """Realised performance of a labelled batch against the holdout."""

    n: int
    positives: int
    evaluable: bool
    roc_auc: float | None
    ece: float | None
    observed_rate: float
    mean_predicted: float
    baseline: PerformanceBaseline
    reasons: list[str]

    @property
    def performance_drop(self) -> bool:
        """True when any tolerance is exceeded."""
        return bool(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {**asdict(self), "performance_drop": self.performance_drop}


def assess_performance(
    y_true: Sequence[int] | np.ndarray,
    y_prob: Sequence[float] | np.ndarray,
    baseline: PerformanceBaseline,
    tolerance: PerformanceTolerance | None = None,
) -> PerformanceResult:
    """Realised ROC AUC and calibration of a labelled batch vs the holdout, with the reasons of a
    performance drop (AUC fell by more than the tolerance, calibration-in-the-large or ECE
    worsened). Batches with too few positives or negatives are reported, not judged."""
    tol = tolerance or PerformanceTolerance()
    y, p = np.asarray(y_true, dtype=int), np.asarray(y_prob, dtype=float)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    positives = int(y.sum())
    evaluable = min(positives, len(y) - positives) >= tol.min_positives
    observed, mean_pred = (float(y.mean()), float(p.mean())) if len(y) else (0.0, 0.0)
    auc = float(roc_auc_score(y, p)) if evaluable else None
    ece = expected_calibration_error(y, p) if evaluable else None
    reasons = []
    if auc is not None and baseline.roc_auc - auc > tol.auc_drop:
        reasons.append(f"ROC AUC {auc:.3f} vs holdout {baseline.roc_auc:.3f}")
    gap = abs(observed - mean_pred)
    if evaluable and gap - baseline.calibration_gap > tol.calibration_gap:
        reasons.append(f"observed rate {observed:.3f} vs mean predicted {mean_pred:.3f}")
    if ece is not None and ece - baseline.ece > tol.ece_increase:
        reasons.append(f"ECE {ece:.3f} vs holdout {baseline.ece:.3f}")
    return PerformanceResult(
        n=len(y), positives=positives, evaluable=evaluable, roc_auc=auc, ece=ece,
        observed_rate=observed, mean_predicted=mean_pred, baseline=baseline, reasons=reasons,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class DriftReport:
    """Everything monitoring concluded about one batch (aggregates only, no identifiers)."""

    batch_id: str
    n_rows: int
    severity: Severity
    responsible: list[str]
    features: list[FeatureDrift]
    prediction: FeatureDrift | None = None
    performance: PerformanceResult | None = None
    policy: SeverityPolicy = field(default_factory=SeverityPolicy)
    calibration: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def performance_drop(self) -> bool:
        """True when labelled performance fell beyond tolerance."""
        return self.performance is not None and self.performance.performance_drop

    @property
    def alert(self) -> bool:
        """Moderate or major drift, or a performance drop: what should trigger retraining."""
        return self.severity.rank >= Severity.MODERATE.rank or self.performance_drop

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (scores go to the artifact store, events carry a summary)."""
        out = asdict(self)
        out["performance"] = self.performance.to_dict() if self.performance else None
        out |= {"performance_drop": self.performance_drop, "alert": self.alert}
        return _jsonable(out)

    def summary(self) -> dict[str, Any]:
        """Small JSON payload for an event or an audit line: severity, features, reasons."""
        perf = self.performance
        return _jsonable({
            "batch_id": self.batch_id, "n_rows": self.n_rows, "severity": self.severity,
            "features": self.responsible, "alert": self.alert,
            "performance_drop": self.performance_drop,
            "reasons": perf.reasons if perf else [],
            "roc_auc": perf.roc_auc if perf else None,
        })  # fmt: skip

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per scored feature (prediction first), for a Prefect table artifact."""
        rows = [*([self.prediction] if self.prediction else []), *self.features]
        return _jsonable([
            {"feature": f.feature, "kind": f.kind, "level": f.level, "ratio": round(f.ratio, 3),
             "driver": f.driver, **{k: round(v, 5) for k, v in f.scores.items()},
             "missing_reference": round(f.missing_reference, 4),
             "missing_batch": round(f.missing_batch, 4)}
            for f in rows
        ])  # fmt: skip


def drift_report(
    batch_id: str,
    features: Sequence[FeatureDrift] = (),
    *,
    prediction: FeatureDrift | None = None,
    performance: PerformanceResult | None = None,
    policy: SeverityPolicy | None = None,
    thresholds: Thresholds | None = None,
) -> DriftReport:
    """Assemble a report; severity counts features, the label and the prediction alike."""
    policy = policy or SeverityPolicy()
    everything = [*features, *([prediction] if prediction else [])]
    severity, responsible = batch_severity(everything, policy)
    n_rows = max((f.n_batch for f in everything), default=performance.n if performance else 0)
    calibration = (
        {"batch_size": thresholds.batch_size, "n_batches": thresholds.n_batches,
         "margin": thresholds.margin}
        if thresholds else {}
    )  # fmt: skip
    return DriftReport(
        batch_id=batch_id, n_rows=n_rows, severity=severity, responsible=responsible,
        features=list(features), prediction=prediction, performance=performance,
        policy=policy, calibration=calibration,
    )  # fmt: skip


def score_predictions(
    reference: Any, batch: Any, thresholds: Thresholds, policy: SeverityPolicy | None = None
) -> FeatureDrift:
    """Drift of the predicted-probability distribution (profiles from `profile_predictions`)."""
    drifts = score_features(reference, batch, thresholds, policy)
    if not drifts:
        raise ValueError(f"no {profiling.PREDICTION_COLUMN} column in both profiles")
    return drifts[0]
