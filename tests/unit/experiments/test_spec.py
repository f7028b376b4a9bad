"""The experiment spec's round trip through a bento's build arguments."""

from __future__ import annotations

import pytest

from readmit.experiments.spec import ExperimentSpec


def test_a_bento_built_for_an_experiment_gives_back_its_spec() -> None:
    spec = ExperimentSpec("exp-7", "canary", "m:champion", "m:challenger", canary_share=0.15)
    args = {"model_tag": "m:champion", **spec.bento_args()}
    assert ExperimentSpec.from_bento_args(args, "m:champion") == spec
    assert ExperimentSpec.from_bento_args({"model_tag": "m:champion"}, "m:champion") is None


@pytest.mark.parametrize(
    "change",
    [
        {"experiment_mode": "blue"},
        {"canary_share": "1.5"},
        {"challenger_tag": ""},
        {"challenger_tag": "m:champion"},  # READMIT_MODEL_TAG made the challenger the champion
    ],
)
def test_arguments_that_make_no_experiment_are_refused(change: dict[str, str]) -> None:
    args = ExperimentSpec("exp-7", "shadow", "m:champion", "m:challenger").bento_args()
    with pytest.raises(ValueError):
        ExperimentSpec.from_bento_args({**args, **change}, "m:champion")
