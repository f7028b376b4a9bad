"""The main job's summary points at what serves at the end, not at the first server."""

from __future__ import annotations

from typing import Any

from readmit_cli import format_loop_summary


def trained() -> dict[str, Any]:
    metrics = {"roc_auc": 0.68, "pr_auc": 0.24, "brier": 0.1}
    return {
        "tag": "readmission:a", "stage": "production", "gate": {"promote": True, "reasons": []},
        "metrics": metrics, "baseline_metrics": metrics, "threshold": 0.14,
        "bentoml_home": "/m", "artifacts_uri": "/a", "report_dir": "/a/r",
        "validation_report": "/a/v.html", "profile_uri": "/a/p.bin", "timings_s": {},
    }  # fmt: skip


def service(model: str, port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    return {"model_tag": model, "url": url, "bento_tag": f"b-{port}",
            "replaced_pid": 11, "curl": f"curl -s -X POST {url}/predict"}  # fmt: skip


def loop_output(final_service: dict[str, Any] | None, redeployed: bool) -> dict[str, Any]:
    retraining = {
        "challenger": "readmission:b", "promote": redeployed, "reasons": ["better"],
        "deployment": final_service if redeployed else None,
    }  # fmt: skip
    return {
        "trained": trained(),
        "service": final_service,
        "replay": {"batches": [1, 2], "episode": None},
        "monitoring": {
            "batches": [],
            "event": True,
            "windows": [window(0.66, None, 0.0), window(0.65, 0.671, 0.97)],
        },
        "retraining": retraining,
    }


def window(estimated: float, realised: float | None, coverage: float) -> dict[str, Any]:
    return {"window": "20261204T100000Z", "served": 2000, "estimated_auc": estimated,
            "band_90": "0.630-0.690", "realised_auc": realised, "label_coverage": coverage,
            "severity": "none", "features": "", "skew_ok": True}  # fmt: skip


def test_the_summary_shows_estimated_against_realised_auc_per_window() -> None:
    text = format_loop_summary(loop_output(None, redeployed=False))
    rows = [line for line in text.splitlines() if "served  est" in line]
    assert len(rows) == 2
    assert "est 0.660 [0.630-0.690]  realised -  outcomes 0%" in rows[0]
    assert "est 0.650 [0.630-0.690]  realised 0.671  outcomes 97%" in rows[1]


def test_after_a_redeploy_the_curl_targets_the_new_port() -> None:
    text = format_loop_summary(loop_output(service("readmission:b", 3001), redeployed=True))
    assert "redeployed   readmission:b (replaced pid 11)" in text
    last = text.splitlines()[-3:]
    assert last[0].startswith("serving now  readmission:b at http://127.0.0.1:3001")
    assert last[1] == "try it       curl -s -X POST http://127.0.0.1:3001/predict"
    assert last[2].startswith("stop it      make down")


def test_without_a_service_there_is_no_curl() -> None:
    text = format_loop_summary(loop_output(None, redeployed=False))
    assert "try it" not in text and "serving now" not in text
    assert "challenger readmission:b rejected: better" in text
