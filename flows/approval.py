"""Approval of a promotion in the Prefect UI: the retraining flow pauses on a typed form.

The paused run's Resume button opens `PromotionReview` (decision, reviewer, rationale) under
the comparison a reviewer needs (`readmit.model.approval.ReviewPacket.as_markdown`). Nobody
answering within the timeout means the challenger is not promoted; the `auto` policy (the
default outside production) approves without pausing and records that it did.

The deadline is ours, not Prefect's: Prefect fails a run whose pause expired (its return value
and the rest of the flow are lost). So the pause is given a grace period beyond the deadline,
and at the deadline the run resumes itself with the timeout's answer; the flow then archives the
challenger, audits why, and completes.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Literal
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from pydantic import Field

from readmit.model import approval
from readmit.settings import Settings


class PromotionReview(RunInput):
    """Promote the challenger? Your answer, your name and your reason go to the audit log."""

    decision: Literal["approve", "reject"] = Field(
        description="approve: the challenger becomes the production model and is deployed"
    )
    reviewer: str = Field(min_length=1, description="Your name, as the audit log should show it")
    rationale: str = Field(
        min_length=approval.MIN_RATIONALE,
        description="Why you approve or reject (required; what you weighed)",
    )


TIMEOUT_REVIEWER = "readmit:approval-timeout"
PAUSE_GRACE_S = 120
"""How long Prefect keeps the pause open after our deadline (the run resumes itself first)."""


class _deadline:
    """At `timeout_s`, resume the paused run with the timeout's answer (a rejection) unless
    someone answered first; `fired` tells the flow whose answer it got."""

    def __init__(self, flow_run_id: UUID, timeout_s: int, fired: threading.Event) -> None:
        self.flow_run_id, self.timeout_s, self.fired = flow_run_id, timeout_s, fired
        self.done = threading.Event()
        context = contextvars.copy_context()  # the Prefect API settings of this run
        self.thread = threading.Thread(target=context.run, args=(self._expire,), daemon=True)

    def _expire(self) -> None:
        if self.done.wait(self.timeout_s):
            return
        self.fired.set()
        answer = {
            "decision": "reject",
            "reviewer": TIMEOUT_REVIEWER,
            "rationale": f"no decision within {self.timeout_s} s",
        }
        try:
            resume_flow_run(self.flow_run_id, run_input=answer)
        except Exception:  # a person answered at the same moment: theirs stands
            self.fired.clear()

    def __enter__(self) -> _deadline:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def request_approval(packet: approval.ReviewPacket, settings: Settings) -> approval.ApprovalRecord:
    """The approval record for `packet`: from the policy, a person in the UI, or the timeout."""
    logger = get_run_logger()
    mode = approval.approval_mode(settings.approval, settings.env)
    if mode == "auto":
        record = approval.auto_approved(packet, settings.env)
        logger.info(
            "promotion of %s auto-approved by policy (env %s)", packet.challenger, settings.env
        )
        return record
    create_markdown_artifact(
        key="promotion-review", markdown=packet.as_markdown(), description="What the reviewer sees"
    )
    timeout = settings.approval_timeout_s
    logger.warning(
        "waiting up to %d s for a reviewer: open this run in the Prefect UI and press Resume",
        timeout,
    )
    form = PromotionReview.with_initial_data(description=packet.as_markdown())
    fired = threading.Event()
    with _deadline(get_run_context().flow_run.id, timeout, fired):  # type: ignore[union-attr]
        answer = pause_flow_run(
            wait_for_input=form,
            timeout=timeout + PAUSE_GRACE_S,
            poll_interval=min(10, max(1, timeout // 4)),
        )
    if fired.is_set() and answer.reviewer == TIMEOUT_REVIEWER:
        logger.warning("no decision within %d s: %s is not promoted", timeout, packet.challenger)
        return approval.timed_out(packet, timeout)
    record = approval.reviewed(packet, answer.decision, answer.reviewer, answer.rationale, mode)
    logger.info("%s %s: %s", record.decision, record.reviewer, record.rationale)
    return record
