"""Feature transformers on tiny inline frames: definitions, sklearn contract, leak-free history."""

from __future__ import annotations

import pickle
import struct
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
)

from readmit import data, pseudonyms
from readmit.features import (
    HISTORY_FEATURES,
    EncounterFeatures,
    FeatureEncoder,
    PatientHistory,
    icd9_category,
    icd9_group,
    make_label,
)
from readmit.schema import MEDICATIONS, RAW_COLUMNS


def raw_row(**overrides: Any) -> dict[str, Any]:
    """One valid raw encounter (schema field names), with overrides."""
    row: dict[str, Any] = dict.fromkeys(RAW_COLUMNS)
    row.update(
        encounter_id=1, patient_nbr=1001, race="Caucasian", gender="Female", age="[70-80)",
        admission_type_id=1, discharge_disposition_id=1, admission_source_id=7,
        time_in_hospital=3, num_lab_procedures=40, num_procedures=1, num_medications=12,
        number_outpatient=0, number_emergency=0, number_inpatient=1, diag_1="428",
        diag_2="250.01", diag_3="V45", number_diagnoses=7, max_glu_serum="None",
        A1Cresult="None", change="No", diabetesMed="Yes", readmitted="NO",
    )  # fmt: skip
    row.update(dict.fromkeys(MEDICATIONS, "No"))
    row.update(overrides)
    return row


def frame_of(*rows: dict[str, Any]) -> pd.DataFrame:
    """Rows with the schema's dtypes, as readmit.data produces them."""
    return data.coerce_types(pd.DataFrame(list(rows), columns=list(RAW_COLUMNS)))


KEY = b"feature-test-key"


def keyed(frame: pd.DataFrame, key: bytes = KEY) -> pd.DataFrame:
    """The frame as training and serving see it: identifiers pseudonymised on arrival."""
    return pseudonyms.add_keys(frame, key)


def history(frame: pd.DataFrame, model: PatientHistory | None = None) -> pd.DataFrame:
    model = model or PatientHistory().fit(frame.iloc[:0])
    return model.transform(keyed(frame))[list(HISTORY_FEATURES)]


# ---------------------------------------------------------------- definitions


@pytest.mark.parametrize(
    ("code", "group"),
    [
        ("428", "circulatory"), ("428.31", "circulatory"), ("785", "circulatory"),
        ("486", "respiratory"), ("786.05", "respiratory"), ("560", "digestive"),
        ("787", "digestive"), ("250", "diabetes"), ("250.83", "diabetes"),
        ("996.6", "injury"), ("800", "injury"), ("715", "musculoskeletal"),
        ("599", "genitourinary"), ("788", "genitourinary"), ("174", "neoplasms"),
        ("038", "other"), ("V57", "v_code"), ("v45.81", "v_code"), ("E909", "e_code"),
        (None, "missing"), (pd.NA, "missing"), ("", "missing"),
    ],
)  # fmt: skip
def test_icd9_group(code: Any, group: str) -> None:
    assert icd9_group(code) == group


def test_icd9_category_keeps_the_three_character_code() -> None:
    assert [icd9_category(c) for c in ("428.31", "V57.1", "E909", "8", None)] == [
        "428", "V57", "E909", "8", "missing",
    ]  # fmt: skip


def test_label_definitions() -> None:
    frame = frame_of(raw_row(readmitted="<30"), raw_row(readmitted=">30"), raw_row())
    assert make_label(frame).tolist() == [1, 0, 0]
    assert make_label(frame, "<30").tolist() == [1, 0, 0]
    assert make_label(frame, "any").tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="'<30' or 'any'"):
        make_label(frame, ">30")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missing in 1 rows"):
        make_label(frame_of(raw_row(readmitted=None)))
    with pytest.raises(ValueError, match="no 'readmitted' column"):
        make_label(frame.drop(columns=["readmitted"]))


def test_encounter_features_age_medications_utilisation_and_diagnoses() -> None:
    row = raw_row(
        age="[40-50)", metformin="Up", insulin="Down", glipizide="Steady",
        number_outpatient=2, number_emergency=1, number_inpatient=3,
        diag_1="250.02", diag_2="250.6", diag_3=None,
    )  # fmt: skip
    frame = frame_of(row)
    step = EncounterFeatures().fit(frame)
    out = step.transform(frame).iloc[0]
    assert out["age_years"] == 45.0
    assert (out["meds_used"], out["meds_up"], out["meds_down"], out["meds_changed"]) == (3, 1, 1, 2)
    assert out["utilisation_total"] == 6
    assert out["n_diabetes_diagnoses"] == 2
    assert out["diag_1_group"] == "diabetes" and out["diag_3_group"] == "missing"
    assert out["diag_1_category"] == "250"
    assert out["admission_type_id"] == "1" and out["payer_code"] == "missing"
    # The per-record twin gives the same values (the fast path relies on it).
    twin = step.transform_record(row)
    assert {k: twin[k] for k in step.get_feature_names_out()} == out.to_dict()


