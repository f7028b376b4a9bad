"""Who answers during a live experiment (`readmit.serving.experiment`), with stand-in scorers:
the champion alone, shadow, canary (split, order kept, thresholds), a failing challenger, the
worker's counters, and the log rows the answers make. The real models over HTTP are in
tests/service/test_experiments.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pytest

from readmit import pseudonyms, serving
from readmit.experiments.spec import ExperimentSpec, answering_variant
from readmit.features import history
from readmit.serving.experiment import ServedModel, Variants, VariantStats

KEY = b"unit-test-key"


class StandIn:
    """A scorer whose probability is a function of the record; remembers its calls and the
    history view (`history.as_of`) each call saw."""

    def __init__(self, offset: float, fail: bool = False) -> None:
        self.offset, self.fail = offset, fail
        self.calls: list[list[int]] = []
        self.views: list[float | None] = []

    def predict_proba_one(self, record: Mapping[str, Any]) -> float:
        return float(self.predict_proba_many([record])[0])

    def predict_proba_many(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        self.views.append(history._AS_OF.get())
        if self.fail:
            raise RuntimeError("challenger broke")
        self.calls.append([r["time_in_hospital"] for r in records])
        return np.array([self.offset + r["time_in_hospital"] / 100 for r in records])


def _records(n: int, with_patient: bool = True) -> list[dict[str, Any]]:
    request = serving.predict_request_model()
    return [
        serving.encounter_record(
            request(
                **{**serving.example_encounter(), "time_in_hospital": 1 + i % 14},
                patient_nbr=1000 + i if with_patient else None,
                encounter_id=50_000 + i,
            ),
            KEY,
        )
        for i in range(n)
    ]


def _variants(mode: str, share: float = 0.3, fail: bool = False) -> tuple[Variants, list[Any]]:
    seen: list[Any] = []
    spec = ExperimentSpec("exp-1", mode, "m:champion", "m:challenger", canary_share=share)  # type: ignore[arg-type]
    variants = Variants(
        ServedModel("m:champion", StandIn(0.0), threshold=0.1),
        spec,
        ServedModel("m:challenger", StandIn(0.5, fail=fail), threshold=0.6),
        on_scored=lambda *call: seen.append(("scored", *call)),
        on_error=lambda *call: seen.append(("error", *call)),
    )
    return variants, seen


def test_without_an_experiment_the_champion_answers_alone_as_before() -> None:
    champion = ServedModel("m:champion", StandIn(0.0), threshold=0.03)
    records = _records(5)
    answers = Variants(champion).score(records)
    expected, at = serving.score_as_of_now(champion.scorer, records)
    assert answers.probabilities == pytest.approx(expected.tolist())
    assert answers.risks == ["low", "low", "high", "high", "high"]  # 0.01 to 0.05 at 0.03
    assert set(answers.model_tags) == {"m:champion"}
    assert answers.experiment is None and at >= answers.at
    rows = serving.log_rows(records, answers.probabilities, answers.risks, answers.model_tags)
    assert [(r["experiment_id"], r["variant"], r["challenger_probability"]) for r in rows] == [
        (None, None, None)
    ] * 5


def test_shadow_scores_both_with_one_history_view_and_the_champion_answers() -> None:
    variants, seen = _variants("shadow")
    records = _records(6)
    answers = variants.score(records)
    champion, challenger = variants.champion.scorer, variants.challenger.scorer  # type: ignore[union-attr]
    assert answers.probabilities == pytest.approx([(1 + i) / 100 for i in range(6)])
    assert set(answers.model_tags) == {"m:champion"} and set(answers.thresholds) == {0.1}
    log = answers.experiment
    assert log is not None and set(log.experiment_ids) == {"exp-1"}
    assert set(log.variants) == {"champion"}
    assert log.challenger_probabilities == pytest.approx([0.5 + (1 + i) / 100 for i in range(6)])
    # the same instant for both models, and it is the logged time
    at = datetime.fromisoformat(answers.at).timestamp()
    assert champion.views == challenger.views == [pytest.approx(at, abs=1e-6)]
    assert [(s[1], s[2], s[3]) for s in seen] == [
        ("champion", "m:champion", 6),
        ("challenger", "m:challenger", 6),
    ]
    rows = serving.log_rows(records, answers.probabilities, answers.risks, "m:champion", log)
    assert rows[2]["challenger_probability"] == pytest.approx(0.53)
    assert rows[2]["variant"] == "champion" and rows[2]["model_tag"] == "m:champion"


def test_canary_splits_by_patient_and_keeps_the_input_order() -> None:
    variants, seen = _variants("canary", share=0.3)
    records = _records(40) + _records(4, with_patient=False)
    assert variants.spec is not None
    expected = [answering_variant(variants.spec, r["patient_key"]) for r in records]
    assert 0 < expected.count("challenger") < 40  # both arms present
    answers = variants.score(records)
    log = answers.experiment
    assert log is not None and list(log.variants) == expected
    assert expected[-4:] == ["champion"] * 4  # no patient: the champion
    for i, (record, variant) in enumerate(zip(records, expected, strict=True)):
        offset, tag, threshold = (
            (0.5, "m:challenger", 0.6) if variant == "challenger" else (0.0, "m:champion", 0.1)
        )
        p = offset + record["time_in_hospital"] / 100
        assert answers.probabilities[i] == pytest.approx(p)
        assert answers.model_tags[i] == tag and answers.thresholds[i] == threshold
        assert answers.risks[i] == ("high" if p >= threshold else "low")
    assert set(log.challenger_probabilities) == {None} and set(log.experiment_ids) == {"exp-1"}
    # one call per model, each with its own group
    assert {s[1]: s[3] for s in seen} == {
        "challenger": expected.count("challenger"),
        "champion": expected.count("champion"),
    }
    one = answers.split()[3]
    assert one.probabilities == [answers.probabilities[3]] and one.at == answers.at
    assert one.experiment is not None and one.experiment.variants == [expected[3]]


def test_a_patient_gets_the_same_variant_in_any_batch() -> None:
    variants, _ = _variants("canary", share=0.5)
    records = _records(30)
    together = variants.score(records).model_tags
    alone = [variants.score([r]).model_tags[0] for r in records]
    reversed_ = variants.score(records[::-1]).model_tags[::-1]
    assert together == alone == reversed_


@pytest.mark.parametrize("mode", ["shadow", "canary"])
def test_a_failing_challenger_never_fails_a_request(mode: str) -> None:
    variants, seen = _variants(mode, share=0.5, fail=True)
    records = _records(20)
    answers = variants.score(records)
    assert answers.probabilities == pytest.approx([r["time_in_hospital"] / 100 for r in records])
    assert set(answers.model_tags) == {"m:champion"}
    assert [s[:3] for s in seen if s[0] == "error"] == [("error", "challenger", "m:challenger")]
    log = answers.experiment
    assert log is not None and set(log.challenger_probabilities) == {None}
    if mode == "shadow":  # still a champion row of the experiment, without the pair
        assert set(log.experiment_ids) == {"exp-1"} and set(log.variants) == {"champion"}
    else:  # the challenger's patients answered by the champion: in neither arm
        moved = [i for i, v in enumerate(log.variants) if v is None]
        assert moved and all(log.experiment_ids[i] is None for i in moved)
        assert all(v == "champion" for v in log.variants if v is not None)


def test_worker_counters_give_requests_and_latency_percentiles() -> None:
    stats = VariantStats(window=100)
    for ms in range(1, 201):
        stats.record("champion", 2, ms / 1000)
    info = stats.summary({"champion": "m:champion", "challenger": "m:challenger"})
    assert info["champion"].requests == 400 and info["champion"].model_tag == "m:champion"
    assert info["champion"].latency_p50_ms == pytest.approx(150.5)  # the last 100 calls
    assert info["champion"].latency_p95_ms == pytest.approx(195.05)
    assert info["challenger"].requests == 0 and info["challenger"].latency_p50_ms is None


def test_log_columns_of_a_canary_name_each_rows_model() -> None:
    variants, _ = _variants("canary", share=0.5)
    records = _records(10)
    answers = variants.score(records)
    cols = serving.log_columns(
        records, answers.probabilities, answers.risks, answers.model_tags, answers.experiment
    )
    by_name = {c[0]: c for c in cols}
    assert by_name["model_tag"][3] == answers.model_tags
    assert by_name["variant"][3] == list(answers.experiment.variants)  # type: ignore[union-attr]
    assert by_name["challenger_probability"][2] == "numerical"
    assert not {"patient_nbr", "encounter_id"} & set(by_name)
    assert by_name["patient_key"][3][0] == pseudonyms.pseudonym(KEY, "patient_nbr", 1000)
