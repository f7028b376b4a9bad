"""The outcomes feed: what happened to patients, 30 days or more after discharge.

Outcomes arrive as CSV files of `encounter_id,readmitted` (`schema.OUTCOME_FEED_COLUMNS`),
through `readmit outcomes add FILE` or dropped into the store's `outcomes/inbox/` (the
monitoring flow takes them). Each file is validated with Great Expectations
(`validation.OUTCOMES`); an invalid file is quarantined with its report, as feed batches are, and
nothing of it is stored. A valid file is pseudonymised on arrival (its raw `encounter_id` never
reaches the store: only `encounter_key`, `pseudonyms`) and reconciled with what is stored:

* accepted: outcomes of encounters not stored yet, appended as ONE new file to
  `outcomes/received/` (append-only: nothing stored is ever rewritten);
* duplicates: the same outcome again, in the file or already stored: counted, nothing changes;
* conflicts: an outcome that contradicts the stored one, or two different outcomes for one
  encounter in the same file: the stored outcome stands (in-file contradictions store neither),
  the contradicting rows are set aside in `outcomes/conflicts/` with the stored value, counted;
* unknown encounters: accepted outcomes of encounters the service has not served (not in the
  prediction log when the file arrived): stored all the same, counted and reported.

The join with served predictions is monitoring's (`readmit.monitoring.windows`): an outcome
received before its prediction was served is counted there and never judges the model.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from readmit import data, storage
from readmit.data import validation
from readmit.layout import StoreLayout
from readmit.ops import audit
from readmit.pseudonyms import ENCOUNTER_KEY, key_column
from readmit.schema import LABEL_COLUMN

RECEIVED_AT = "received_at"
STORED_COLUMNS = (ENCOUNTER_KEY, LABEL_COLUMN, RECEIVED_AT)
"""What the outcomes store holds per encounter: its pseudonym, the outcome, when it arrived."""
STORED_LABEL = "stored_readmitted"
SUFFIX = ".csv.gz"


@dataclass(frozen=True)
class Reconciled:
    """An outcomes file against the store: what to append, what was set aside, what repeated."""

    accepted: pd.DataFrame
    conflicts: pd.DataFrame
    duplicates: int


@dataclass(frozen=True)
class OutcomesReport:
    """What one outcomes file brought (counts only: safe to log, audit and publish)."""

    source: str
    received_at: str
    n_rows: int
    accepted: int
    duplicates: int
    conflicts: int
    unknown_encounters: int | None
    stored_uri: str | None
    conflicts_uri: str | None
    report_uri: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    def summary(self) -> str:
        """One line for a log or the command line."""
        unknown = (
            "unknown encounters not checked (no prediction log)"
            if self.unknown_encounters is None
            else f"{self.unknown_encounters} of unknown encounters (not served; kept)"
        )
        return (
            f"{self.source}: {self.n_rows} outcomes: {self.accepted} accepted, "
            f"{self.duplicates} duplicates (ignored), {self.conflicts} conflicting (set aside"
            f"{f' at {self.conflicts_uri}' if self.conflicts_uri else ''}), {unknown}"
        )


def source_name(name: str) -> str:
    """A file name made safe for store paths: `outcomes 2024-01.csv.gz` -> `outcomes_2024-01`."""
    stem = name.rsplit("/", 1)[-1]
    for suffix in (".gz", ".csv"):
        stem = stem.removesuffix(suffix)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return safe.strip("._") or "outcomes"


def pseudonymise(frame: pd.DataFrame, key: bytes, received_at: str) -> pd.DataFrame:
    """Validated outcomes -> the stored form: encounter pseudonym, outcome, arrival time."""
    return pd.DataFrame({
        ENCOUNTER_KEY: key_column(frame["encounter_id"], key, "encounter_id").to_numpy(),
        LABEL_COLUMN: frame[LABEL_COLUMN].astype(str).to_numpy(),
        RECEIVED_AT: received_at,
    })  # fmt: skip


def reconcile(incoming: pd.DataFrame, stored: pd.DataFrame) -> Reconciled:
    """Split pseudonymised outcomes into new ones, repeats and contradictions (pure).

    Both frames have `STORED_COLUMNS`; `stored` holds one outcome per encounter.
    """
    values = incoming.groupby(ENCOUNTER_KEY, sort=False)[LABEL_COLUMN].nunique()
    torn = incoming[ENCOUNTER_KEY].isin(values.index[values > 1])
    unique = incoming[~torn].drop_duplicates(ENCOUNTER_KEY)
    duplicates = int((~torn).sum() - len(unique))
    known = stored.set_index(ENCOUNTER_KEY)[LABEL_COLUMN]
    stored_value = unique[ENCOUNTER_KEY].map(known)
    new = stored_value.isna()
    same = ~new & (stored_value == unique[LABEL_COLUMN])
    contradicting = unique[~new & ~same].assign(**{STORED_LABEL: stored_value[~new & ~same]})
    in_file = incoming[torn].assign(**{STORED_LABEL: incoming[torn][ENCOUNTER_KEY].map(known)})
    conflicts = pd.concat([contradicting, in_file], ignore_index=True)
    return Reconciled(
        accepted=unique[new].reset_index(drop=True),
        conflicts=conflicts[[*STORED_COLUMNS, STORED_LABEL]],
        duplicates=duplicates + int(same.sum()),
    )


def _read_csv(url: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data.decompress(storage.read_bytes(url))), dtype=str)


def read_received(artifacts_uri: str) -> pd.DataFrame:
    """Every stored outcome, one per encounter (the first to arrive stands), `STORED_COLUMNS`."""
    files = storage.list_files(StoreLayout(artifacts_uri).outcomes_received(), f"*{SUFFIX}")
    if not files:
        return pd.DataFrame({c: pd.Series(dtype=str) for c in STORED_COLUMNS})
    frames = [_read_csv(url)[list(STORED_COLUMNS)] for url in sorted(files)]
    return pd.concat(frames, ignore_index=True).drop_duplicates(ENCOUNTER_KEY, keep="first")


def _write_csv(url: str, frame: pd.DataFrame) -> str:
    body = frame.to_csv(index=False).encode()
    return storage.write_bytes(url, gzip.compress(body, compresslevel=6))


def add_outcomes(
    raw: bytes,
    *,
    source: str,
    artifacts_uri: str,
    key: bytes,
    served_keys: Collection[str] | None = None,
    now: datetime | None = None,
) -> OutcomesReport:
    """Validate, pseudonymise, reconcile and store one outcomes file (gzip or plain CSV).

    Args:
        served_keys: encounter pseudonyms the service has served so far, to count outcomes of
            unknown encounters (None: not checked).

    Raises:
        validation.ValidationFailed: the file is invalid; it was quarantined with its report.

    Both ends are in the audit log (`outcomes_received` with the counts, or
    `outcomes_quarantined`).
    """
    name = source_name(source)
    try:
        frame = validation.validate_or_quarantine(
            data.decompress(raw),
            artifacts_uri=artifacts_uri,
            batch_name=f"outcomes-{name}",
            raw=raw,
            suite=validation.OUTCOMES,
        )
    except validation.ValidationFailed as exc:
        audit.append(artifacts_uri, "outcomes_quarantined", source=name,
                     quarantine=exc.quarantine_uri, failures=len(exc.result.failures))  # fmt: skip
        raise
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    received_at = moment.isoformat(timespec="microseconds")
    stamp = moment.strftime("%Y%m%dT%H%M%S.%fZ")
    result = reconcile(pseudonymise(frame, key, received_at), read_received(artifacts_uri))
    layout = StoreLayout(artifacts_uri)
    stored_uri = conflicts_uri = None
    if len(result.accepted):
        stored_uri = _write_csv(
            layout.outcomes_file("received", stamp, name, SUFFIX), result.accepted
        )
    if len(result.conflicts):
        conflicts_uri = _write_csv(
            layout.outcomes_file("conflicts", stamp, name, SUFFIX), result.conflicts
        )
    unknown = None
    if served_keys is not None:
        unknown = int((~result.accepted[ENCOUNTER_KEY].isin(served_keys)).sum())
    report = OutcomesReport(
        source=name,
        received_at=received_at,
        n_rows=len(frame),
        accepted=len(result.accepted),
        duplicates=result.duplicates,
        conflicts=len(result.conflicts),
        unknown_encounters=unknown,
        stored_uri=stored_uri,
        conflicts_uri=conflicts_uri,
        report_uri=layout.outcomes_file("reports", stamp, name, ".json"),
    )
    storage.write_json(report.report_uri, report.to_dict())
    audit.append(artifacts_uri, "outcomes_received", **report.to_dict())
    return report


def newest_received(artifacts_uri: str) -> str | None:
    """Name of the newest stored outcomes file (None before any): tells monitoring whether
    outcomes arrived since its last run, whichever way they came (command line or drop folder)."""
    files = storage.list_files(StoreLayout(artifacts_uri).outcomes_received(), f"*{SUFFIX}")
    return max((url.rsplit("/", 1)[-1] for url in files), default=None)


def pending_drops(artifacts_uri: str) -> list[str]:
    """Outcomes files waiting in the drop folder, oldest name first."""
    inbox = StoreLayout(artifacts_uri).outcomes_inbox()
    return sorted(
        url for url in storage.list_files(inbox, "*") if url.endswith((".csv", ".csv.gz"))
    )


def drop(artifacts_uri: str, name: str, frame: pd.DataFrame) -> str:
    """Put an outcomes file (`encounter_id`, `readmitted`) in the drop folder, as a hospital
    system would; the next monitoring run takes it."""
    url = f"{StoreLayout(artifacts_uri).outcomes_inbox()}/{source_name(name)}.csv"
    return storage.write_bytes(url, data.to_csv_bytes(frame[["encounter_id", LABEL_COLUMN]]))
