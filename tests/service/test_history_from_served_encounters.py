"""The real HTTP service reads the served-history store: an encounter it served, once monitoring
has read it from the prediction log, counts in the same patient's next encounter."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pandas as pd
from service_helpers import Served

from readmit import data, pseudonyms
from readmit.features import served_history
from readmit.layout import StoreLayout
from readmit.model import registry
from readmit.monitoring import windows
from readmit.serving import scoring
from readmit.settings import get_settings


def test_a_served_encounter_counts_in_the_patients_next_encounter(
    served: Served, client: httpx.Client, full_frame: pd.DataFrame, train_frame: pd.DataFrame
) -> None:
    settings = get_settings()
    store_uri = f"sqlite://{served.prediction_logs.parent / 'served_history.sqlite'}"
    later = data.in_time_order(full_frame).iloc[70_000:]
    later = later[~later["patient_nbr"].isin(train_frame["patient_nbr"])]
    twice = later[later.duplicated("patient_nbr", keep=False)]
    patient = twice["patient_nbr"].iloc[0]
    first, second = (r for _, r in twice[twice["patient_nbr"] == patient].head(2).iterrows())
    records = scoring.feed_records(pd.DataFrame([first, second]).drop(columns=["readmitted"]))
    model = registry.load_model(served.model_tag).model
    alone = scoring.make_scorer(model).predict_proba_one(
        scoring.pseudonymised(records[1:], settings.pseudonym_key_bytes)[0]
    )

    response = client.post("/predict", json=records[0])
    assert response.status_code == 200, response.text
    store = served_history.open_store(store_uri)
    key = pseudonyms.pseudonym(settings.pseudonym_key_bytes, "patient_nbr", patient)
    state: dict[str, object] = {}
    deadline = time.monotonic() + 20
    while key not in store.entries([key]) and time.monotonic() < deadline:
        time.sleep(0.5)  # the service ships its log every flush; monitoring reads it
        _, state = windows.read_new_chunks(
            StoreLayout(str(served.prediction_logs.parent / "monitoring")),
            str(served.prediction_logs), state, model=None, window=pd.Timedelta(hours=1),
            grace=pd.Timedelta(minutes=10), skew_rows=0, store_uri=store_uri,
        )  # fmt: skip
    assert key in store.entries([key]), "monitoring did not record the served encounter"

    answer = client.post("/predict", json=records[1]).json()["probability"]
    scoring.attach_served_history(model, store_uri)
    expected = scoring.make_scorer(model).predict_proba_one(
        scoring.pseudonymised(records[1:], settings.pseudonym_key_bytes)[0]
    )
    assert np.isclose(answer, expected, rtol=0, atol=1e-9)
    assert not np.isclose(answer, alone, rtol=0, atol=1e-6), "the first encounter did not count"
