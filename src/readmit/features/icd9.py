"""ICD-9 diagnosis codes -> clinical groups, three-character categories and normalised codes."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from readmit.features.common import MISSING, is_missing

# Strack et al. (2014) ICD-9 groups: (group, inclusive ranges of the integer part of the code).
ICD9_RANGES: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("circulatory", ((390, 459), (785, 785))),
    ("respiratory", ((460, 519), (786, 786))),
    ("digestive", ((520, 579), (787, 787))),
    ("diabetes", ((250, 250),)),
    ("injury", ((800, 999),)),
    ("musculoskeletal", ((710, 739),)),
    ("genitourinary", ((580, 629), (788, 788))),
    ("neoplasms", ((140, 239),)),
)
ICD9_GROUPS = (*(g for g, _ in ICD9_RANGES), "other", "v_code", "e_code", MISSING)
ICD9_CACHE_SIZE = 8192
"""Distinct code texts remembered by the ICD-9 mappers (the data has ~900; codes repeat a lot)."""


def _code_text(code: Any, of_text: Callable[[str], str]) -> str:
    """A code's text through a cached text mapper; "missing" for NA (codes arrive as text)."""
    if type(code) is str:
        return of_text(code)
    return MISSING if is_missing(code) else of_text(str(code))


def icd9_group(code: Any) -> str:
    """Clinical group of an ICD-9 code (Strack et al. 2014); V and E codes get their own groups.

    V codes are supplementary factors (e.g. V57 rehabilitation), E codes external causes of
    injury; both differ in readmission risk from "other", so they are kept apart.
    """
    return _code_text(code, _icd9_group_of_text)


@lru_cache(maxsize=ICD9_CACHE_SIZE)
def _icd9_group_of_text(raw: str) -> str:
    text = raw.strip().upper()
    if not text:
        return MISSING
    if text[0] == "V":
        return "v_code"
    if text[0] == "E":
        return "e_code"
    try:
        number = int(float(text))
    except ValueError:
        return "other"
    for group, ranges in ICD9_RANGES:
        if any(lo <= number <= hi for lo, hi in ranges):
            return group
    return "other"


def icd9_category(code: Any) -> str:
    """Three-character ICD-9 category (`428.31` -> `428`, `V57.1` -> `V57`); finer than groups."""
    return _code_text(code, _icd9_category_of_text)


@lru_cache(maxsize=ICD9_CACHE_SIZE)
def _icd9_category_of_text(raw: str) -> str:
    text = raw.strip().upper()
    return text.split(".", 1)[0] if text else MISSING


def icd9_code(code: Any) -> str:
    """The full ICD-9 code, normalised (upper case, no spaces); "missing" when absent."""
    return _code_text(code, _icd9_code_of_text)


@lru_cache(maxsize=ICD9_CACHE_SIZE)
def _icd9_code_of_text(raw: str) -> str:
    return raw.strip().upper() or MISSING
