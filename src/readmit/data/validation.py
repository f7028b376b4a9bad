"""Great Expectations 1.x gate for raw encounters: suite built from the schema, run, reported.

The suite is derived from `readmit.schema.COLUMNS` (no value set is re-listed here), run with an
ephemeral GX context on a whole-dataframe batch, and condensed into a small `ValidationResult`
whose failures read like "race: unexpected values ['Martian'] (3 rows)". Identifier values
(encounter_id, patient_nbr) never appear in a failure, a report or a log line.

A failing batch is quarantined in the artifact store with its original bytes and a JSON and a
self-contained HTML report, and `ValidationFailed` says what failed and where the batch went.
"""

from __future__ import annotations

import html
import json
import logging
import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from readmit import data, storage
from readmit.layout import StoreLayout
from readmit.reports.page import page
from readmit.schema import (
    COLUMN_BY_NAME,
    COLUMNS,
    LABEL_COLUMN,
    OUTCOME_FEED_COLUMNS,
    RAW_COLUMNS,
    Column,
    Kind,
)
from readmit.settings import PROJECT_ROOT

SUITE_NAME = "encounters"
SUITE_DIR = PROJECT_ROOT / "validations"
MAX_LISTED_FAILURES = 10
MAX_LISTED_VALUES = 5
_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of validating one batch, small and free of identifiers (safe to share)."""

    success: bool
    n_rows: int
    n_expectations: int
    failures: list[dict[str, Any]]
    duration_s: float
    checks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for report.json, lineage metadata and Prefect artifacts)."""
        return asdict(self)

    def failure_lines(self) -> list[str]:
        """One human line per failure: `column: detail` (or just the detail for table checks)."""
        return [
            f"{f['column']}: {f['detail']}" if f["column"] else str(f["detail"])
            for f in self.failures
        ]


class ValidationFailed(Exception):
    """A batch failed validation; it was quarantined at `quarantine_uri` and must not be used."""

    def __init__(self, result: ValidationResult, quarantine_uri: str) -> None:
        self.result = result
        self.quarantine_uri = quarantine_uri
        super().__init__(self._message())

    def __reduce__(self) -> tuple[Any, ...]:
        """Picklable (Prefect may persist a failed task's exception)."""
        return (type(self), (self.result, self.quarantine_uri))

    def _message(self) -> str:
        lines = self.result.failure_lines()
        shown = "; ".join(f"[{i}] {line}" for i, line in enumerate(lines[:MAX_LISTED_FAILURES], 1))
        more = (
            f"; and {len(lines) - MAX_LISTED_FAILURES} more"
            if len(lines) > MAX_LISTED_FAILURES
            else ""
        )
        return (
            f"the batch ({self.result.n_rows} rows) failed {len(lines)} of "
            f"{self.result.n_expectations} data checks: {shown}{more}. Nothing was trained, "
            "scored or stored from it. The original file and its report (report.json, "
            f"report.html) were quarantined at {self.quarantine_uri}; fix the data at its source "
            "and resend it."
        )


# --------------------------------------------------------------------------- suite (from schema)


