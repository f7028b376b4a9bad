"""Keyed pseudonyms of patients and encounters: the only identifiers readmit keeps or logs.

Why keyed: `patient_nbr` and `encounter_id` are small integers, so a plain hash is reversed by
hashing every possible number. A pseudonym is HMAC-SHA256 under a secret key
(`settings.pseudonym_key`), truncated to 128 bits: without the key nobody can tell which number
a pseudonym stands for, or compute the pseudonym of a known patient; with it, the hospital can
(it holds the key and the numbers anyway).

Where they are made: on arrival. The service and batch scoring turn a record's raw identifiers
into `patient_key` / `encounter_key` before anything else sees the record
(`pseudonymise_record`); training adds the same keys to its frame (`add_keys`). The same keys
join outcomes to served predictions, group patients for retraining and index the
patient-history store. The key itself is never stored in a model, a log or an artifact: a model
carries only its `fingerprint`, so a service with another key refuses the model instead of
silently losing every patient's history.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import pandas as pd

PATIENT_KEY = "patient_key"
ENCOUNTER_KEY = "encounter_key"
KEY_OF: dict[str, str] = {"patient_nbr": PATIENT_KEY, "encounter_id": ENCOUNTER_KEY}
"""Raw identifier column -> its pseudonym column."""
KEY_COLUMNS = tuple(KEY_OF.values())
PSEUDONYM_HEX_CHARS = 32
"""128 bits: collisions are negligible at any hospital's scale (birthday bound ~2^64)."""
_FINGERPRINT_MESSAGE = b"readmit pseudonym key fingerprint v1"


class KeyMismatchError(ValueError):
    """A model's patient-history store was keyed with a different pseudonym key."""


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NA


def pseudonym(key: bytes, column: str, value: Any) -> str | None:
    """Pseudonym of one identifier (None when missing).

    The column name is part of the message, so a patient number and an encounter id with the
    same digits get unrelated pseudonyms.
    """
    if _is_missing(value):
        return None
    message = f"{column}:{int(value)}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]


def fingerprint(key: bytes) -> str:
    """A public, non-reversible tag of the key: tells whether two parties use the same key."""
    return hmac.new(key, _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:16]


def pseudonymise_record(record: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """The record with its raw identifiers replaced by their pseudonyms (None where absent).

    A record that is already keyed (a served row read back from the prediction log) keeps its
    pseudonyms."""
    out = {k: v for k, v in record.items() if k not in KEY_OF}
    for raw, keyed in KEY_OF.items():
        out[keyed] = pseudonym(key, raw, record[raw]) if raw in record else record.get(keyed)
    return out


def key_column(values: pd.Series, key: bytes, column: str) -> pd.Series:
    """Pseudonyms of an identifier column (each distinct value keyed once)."""
    codes, uniques = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=True)
    keyed = [pseudonym(key, column, v) for v in uniques]
    return pd.Series(
        [keyed[c] if c >= 0 else None for c in codes], index=values.index, dtype=object
    )


def add_keys(frame: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """The frame with `patient_key` / `encounter_key` added for the raw id columns it has.

    Raw ids stay (training orders encounters by `encounter_id`); nothing derived from them
    but the keys reaches a model or a log.
    """
    out = frame.copy()
    for raw, keyed in KEY_OF.items():
        if raw in out.columns:
            out[keyed] = key_column(out[raw], key, raw)
    return out


def patient_groups(frame: pd.DataFrame) -> pd.Series:
    """The patient of each row, for patient-grouped splits: its pseudonym where the frame is
    keyed (served rows carry nothing else), else the raw number. A key stands for exactly one
    number, so both give the same groups.

    Raises:
        ValueError: the frame has neither column.
    """
    if PATIENT_KEY in frame.columns:
        return frame[PATIENT_KEY]
    if "patient_nbr" in frame.columns:
        return frame["patient_nbr"]
    raise ValueError("the frame has no patient_key or patient_nbr: patients cannot be grouped")


def drop_raw_ids(frame: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """The frame pseudonymised for storage: keys added, raw id columns removed."""
    return add_keys(frame, key).drop(columns=[c for c in KEY_OF if c in frame.columns])


def require_same_key(model_fingerprint: str | None, key: bytes) -> None:
    """Raise `KeyMismatchError` when a model was keyed with another pseudonym key.

    A model without a fingerprint has no keyed history and is accepted.
    """
    if model_fingerprint is not None and model_fingerprint != fingerprint(key):
        raise KeyMismatchError(
            "the model's patient-history store was keyed with another pseudonym key "
            f"(model key fingerprint {model_fingerprint}, this process {fingerprint(key)}): set "
            "READMIT_PSEUDONYM_KEY to the key the model was trained with, or retrain"
        )
