"""Builds the state the restore drill backs up, in the store its env names (run as a script).

Two models (the second promoted over the first, so the pointer has a history), audit lines,
an outcomes file taken by the real outcomes feed, and served encounters of returning patients in
the served-history store: everything `readmit restore` must bring back. Prints the model tags.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT / "tests" / "service"))

import pandas as pd  # noqa: E402
from service_helpers import small_model  # noqa: E402

from readmit import data, pseudonyms  # noqa: E402
from readmit.data import outcomes  # noqa: E402
from readmit.features import served_history  # noqa: E402
from readmit.model import registry  # noqa: E402
from readmit.ops import audit  # noqa: E402
from readmit.schema import INPUT_COLUMNS  # noqa: E402
from readmit.settings import get_settings  # noqa: E402

DATA_FILE = PROJECT_ROOT / "data" / "raw" / "diabetic_data.csv.gz"


def main(served_csv: str) -> None:
    settings = get_settings()
    frame = data.in_time_order(data.read_encounters(str(DATA_FILE)).frame)
    train = frame.iloc[20_000:23_000].reset_index(drop=True)
    tags = []
    for n in (2_000, 3_000):
        meta = {"threshold": 0.15, "label_definition": "<30", "feature_names": list(INPUT_COLUMNS)}
        tag = registry.save_model(small_model(train.head(n)), meta)
        registry.promote(tag, reason=f"drill model on {n} rows")
        audit.append(settings.artifacts_uri, "promoted", tag=tag, reason="restore drill")
        registry.publish_to_store(tag)
        tags.append(tag)
    # Served encounters of returning patients: their history changes what the service answers.
    served = pd.read_csv(served_csv, dtype=str)
    earlier = frame[frame["patient_nbr"].astype(str).isin(served["patient_nbr"])].head(400)
    keyed = pseudonyms.add_keys(earlier, settings.pseudonym_key_bytes)
    keyed["timestamp"] = pd.Timestamp("2026-12-01T00:00:00Z")
    store = served_history.open_store(settings.history_store_uri)
    added = store.add(served_history.served_rows(keyed))
    raw = earlier[["encounter_id", "readmitted"]].to_csv(index=False).encode()
    report = outcomes.add_outcomes(
        raw, source="drill.csv", artifacts_uri=settings.artifacts_uri,
        key=settings.pseudonym_key_bytes,
    )  # fmt: skip
    print(json.dumps({"tags": tags, "history_rows": added, "outcomes": report.accepted}))


if __name__ == "__main__":
    main(sys.argv[1])
