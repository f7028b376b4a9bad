"""Feature engineering: scikit-learn transformers shared by training, batch scoring and serving.

The fitted pipeline is `PatientHistory -> EncounterFeatures -> FeatureEncoder -> classifier`.
Every transformer has a vectorised batch mode (`transform`, a frame) and a per-record mode used by
`readmit.serving.fastpath`; both read the same fitted tables (categories, the patient-history
store), and a parity test on real rows keeps the two modes equal.

Leakage rules (see DESIGN.md and `KNOWN_AT_PREDICTION`): patient history only ever uses EARLIER
encounters held in the patient-history store (encounter_id order is the time proxy), never an
outcome and never another row of the input; patients and encounters are only known by their
keyed pseudonyms (`readmit.pseudonyms`).
"""

from readmit.features.common import (
    MISSING,
    is_missing,
    make_label,
    require_columns,
)
from readmit.features.encoding import FeatureEncoder
from readmit.features.encounter import (
    CATEGORICAL_INPUTS,
    DIAG_COLUMNS,
    NUMERIC_INPUTS,
    EncounterFeatures,
)
from readmit.features.history import (
    HISTORY_FEATURES,
    KNOWN_AT_PREDICTION,
    NO_HISTORY,
    OutcomeInInputError,
    PatientHistory,
    reject_outcomes,
)
from readmit.features.icd9 import ICD9_GROUPS, icd9_category, icd9_code, icd9_group

__all__ = [
    "CATEGORICAL_INPUTS",
    "DIAG_COLUMNS",
    "HISTORY_FEATURES",
    "ICD9_GROUPS",
    "KNOWN_AT_PREDICTION",
    "MISSING",
    "NO_HISTORY",
    "NUMERIC_INPUTS",
    "EncounterFeatures",
    "FeatureEncoder",
    "OutcomeInInputError",
    "PatientHistory",
    "icd9_category",
    "icd9_code",
    "icd9_group",
    "is_missing",
    "make_label",
    "reject_outcomes",
    "require_columns",
]
