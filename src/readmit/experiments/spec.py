"""What a live experiment is, and the one rule of who answers a request during one.

An experiment puts a challenger beside the champion in the service:

* shadow: both models score every encounter, the champion answers, both are logged;
* canary: a sticky share of patients (a hash of the patient pseudonym and the experiment id) is
  answered by the challenger, the rest by the champion; encounters without a patient go to the
  champion.

The spec travels with the bento (`bento_args`: `bentoml build --arg ...`, so an image under
experiment says so), is stored in the artifact store by the `experiment` flow, and names every
logged row (`LOG_COLUMNS`) so monitoring and the decision can tell the variants apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

Mode = Literal["shadow", "canary"]
Variant = Literal["champion", "challenger"]
CHAMPION: Variant = "champion"
CHALLENGER: Variant = "challenger"
EXPERIMENT_ID = "experiment_id"
VARIANT = "variant"
CHALLENGER_PROBABILITY = "challenger_probability"
LOG_COLUMNS = (EXPERIMENT_ID, VARIANT, CHALLENGER_PROBABILITY)
"""Prediction-log columns of an experiment: its id, who answered, and (shadow) the challenger's
probability. Empty outside an experiment."""
DEFAULT_CANARY_SHARE = 0.1


@dataclass(frozen=True)
class ExperimentSpec:
    """A running experiment: which models, which mode, what share of patients (canary)."""

    id: str
    mode: Mode
    champion: str
    challenger: str
    canary_share: float = DEFAULT_CANARY_SHARE
    started_at: str = ""
    started_by: str = ""

    def __post_init__(self) -> None:
        if self.mode not in ("shadow", "canary"):
            raise ValueError(f"experiment mode {self.mode!r}: expected 'shadow' or 'canary'")
        if not 0.0 < self.canary_share < 1.0:
            raise ValueError(f"canary_share {self.canary_share}: expected a share in (0, 1)")
        if not self.challenger:
            raise ValueError("an experiment needs a challenger model tag")
        if self.champion == self.challenger:
            raise ValueError(f"the challenger is the champion ({self.champion})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the store, events, /model)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExperimentSpec:
        """Read back a stored spec (unknown keys are ignored: newer writers)."""
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)

    def bento_args(self) -> dict[str, str]:
        """`bentoml build --arg` values of a bento that serves this experiment."""
        return {
            "experiment_id": self.id,
            "experiment_mode": self.mode,
            "challenger_tag": self.challenger,
            "canary_share": repr(self.canary_share),
        }

    @classmethod
    def from_bento_args(cls, args: Mapping[str, Any], champion: str) -> ExperimentSpec | None:
        """The experiment a bento was built for (`bento_args`), or None for a bento without one.
        The champion is the model the bento serves (its `model_tag`), not an argument of its own.

        Raises:
            ValueError: the arguments do not make a valid experiment (mode, share, the
                challenger missing or the same as the champion).
        """
        if not args.get("experiment_id"):
            return None
        return cls(
            id=str(args["experiment_id"]),
            mode=args.get("experiment_mode"),  # type: ignore[arg-type]  # checked in __post_init__
            champion=champion,
            challenger=str(args.get("challenger_tag") or ""),
            canary_share=float(args.get("canary_share", DEFAULT_CANARY_SHARE)),
        )


def canary_bucket(experiment_id: str, patient_key: str) -> float:
    """A patient's place in [0, 1) for this experiment: stable across requests, pods and
    restarts, independent between experiments."""
    digest = hashlib.sha256(f"{experiment_id}:{patient_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def answering_variant(spec: ExperimentSpec, patient_key: str | None) -> Variant:
    """Who answers this patient: the challenger only in canary mode, for the sticky share."""
    if spec.mode == "shadow" or not patient_key:
        return CHAMPION
    return CHALLENGER if canary_bucket(spec.id, patient_key) < spec.canary_share else CHAMPION