def _gx() -> Any:
    """Import GX quietly (analytics off, no progress bars); it is slow, so only when needed."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import great_expectations as gx

    for name in ("great_expectations", "great_expectations._docs_decorators"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return gx


def _column_expectations(gxe: Any, column: Column, unique: bool = False) -> list[Any]:
    """Type, value set / range / pattern, uniqueness and missingness checks for one column."""
    name = column.name
    numeric = column.kind in (Kind.ID, Kind.INT)
    out: list[Any] = [
        gxe.ExpectColumnValuesToBeInTypeList(
            column=name, type_list=["Int64Dtype"] if numeric else ["StringDtype"]
        )
    ]
    if column.values is not None:
        out.append(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(column.values)))
    if numeric and (column.min_value is not None or column.max_value is not None):
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=name, min_value=column.min_value, max_value=column.max_value
            )
        )
    if column.regex is not None:
        out.append(gxe.ExpectColumnValuesToMatchRegex(column=name, regex=column.regex))
    if unique:
        out.append(gxe.ExpectColumnValuesToBeUnique(column=name))
    if not column.nullable:
        out.append(gxe.ExpectColumnValuesToNotBeNull(column=name))
    elif column.max_missing < 1:
        out.append(
            gxe.ExpectColumnValuesToNotBeNull(column=name, mostly=round(1 - column.max_missing, 6))
        )
    return out


@dataclass(frozen=True)
class Suite:
    """One GX suite: the schema columns a file must carry, exactly, and which must be unique.

    Every suite is built from `readmit.schema` columns, so a value set lives in one place."""

    name: str
    columns: tuple[Column, ...]
    unique: tuple[str, ...] = ()


ENCOUNTERS = Suite(SUITE_NAME, COLUMNS, unique=("encounter_id",))
"""Training batches: every column, the outcome included."""
ENCOUNTERS_SCORING = Suite(
    f"{SUITE_NAME}_scoring",
    tuple(c for c in COLUMNS if c.name != LABEL_COLUMN),
    unique=("encounter_id",),
)
"""Feed batches (scoring, monitoring): every column but the outcome."""
OUTCOMES = Suite("outcomes", tuple(COLUMN_BY_NAME[n] for n in OUTCOME_FEED_COLUMNS))
"""The outcomes feed: `encounter_id`, `readmitted`. Duplicates are not a validation failure:
the outcomes feed counts and reports them (`readmit.data.outcomes`)."""
SUITES = (ENCOUNTERS, ENCOUNTERS_SCORING, OUTCOMES)


def encounters_suite(require_label: bool) -> Suite:
    """The encounters suite with the label (training) or without it (scoring, monitoring)."""
    return ENCOUNTERS if require_label else ENCOUNTERS_SCORING


def suite_columns(require_label: bool) -> tuple[Column, ...]:
    """Schema columns a batch must carry: all of them, or all but the label for scoring."""
    return encounters_suite(require_label).columns


def suite_expectations(suite: Suite) -> list[Any]:
    """A suite's expectations, derived from its schema columns in schema order."""
    gxe = _gx().expectations
    out: list[Any] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[c.name for c in suite.columns], exact_match=True
        ),
        gxe.ExpectTableRowCountToBeBetween(min_value=1, max_value=None),
    ]
    for column in suite.columns:
        out.extend(_column_expectations(gxe, column, unique=column.name in suite.unique))
    return out


def build_expectations(require_label: bool = True) -> list[Any]:
    """The encounters suite's expectations (with or without the label)."""
    return suite_expectations(encounters_suite(require_label))


def suite_name(require_label: bool) -> str:
    """`encounters` for labelled (training) batches, `encounters_scoring` without the label."""
    return encounters_suite(require_label).name


def suite_json(suite: Suite | bool = True) -> dict[str, Any]:
    """Reviewable, deterministic JSON of a suite (no random ids), as committed in validations/.

    A bool selects the encounters suite with (True) or without (False) the label."""
    if isinstance(suite, bool):
        suite = encounters_suite(suite)
    expectations = []
    for expectation in suite_expectations(suite):
        config = expectation.configuration.to_json_dict()
        expectations.append({"type": config["type"], "kwargs": config["kwargs"]})
    return {
        "name": suite.name,
        "generated_from": (
            "readmit.schema.COLUMNS; regenerate: readmit.data.validation.write_suite_json"
        ),
        "expectations": expectations,
    }


def write_suite_json(folder: str | Path = SUITE_DIR) -> list[Path]:
    """Write every suite as JSON for review (`<suite name>_suite.json`)."""
    paths = []
    for suite in SUITES:
        path = Path(folder) / f"{suite.name}_suite.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(suite_json(suite), indent=2, sort_keys=False) + "\n")
        paths.append(path)
    return paths


@cache
def _batch_definition() -> Any:
    """Ephemeral GX context + pandas source + whole-dataframe batch definition (once a process)."""
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas("readmit").add_dataframe_asset("encounters")
    return asset.add_batch_definition_whole_dataframe("whole")


@cache
def _expectations(suite: Suite) -> tuple[Any, ...]:
    return tuple(suite_expectations(suite))


# --------------------------------------------------------------------------- running, condensing


def _plain(value: Any) -> Any:
    """numpy scalars -> Python; whole floats (from the float view of integer columns) -> int."""
    value = value.item() if hasattr(value, "item") else value
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _fmt_values(values: list[Any]) -> str:
    shown = [_plain(v) for v in values[:MAX_LISTED_VALUES]]
    more = f" and {len(values) - MAX_LISTED_VALUES} more" if len(values) > MAX_LISTED_VALUES else ""
    return f"{shown!r}{more}"