def test_missing_required_field_is_named() -> None:
    frame = frame_of(raw_row()).drop(columns=["num_procedures"])
    with pytest.raises(ValueError, match="num_procedures"):
        EncounterFeatures().fit(frame)


def test_encoder_is_dense_and_buckets_rare_and_unknown_categories() -> None:
    frame = frame_of(*(raw_row(payer_code="MC") for _ in range(3)), raw_row(payer_code="BC"))
    features = EncounterFeatures().fit(frame)
    encoder = FeatureEncoder(min_frequency=2).fit(features.transform(frame))
    names = list(encoder.get_feature_names_out())
    assert "payer_code=MC" in names and "payer_code=BC" not in names
    unseen = frame_of(raw_row(payer_code="SP"))
    matrix = encoder.transform(features.transform(unseen))
    assert isinstance(matrix, np.ndarray) and matrix.dtype == np.float32
    assert matrix.shape == (1, len(names))
    assert matrix[0, names.index("payer_code=other")] == 1.0
    assert matrix[0, names.index("payer_code=MC")] == 0.0
    record = features.transform_record(unseen.iloc[0].to_dict())
    np.testing.assert_array_equal(encoder.encode_record(record), matrix[0])


@pytest.mark.parametrize("estimator", [PatientHistory(), EncounterFeatures(), FeatureEncoder()])
def test_sklearn_contract(estimator: Any) -> None:
    name = type(estimator).__name__
    check_no_attributes_set_in_init(name, estimator)
    check_parameters_default_constructible(name, estimator)
    check_get_params_invariance(name, estimator)
    frame = frame_of(raw_row())
    fitted = PatientHistory("fingerprint").fit(keyed(frame))
    assert fitted.fit(frame) is fitted
    assert not hasattr(clone(fitted), "store_")


# ---------------------------------------------------------------- patient history


def patient_rows(*encounters: tuple[int, str], patient: int = 7) -> list[dict[str, Any]]:
    return [raw_row(encounter_id=e, patient_nbr=patient, readmitted=r) for e, r in encounters]


def stored(*rows: dict[str, Any]) -> PatientHistory:
    """A patient-history store fitted on rows (what training does)."""
    return PatientHistory(pseudonyms.fingerprint(KEY)).fit(keyed(frame_of(*rows)))


def test_history_counts_only_earlier_stored_encounters() -> None:
    rows = patient_rows((30, "NO"), (10, "<30"), (20, ">30"))  # shuffled on purpose
    out = history(frame_of(*rows), stored(*rows))
    assert out["hist_n_prior"].tolist() == [2, 0, 1]
    assert out["hist_prior_days"].tolist() == [6, 0, 3]
    assert out["hist_prev_days"].tolist() == [3, 0, 3]


def test_history_never_reads_outcomes() -> None:
    """The same encounters with other outcomes (or none) give the same history: outcomes are
    not known at prediction time."""
    rows = patient_rows((10, "<30"), (20, "<30"), (30, "NO"))
    flipped = patient_rows((10, "NO"), (20, ">30"), (30, "<30"))
    base = history(frame_of(*rows), stored(*rows))
    pd.testing.assert_frame_equal(base, history(frame_of(*flipped), stored(*flipped)))
    unlabelled = frame_of(*rows).drop(columns=["readmitted"])
    pd.testing.assert_frame_equal(base, history(unlabelled, stored(*rows)))


def test_history_is_leak_free_when_later_encounters_are_added() -> None:
    early = patient_rows((10, "<30"), (20, "NO"))
    later = patient_rows((30, "<30"), (40, ">30"))
    alone = history(frame_of(*early), stored(*early))
    # Fitting the store on the future changes nothing for the earlier encounters.
    pd.testing.assert_frame_equal(alone, history(frame_of(*early), stored(*early, *later)))


def test_other_rows_of_the_input_never_count() -> None:
    """An unknown patient's earlier encounters in the same input are not history: each row is
    scored as it would be alone (the service scores requests one by one)."""
    rows = patient_rows((10, "NO"), (20, "NO"), (30, "NO"), patient=99)
    together = history(frame_of(*rows), stored(raw_row(encounter_id=1, patient_nbr=5)))
    assert together["hist_n_prior"].tolist() == [0, 0, 0]


