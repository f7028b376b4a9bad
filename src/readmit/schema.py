"""The data contract of a raw encounter, written once.

Everything that needs to know what a valid encounter looks like derives from `COLUMNS`: the Great
Expectations suite (`readmit.data.validation`), the loader's dtypes (`readmit.data`), the service's
request model (`encounter_model`) and the docs. No value set is written anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator


class Kind(StrEnum):
    """How a column is stored and checked."""

    ID = "id"  # integer identifier; never a feature, never logged
    INT = "int"  # bounded count or coded integer
    CATEGORY = "category"  # string from a closed value set
    CODE = "code"  # free-ish string matching a pattern (ICD-9)
    LABEL = "label"  # the outcome


@dataclass(frozen=True)
class Column:
    """One raw column: its kind, allowed values or range, and tolerated share of missing values."""

    name: str
    kind: Kind
    values: tuple[Any, ...] | None = None
    min_value: int | None = None
    max_value: int | None = None
    regex: str | None = None
    max_missing: float = 0.0  # share of rows that may be missing ("?")
    doc: str = ""

    @property
    def nullable(self) -> bool:
        """True when a single encounter may omit this field."""
        return self.max_missing > 0

    @property
    def field_name(self) -> str:
        """Python identifier for the column (`glyburide-metformin` -> `glyburide_metformin`)."""
        return self.name.replace("-", "_")


MEDICATION_STATES = ("Down", "No", "Steady", "Up")
MEDICATIONS: tuple[str, ...] = (
    "metformin", "repaglinide", "nateglinide", "chlorpropamide", "glimepiride", "acetohexamide",
    "glipizide", "glyburide", "tolbutamide", "pioglitazone", "rosiglitazone", "acarbose",
    "miglitol", "troglitazone", "tolazamide", "examide", "citoglipton", "insulin",
    "glyburide-metformin", "glipizide-metformin", "glimepiride-pioglitazone",
    "metformin-rosiglitazone", "metformin-pioglitazone",
)  # fmt: skip
AGE_BANDS = tuple(f"[{lo}-{lo + 10})" for lo in range(0, 100, 10))
WEIGHT_BANDS = (
    "[0-25)", "[25-50)", "[50-75)", "[75-100)", "[100-125)", "[125-150)", "[150-175)",
    "[175-200)", ">200",
)  # fmt: skip
MEDICAL_SPECIALTIES = (
    "AllergyandImmunology", "Anesthesiology", "Anesthesiology-Pediatric", "Cardiology",
    "Cardiology-Pediatric", "DCPTEAM", "Dentistry", "Dermatology", "Emergency/Trauma",
    "Endocrinology", "Endocrinology-Metabolism", "Family/GeneralPractice", "Gastroenterology",
    "Gynecology", "Hematology", "Hematology/Oncology", "Hospitalist", "InfectiousDiseases",
    "InternalMedicine", "Nephrology", "Neurology", "Neurophysiology",
    "Obsterics&Gynecology-GynecologicOnco", "Obstetrics", "ObstetricsandGynecology", "Oncology",
    "Ophthalmology", "Orthopedics", "Orthopedics-Reconstructive", "Osteopath", "Otolaryngology",
    "OutreachServices", "Pathology", "Pediatrics", "Pediatrics-AllergyandImmunology",
    "Pediatrics-CriticalCare", "Pediatrics-EmergencyMedicine", "Pediatrics-Endocrinology",
    "Pediatrics-Hematology-Oncology", "Pediatrics-InfectiousDiseases", "Pediatrics-Neurology",
    "Pediatrics-Pulmonology", "Perinatology", "PhysicalMedicineandRehabilitation",
    "PhysicianNotFound", "Podiatry", "Proctology", "Psychiatry", "Psychiatry-Addictive",
    "Psychiatry-Child/Adolescent", "Psychology", "Pulmonology", "Radiologist", "Radiology",
    "Resident", "Rheumatology", "Speech", "SportsMedicine", "Surgeon", "Surgery-Cardiovascular",
    "Surgery-Cardiovascular/Thoracic", "Surgery-Colon&Rectal", "Surgery-General",
    "Surgery-Maxillofacial", "Surgery-Neuro", "Surgery-Pediatric", "Surgery-Plastic",
    "Surgery-PlasticwithinHeadandNeck", "Surgery-Thoracic", "Surgery-Vascular",
    "SurgicalSpecialty", "Urology",
)  # fmt: skip
PAYER_CODES = (
    "BC", "CH", "CM", "CP", "DM", "FR", "HM", "MC", "MD", "MP", "OG", "OT", "PO", "SI", "SP",
    "UN", "WC",
)  # fmt: skip
# Codes from IDS_mapping.csv (shipped in data/raw/).
ADMISSION_TYPE_IDS = tuple(range(1, 9))
DISCHARGE_DISPOSITION_IDS = tuple(range(1, 31))
ADMISSION_SOURCE_IDS = tuple(i for i in range(1, 27) if i != 16)
# Died (11, 19, 20, 21) or hospice (13, 14): no readmission is possible, excluded from training.
DIED_OR_HOSPICE_IDS = (11, 13, 14, 19, 20, 21)
READMITTED_VALUES = ("<30", ">30", "NO")
ICD9_REGEX = r"^(\d{1,3}(\.\d{1,2})?|V\d{2}(\.\d{1,2})?|E\d{3}(\.\d{1,2})?)$"


def _cat(name: str, values: tuple[Any, ...], max_missing: float = 0.0, doc: str = "") -> Column:
    return Column(name, Kind.CATEGORY, values=values, max_missing=max_missing, doc=doc)


def _int(name: str, lo: int, hi: int, doc: str = "") -> Column:
    return Column(name, Kind.INT, min_value=lo, max_value=hi, doc=doc)


def _code(name: str, max_missing: float, doc: str) -> Column:
    return Column(name, Kind.CODE, regex=ICD9_REGEX, max_missing=max_missing, doc=doc)


COLUMNS: tuple[Column, ...] = (
    Column("encounter_id", Kind.ID, min_value=1, doc="Encounter id; its order is the time proxy."),
    Column("patient_nbr", Kind.ID, min_value=1, doc="Patient number; hashed before any use."),
    _cat("race", ("AfricanAmerican", "Asian", "Caucasian", "Hispanic", "Other"), 0.10),
    _cat("gender", ("Female", "Male", "Unknown/Invalid")),
    _cat("age", AGE_BANDS, doc="Ten-year age band, e.g. [70-80)."),
    _cat("weight", WEIGHT_BANDS, 1.0, doc="Weight band in pounds; usually missing."),
    Column("admission_type_id", Kind.INT, values=ADMISSION_TYPE_IDS, doc="See IDS_mapping."),
    Column("discharge_disposition_id", Kind.INT, values=DISCHARGE_DISPOSITION_IDS),
    Column("admission_source_id", Kind.INT, values=ADMISSION_SOURCE_IDS),
    _int("time_in_hospital", 1, 14, "Days in hospital (the cohort is 1 to 14 days)."),
    # Payer codes were not recorded for whole stretches of time (some 5,000-encounter windows
    # have none), so any share may be missing; only the values are checked.
    _cat("payer_code", PAYER_CODES, 1.0),
    _cat("medical_specialty", MEDICAL_SPECIALTIES, 0.70, "Admitting physician's specialty."),
    _int("num_lab_procedures", 0, 300),
    _int("num_procedures", 0, 50, "Procedures other than lab tests."),
    _int("num_medications", 0, 200, "Distinct generic drugs given."),
    _int("number_outpatient", 0, 200, "Outpatient visits in the year before."),
    _int("number_emergency", 0, 200, "Emergency visits in the year before."),
    _int("number_inpatient", 0, 200, "Inpatient stays in the year before."),
    _code("diag_1", 0.01, "Primary diagnosis, ICD-9 code as a string."),
    _code("diag_2", 0.02, "Secondary diagnosis, ICD-9."),
    _code("diag_3", 0.05, "Additional secondary diagnosis, ICD-9."),
    _int("number_diagnoses", 1, 16),
    _cat("max_glu_serum", (">200", ">300", "None", "Norm"), doc="'None' means not measured."),
    _cat("A1Cresult", (">7", ">8", "None", "Norm"), doc="'None' means not measured."),
    *(_cat(m, MEDICATION_STATES, doc=f"Dosage change of {m}.") for m in MEDICATIONS),
    _cat("change", ("Ch", "No"), doc="Any change in diabetic medication."),
    _cat("diabetesMed", ("No", "Yes"), doc="Any diabetic medication prescribed."),
    Column("readmitted", Kind.LABEL, values=READMITTED_VALUES, doc="Outcome: <30, >30 or NO."),
)

COLUMN_BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
RAW_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS)
ID_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.kind is Kind.ID)
LABEL_COLUMN = "readmitted"
LabelDefinition = Literal["<30", "any"]
"""What a model predicts from `readmitted`: readmission within 30 days, or any readmission."""
OUTCOME_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.kind is Kind.LABEL)
"""Columns that are only known 30+ days after discharge: never in a scoring input."""
OUTCOME_FEED_COLUMNS: tuple[str, ...] = ("encounter_id", LABEL_COLUMN)
"""What the outcomes feed delivers, once an outcome has matured: the encounter and its outcome."""
INPUT_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in COLUMNS if c.kind not in (Kind.ID, Kind.LABEL)
)
"""What a hospital system sends to score one encounter (no identifiers, no label)."""


def pandas_dtypes() -> dict[str, str]:
    """Dtypes to read raw CSVs with: codes and categories stay strings, counts are integers."""
    out: dict[str, str] = {}
    for c in COLUMNS:
        is_numeric = c.kind is Kind.ID or (c.kind is Kind.INT)
        out[c.name] = "Int64" if is_numeric else "string"
    return out


def _field_type(column: Column) -> Any:
    if column.kind in (Kind.CATEGORY, Kind.LABEL):
        return Literal[column.values]  # type: ignore[valid-type]
    if column.kind is Kind.INT and column.values is not None:
        return Literal[column.values]  # type: ignore[valid-type]
    if column.kind is Kind.INT:
        return int
    if column.kind is Kind.ID:
        return int
    return str


def _field(column: Column) -> tuple[Any, Any]:
    kind = _field_type(column)
    kwargs: dict[str, Any] = {"alias": column.name, "description": column.doc or None}
    if column.kind is Kind.INT and column.values is None:
        kwargs |= {"ge": column.min_value, "le": column.max_value}
    if column.kind is Kind.CODE:
        kwargs["pattern"] = column.regex
    if column.nullable:
        return (kind | None, Field(default=None, **kwargs))
    return (kind, Field(..., **kwargs))


MISSING_MARK = "?"
"""How the data set (and a feed that exports it) writes a missing value."""


class _EncounterBase(BaseModel):
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, strict=False, frozen=True,
        json_schema_extra={"description": "One inpatient encounter, raw data-set fields."},
    )  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _missing_mark_is_null(cls, data: Any) -> Any:
        """A feed row sends `?` for missing, as the data set does: read it as null."""
        if isinstance(data, dict):
            return {k: (None if v == MISSING_MARK else v) for k, v in data.items()}
        return data


@cache
def encounter_model() -> type[BaseModel]:
    """Pydantic model of one encounter to score, built from `COLUMNS` (the GX suite's source).

    Hyphenated names (`glyburide-metformin`) are the aliases, so clients send the data set's own
    field names. Fields that may be missing in the data are optional (null = missing, "?").
    """
    fields = {COLUMN_BY_NAME[n].field_name: _field(COLUMN_BY_NAME[n]) for n in INPUT_COLUMNS}
    return create_model("Encounter", __base__=_EncounterBase, **fields)  # type: ignore[call-overload]