def _unexpected_values(result: dict[str, Any]) -> list[Any]:
    counts = result.get("partial_unexpected_counts") or []
    if counts:
        return [c["value"] for c in counts]
    return list(dict.fromkeys(result.get("partial_unexpected_list") or []))


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _describe(kind: str, kwargs: dict[str, Any], result: dict[str, Any], n_rows: int) -> str:
    """Specific, identifier-free sentence for one failed expectation."""
    column = kwargs.get("column")
    is_id = column is not None and column in RAW_COLUMNS and _is_id(column)
    n_bad = int(result.get("unexpected_count") or 0)
    if kind == "expect_table_columns_to_match_set":
        mismatched = (result.get("details") or {}).get("mismatched") or {}
        parts = []
        if mismatched.get("missing"):
            parts.append(f"missing columns {sorted(mismatched['missing'])}")
        if mismatched.get("unexpected"):
            parts.append(f"unexpected columns {sorted(mismatched['unexpected'])}")
        return "; ".join(parts) or "the column set does not match the schema"
    if kind == "expect_table_row_count_to_be_between":
        return f"the batch has {result.get('observed_value', 0)} rows; at least 1 is required"
    if kind == "expect_column_values_to_be_in_type_list":
        expected = kwargs.get("type_list")
        return f"column type is {result.get('observed_value')}, expected one of {expected}"
    if kind == "expect_column_values_to_be_in_set":
        if is_id:
            return f"{_rows(n_bad)} with values outside the allowed set"
        values = _fmt_values(_unexpected_values(result))
        return f"unexpected values {values} ({_rows(n_bad)})"
    if kind == "expect_column_values_to_be_between":
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        bound = f"[{_plain(lo)}, {'inf' if hi is None else _plain(hi)}]"
        if is_id:
            return f"{n_bad} values outside {bound}"
        return f"{n_bad} values outside {bound}, e.g. {_fmt_values(_unexpected_values(result))}"
    if kind == "expect_column_values_to_match_regex":
        values = _fmt_values(_unexpected_values(result))
        return f"{n_bad} values are not ICD-9 codes, e.g. {values}"
    if kind == "expect_column_values_to_be_unique":
        return f"{_rows(n_bad)} share a duplicated value (identifiers must be unique)"
    if kind == "expect_column_values_to_not_be_null":
        mostly = kwargs.get("mostly")
        share = n_bad / n_rows if n_rows else 0.0
        what = "missing or not an integer" if _is_numeric(column) else "missing"
        if mostly is not None and mostly < 1:
            return (
                f"{share:.1%} of values are {what} ({_rows(n_bad)}), above the tolerated "
                f"{1 - mostly:.0%}"
            )
        return f"{_rows(n_bad)} {what} (a value is required)"
    return f"failed {kind}"


def _is_id(column: str) -> bool:
    return any(c.name == column and c.kind is Kind.ID for c in COLUMNS)


def _is_numeric(column: str | None) -> bool:
    return any(c.name == column and c.kind in (Kind.ID, Kind.INT) for c in COLUMNS)


def _short(kind: str) -> str:
    return kind.removeprefix("expect_")