def test_store_gives_history_to_new_encounters_without_double_counting() -> None:
    train = frame_of(*patient_rows((10, "<30"), (20, "NO")))
    store = PatientHistory().fit(keyed(train))
    # Transforming the training frame reproduces its own history (no double count).
    assert history(train, store)["hist_n_prior"].tolist() == [0, 1]
    # A new encounter of a known patient sees both stored ones, and only those.
    new = frame_of(*patient_rows((50, "NO"), (40, "<30")))
    out = history(new, store)
    assert out["hist_n_prior"].tolist() == [2, 2]
    # The outcome of the encounter being scored never counts, and unknown patients start at 0.
    stranger = frame_of(raw_row(encounter_id=60, patient_nbr=99, readmitted="<30"))
    assert history(stranger, store).iloc[0].tolist() == [0] * len(HISTORY_FEATURES)


def test_no_identifiers_means_no_history() -> None:
    store = stored(*patient_rows((10, "<30"), (20, "NO")))
    request = frame_of(raw_row(encounter_id=30, patient_nbr=7)).drop(
        columns=["patient_nbr", "encounter_id", "readmitted"]
    )
    assert history(request, store).iloc[0].tolist() == [0] * len(HISTORY_FEATURES)
    # With a patient number but no encounter id: the stored history, nothing from the frame.
    known = frame_of(raw_row(patient_nbr=7)).drop(columns=["encounter_id"])
    assert history(known, store)["hist_n_prior"].tolist() == [2]


def test_store_keeps_pseudonyms_never_raw_numbers_nor_the_key() -> None:
    patients = [123456789, 98765432, 55555]
    rows = [raw_row(encounter_id=i + 1, patient_nbr=p) for i, p in enumerate(patients)]
    store = stored(*rows)
    assert set(store.store_) == {pseudonyms.pseudonym(KEY, "patient_nbr", p) for p in patients}
    blob = pickle.dumps(store)
    for p in patients:
        assert str(p).encode() not in blob
        assert struct.pack("<i", p) not in blob and struct.pack("<q", p) not in blob
    assert KEY not in blob and store.key_fingerprint == pseudonyms.fingerprint(KEY)
    other_key = PatientHistory().fit(keyed(frame_of(*rows), b"another-key"))
    assert set(other_key.store_).isdisjoint(store.store_)


def test_raw_identifiers_alone_give_no_history() -> None:
    """The store is indexed by pseudonyms only: a frame that was not keyed on arrival finds
    nothing (scorers refuse such records outright: tests/unit/serving)."""
    rows = patient_rows((10, "<30"), (20, "NO"))
    store = stored(*rows)
    raw = store.transform(frame_of(*patient_rows((30, "NO"))))
    assert raw["hist_n_prior"].tolist() == [0]


# ---------------------------------------------------------------- target encoding


def test_target_encoding_is_cross_fitted_for_training_rows() -> None:
    # Every code is unique and positive: in-sample encodings would reveal each row's own label.
    n = 40
    X = pd.DataFrame({"count": np.arange(n, dtype=float), "code": [f"c{i}" for i in range(n)]})
    X["code"] = X["code"].astype(object)
    y = np.array([1, 0] * (n // 2))
    encoder = FeatureEncoder(min_frequency=1000, target_columns=("code",), smoothing=1.0)
    crossed = encoder.fit_transform(X, y)
    column = list(encoder.get_feature_names_out()).index("code=target_rate")
    # Cross-fitted: unseen in the other folds, so each row gets that fold's prior, never its label.
    assert np.all(np.abs(crossed[:, column] - 0.5) < 0.15)
    full = encoder.transform(X)[:, column]
    np.testing.assert_allclose(full, np.where(y == 1, 0.75, 0.25), atol=1e-6)  # (y + 0.5) / 2
    unseen = pd.DataFrame({"count": [1.0], "code": ["zzz"]}).astype({"code": object})
    assert encoder.transform(unseen)[0, column] == pytest.approx(0.5)
    np.testing.assert_array_equal(
        encoder.encode_record({"count": 1.0, "code": "zzz"}), encoder.transform(unseen)[0]
    )


def test_target_encoding_folds_are_grouped_by_patient() -> None:
    # Each patient has two encounters with their own code and the same outcome.
    patients = np.repeat(np.arange(20), 2)
    X = pd.DataFrame({"code": [f"p{p}" for p in patients]}).astype(object)
    y = np.repeat(np.array([1, 0] * 10), 2)
    encoder = FeatureEncoder(target_columns=("code",), smoothing=1.0)
    grouped = encoder.fit_transform(X, y, groups=patients)[:, -1]
    # With patient-grouped folds, the twin encounter never informs the encoding.
    assert np.all(np.abs(grouped - 0.5) < 0.2)
    with pytest.raises(ValueError, match="needs the labels"):
        FeatureEncoder(target_columns=("code",)).fit(X)
    with pytest.raises(ValueError, match="not among the categorical"):
        FeatureEncoder(target_columns=("nope",)).fit(X, y)