def _condense(
    gx_results: list[Any], n_rows: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """GX results -> (failures, checks), both identifier-free."""
    failures: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for item in gx_results:
        config = item.expectation_config
        kind, kwargs = config.type, dict(config.kwargs)
        column = kwargs.get("column")
        if item.exception_info and item.exception_info.get("raised_exception"):
            message = str(item.exception_info.get("exception_message", "")).splitlines()[:1]
            detail = f"could not be checked: {message[0] if message else 'error'}"
        elif not item.success:
            detail = _describe(kind, kwargs, item.result or {}, n_rows)
        else:
            detail = ""
        ok = bool(item.success) and not detail
        checks.append({"expectation": _short(kind), "column": column, "success": ok})
        if not ok:
            failures.append({"expectation": _short(kind), "column": column, "detail": detail})
    return failures, checks


MIN_ROWS_FOR_SHARES = 200
"""Missing-value shares are only judged on batches this large: one encounter without a race is
100% missing but not a broken feed."""


def _is_share_check(expectation: Any) -> bool:
    mostly = expectation.configuration.kwargs.get("mostly")
    return mostly is not None and mostly < 1


def _plan(
    expectations: tuple[Any, ...], present: set[str], n_rows: int
) -> tuple[list[Any], dict[str, list[Any]]]:
    """Split the suite: table-level checks and column types (cheap: no row scans) run on the whole
    frame; value checks run column by column (GX copies the whole frame for each row-level check,
    so a one-column frame makes them ~5x faster). Checks of absent columns are left out: the
    column-set check already names those columns."""
    table: list[Any] = []
    by_column: dict[str, list[Any]] = {}
    for expectation in expectations:
        column = expectation.configuration.kwargs.get("column")
        if column is None or expectation.expectation_type.endswith("_in_type_list"):
            if column is None or column in present:
                table.append(expectation)
        elif column in present and not (
            _is_share_check(expectation) and n_rows < MIN_ROWS_FOR_SHARES
        ):
            by_column.setdefault(column, []).append(expectation)
    return table, by_column


def _value_view(series: pd.Series) -> pd.DataFrame:
    """One-column frame for value checks; nullable integers as float64 (NA -> NaN, still null)
    because GX only vectorises range checks on numpy dtypes."""
    if isinstance(series.dtype, pd.Int64Dtype):
        series = series.astype("float64")
    return series.to_frame()


def _run(gx: Any, batch_definition: Any, frame: pd.DataFrame, expectations: list[Any]) -> list[Any]:
    suite = gx.ExpectationSuite(name=SUITE_NAME, expectations=[e.copy() for e in expectations])
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    return list(batch.validate(suite, result_format=_RESULT_FORMAT).results)


def validate_frame(
    frame: pd.DataFrame, *, require_label: bool = True, suite: Suite | None = None
) -> ValidationResult:
    """Run a suite on a parsed frame (schema dtypes, as `data.parse_encounters` gives).

    The default is the encounters suite. With `require_label=False` (scoring, monitoring) the
    label may be absent; if it is present it is still checked against its value set.
    """
    started = time.perf_counter()
    gx = _gx()
    if suite is None:
        suite = encounters_suite(require_label or LABEL_COLUMN in frame.columns)
    present = {str(c) for c in frame.columns}
    table, by_column = _plan(_expectations(suite), present, len(frame))
    with _LOCK, warnings.catch_warnings():
        # GX runs regexes through str.contains, which warns about the pattern's groups.
        warnings.filterwarnings("ignore", "This pattern is interpreted as a regular expression")
        batch_definition = _batch_definition()  # also creates the context suites need
        results = _run(gx, batch_definition, frame, table)
        for column, expectations in by_column.items():
            results += _run(gx, batch_definition, _value_view(frame[column]), expectations)
    order = {name: i for i, name in enumerate(RAW_COLUMNS)}
    results.sort(key=lambda r: order.get(r.expectation_config.kwargs.get("column"), -1))
    failures, checks = _condense(results, len(frame))
    return ValidationResult(
        success=not failures,
        n_rows=len(frame),
        n_expectations=len(checks),
        failures=failures,
        duration_s=round(time.perf_counter() - started, 3),
        checks=checks,
    )


def validate_bytes(
    content: bytes, *, require_label: bool = True, suite: Suite | None = None
) -> tuple[pd.DataFrame | None, ValidationResult]:
    """Parse uncompressed CSV bytes and validate them; an unreadable file is a failed result."""
    started = time.perf_counter()
    try:
        columns = (suite or encounters_suite(require_label)).columns
        frame = data.parse_encounters(content, [c.name for c in columns])
    except data.DataFormatError as exc:
        failure = {"expectation": "readable_csv", "column": None, "detail": str(exc)}
        result = ValidationResult(
            success=False,
            n_rows=0,
            n_expectations=1,
            failures=[failure],
            duration_s=round(time.perf_counter() - started, 3),
            checks=[{"expectation": "readable_csv", "column": None, "success": False}],
        )
        return None, result
    return frame, validate_frame(frame, require_label=require_label, suite=suite)


# --------------------------------------------------------------------------- reports, quarantine

_CSS = """
.pass{background:#15803d}.fail{background:#b91c1c}th,td{text-align:left}
td.ok{color:#15803d}td.bad{color:#b91c1c;font-weight:600}
"""


def _cell(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def render_report_html(result: ValidationResult, title: str) -> str:
    """Self-contained HTML report (inline CSS, no scripts, no external links): renders offline."""
    verdict = "PASSED" if result.success else "FAILED"
    badge = "pass" if result.success else "fail"
    failure_rows = "".join(
        f"<tr><td>{_cell(f['expectation'])}</td><td>{_cell(f['column'])}</td>"
        f"<td>{_cell(f['detail'])}</td></tr>"
        for f in result.failures
    )
    failures = (
        f"<table><tr><th>Expectation</th><th>Column</th><th>Problem</th></tr>{failure_rows}</table>"
        if result.failures
        else '<p class="muted">No failed expectations.</p>'
    )
    check_rows = "".join(
        f"<tr><td>{_cell(c['expectation'])}</td><td>{_cell(c['column'])}</td>"
        f'<td class="{"ok" if c["success"] else "bad"}">{"pass" if c["success"] else "FAIL"}'
        "</td></tr>"
        for c in result.checks
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    body = (
        f"<h1>{_cell(title)}</h1>"
        f'<p><span class="badge {badge}">{verdict}</span></p>'
        f"<p>{result.n_rows} rows, {result.n_expectations} expectations checked, "
        f"{len(result.failures)} failed, in {result.duration_s:.2f} s.</p>"
        f"<h2>Failures</h2>{failures}"
        "<h2>All checked expectations</h2>"
        f"<table><tr><th>Expectation</th><th>Column</th><th>Result</th></tr>{check_rows}</table>"
        f'<p class="muted">Generated {generated} by readmit.data.validation '
        "(Great Expectations suite built from readmit.schema).</p>"
    )
    return page(title, body, _CSS)


def utc_stamp() -> str:
    """UTC timestamp for folder names, e.g. 20240131T235959Z."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def quarantine(raw: bytes, result: ValidationResult, *, artifacts_uri: str, batch_name: str) -> str:
    """Copy a rejected batch and its reports to `<artifacts>/quarantine/<stamp>-<batch>/`."""
    base = StoreLayout(artifacts_uri).quarantine_dir(utc_stamp(), batch_name)
    folder, n = base, 1
    while storage.exists(folder):  # same batch rejected twice within a second: keep both
        n += 1
        folder = f"{base}-{n}"
    name = "original.csv.gz" if raw[:2] == b"\x1f\x8b" else "original.csv"
    storage.write_bytes(f"{folder}/{name}", raw)
    storage.write_json(f"{folder}/report.json", {**result.to_dict(), "batch": batch_name})
    storage.write_text(
        f"{folder}/report.html", render_report_html(result, f"Quarantined batch: {batch_name}")
    )
    return folder


def validate_or_quarantine(
    content: bytes,
    *,
    artifacts_uri: str,
    batch_name: str,
    require_label: bool = True,
    raw: bytes | None = None,
    suite: Suite | None = None,
) -> pd.DataFrame:
    """The frame if the batch is valid; otherwise quarantine it and raise `ValidationFailed`."""
    return _validated(content, artifacts_uri, batch_name, require_label, raw, suite)[0]


def validate_and_record(
    content: bytes, *, artifacts_uri: str, batch_name: str, raw: bytes | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """`validate_or_quarantine` for training data, keeping the evidence of a pass too: the
    report (JSON and HTML) under `validation/`, and its summary with the report's URL."""
    frame, result = _validated(content, artifacts_uri, batch_name, True, raw)
    report_dir = StoreLayout(artifacts_uri).validation_dir(utc_stamp(), batch_name)
    storage.write_json(f"{report_dir}/report.json", result.to_dict())
    storage.write_text(
        f"{report_dir}/report.html", render_report_html(result, f"Validation: {batch_name}")
    )
    return frame, {**result.to_dict(), "report_uri": f"{report_dir}/report.html"}


def _validated(
    content: bytes,
    artifacts_uri: str,
    batch_name: str,
    require_label: bool,
    raw: bytes | None,
    suite: Suite | None = None,
) -> tuple[pd.DataFrame, ValidationResult]:
    frame, result = validate_bytes(content, require_label=require_label, suite=suite)
    if result.success and frame is not None:
        return frame, result
    folder = quarantine(
        content if raw is None else raw, result, artifacts_uri=artifacts_uri, batch_name=batch_name
    )
    raise ValidationFailed(result, folder)
