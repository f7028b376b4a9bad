"""Signed models: signed at registration, verified before anything is unpickled; a tampered,
unsigned or foreign-signed model is refused with the reason, a stage change is not a tamper,
and the signature travels in an exported `.bentomodel`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

import readmit_cli as cli
from readmit import data
from readmit.model import registry, signing
from readmit.ops import audit
from readmit.secret_sources import SecretConfigError
from readmit.settings import PROJECT_ROOT, Settings, get_settings

DEFAULT_KEY = b"readmit-local-signing-key"
OTHER_KEY = "another-signing-key-not-the-default"


def _model(seed: int = 0) -> LogisticRegression:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(50, 3))
    return LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))


def _folder(settings: Settings, tag: str) -> Path:
    return Path(settings.bentoml_home) / "models" / settings.model_name / registry.version_of(tag)


class _WritesAFile:
    """A pickle that runs code when unpickled: here it only creates `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def _refused(tag: str, settings: Settings | None = None) -> registry.UntrustedModelError:
    with pytest.raises(registry.UntrustedModelError) as refused:
        registry.load_model(tag, settings)
    assert "\n" not in str(refused.value)  # one line: the service's reason, the CLI's error
    return refused.value


@pytest.fixture
def other_key(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of a component configured with another signing key."""
    monkeypatch.setenv("READMIT_SIGNING_KEY", OTHER_KEY)
    get_settings.cache_clear()
    return get_settings()


def test_a_registered_model_is_signed_and_loads_with_its_digest(fresh_settings: Settings) -> None:
    tag = registry.save_model(_model(), {"threshold": 0.2})
    folder = _folder(fresh_settings, tag)
    assert sorted(p.name for p in folder.iterdir()) == [
        "lineage.json", "model.joblib", "model.yaml", "signature.json",
    ]  # fmt: skip
    record = json.loads((folder / "signature.json").read_text())
    assert record["algorithm"] == "ed25519"
    assert set(record["manifest"]["files"]) == {"lineage.json", "model.joblib"}
    assert record["manifest"]["tag"] == tag
    loaded = registry.load_model(tag)
    assert loaded.manifest_sha256 == registry.model_digest(tag) == record["manifest_sha256"]
    assert loaded.manifest_sha256 == signing.digest(record["manifest"])
    registered = [r for r in registry.read_state().history if r["event"] == "registered"]
    assert registered[-1]["manifest_sha256"] == loaded.manifest_sha256
    assert registry.signature_status(tag) == {
        "verified": True, "manifest_sha256": loaded.manifest_sha256,
    }  # fmt: skip


def test_a_changed_pickle_is_refused_before_it_is_unpickled(
    fresh_settings: Settings, tmp_path: Path
) -> None:
    tag = registry.save_model(_model(), {"threshold": 0.2})
    ran = tmp_path / "the-pickle-ran"
    joblib.dump(_WritesAFile(ran), _folder(fresh_settings, tag) / registry.MODEL_FILE)
    refused = _refused(tag)
    assert refused.problem == "altered"
    assert "model.joblib changed" in str(refused) and "do not use it" in str(refused)
    assert not ran.exists()  # never unpickled
    joblib.load(_folder(fresh_settings, tag) / registry.MODEL_FILE)  # what loading would do
    assert ran.exists()


def test_one_changed_byte_is_refused(fresh_settings: Settings) -> None:
    tag = registry.save_model(_model(), {"threshold": 0.2})
    path = _folder(fresh_settings, tag) / registry.MODEL_FILE
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))
    assert "model.joblib changed" in str(_refused(tag))


def test_a_removed_or_added_file_is_refused(fresh_settings: Settings) -> None:
    removed = registry.save_model(_model(1), {"threshold": 0.2})
    (_folder(fresh_settings, removed) / registry.LINEAGE_FILE).unlink()
    assert "lineage.json removed" in str(_refused(removed))
    added = registry.save_model(_model(2), {"threshold": 0.2})
    (_folder(fresh_settings, added) / "custom_objects.pkl").write_bytes(b"BentoML unpickles it")
    assert "custom_objects.pkl added" in str(_refused(added))


def test_a_changed_lineage_is_refused(fresh_settings: Settings) -> None:
    """The threshold the service applies comes from the signed lineage."""
    tag = registry.save_model(_model(), {"threshold": 0.2})
    path = _folder(fresh_settings, tag) / registry.LINEAGE_FILE
    path.write_text(json.dumps({"threshold": 0.99}))
    assert "lineage.json changed" in str(_refused(tag))


def test_an_unsigned_model_is_refused_with_how_to_fix_it(fresh_settings: Settings) -> None:
    tag = registry.save_model(_model(), {"threshold": 0.2})
    (_folder(fresh_settings, tag) / signing.SIGNATURE_FILE).unlink()  # as models saved before
    refused = _refused(tag)
    assert refused.problem == "unsigned" and isinstance(refused, registry.NoModelError)
    assert "is not signed" in str(refused)
    assert f"readmit sign {tag}" in str(refused) and "readmit train" in str(refused)


def test_a_recomputed_manifest_without_the_key_is_refused(fresh_settings: Settings) -> None:
    """Tampering and rewriting the manifest to match: the signature no longer holds."""
    tag = registry.save_model(_model(), {"threshold": 0.2})
    folder = _folder(fresh_settings, tag)
    joblib.dump(_model(7), folder / registry.MODEL_FILE)
    record = json.loads((folder / "signature.json").read_text())
    record["manifest"] = signing.manifest(tag, signing.read_files(folder))
    (folder / "signature.json").write_text(json.dumps(record))
    refused = _refused(tag)
    assert refused.problem == "altered" and "signature does not match" in str(refused)


def test_a_model_signed_with_another_key_is_refused(
    fresh_settings: Settings, other_key: Settings
) -> None:
    tag = registry.save_model(_model(), {"threshold": 0.2}, settings=fresh_settings)
    refused = _refused(tag, other_key)
    assert refused.problem == "key" and "was signed with key" in str(refused)
    assert "READMIT_VERIFY_KEY" in str(refused) and "readmit keys public" in str(refused)


def test_the_verify_key_alone_verifies(
    fresh_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = registry.save_model(_model(), {"threshold": 0.2})
    public = signing.public_key_hex(DEFAULT_KEY)
    monkeypatch.setenv("READMIT_SIGNING_KEY", OTHER_KEY)  # not the key that signed
    monkeypatch.setenv("READMIT_VERIFY_KEY", public)
    assert registry.load_model(tag, Settings()).manifest_sha256 == registry.model_digest(tag)
    with pytest.raises(SecretConfigError, match="not the private half of READMIT_VERIFY_KEY"):
        registry.save_model(_model(), {"threshold": 0.2}, settings=Settings())
    other_public = signing.public_key_hex(OTHER_KEY.encode())
    monkeypatch.setenv("READMIT_VERIFY_KEY", other_public)
    assert _refused(tag, Settings()).problem == "key"
    with pytest.raises(ValueError, match="READMIT_VERIFY_KEY must be an Ed25519 public key"):
        Settings(verify_key="not-a-key")


def test_a_signature_of_another_tag_is_refused(fresh_settings: Settings) -> None:
    tag = registry.save_model(_model(), {"threshold": 0.2})
    key = signing.private_key(DEFAULT_KEY).public_key()
    with pytest.raises(signing.SignatureError, match="carries the signature of") as refused:
        signing.verify_folder(_folder(fresh_settings, tag), f"{tag}x", key)
    assert refused.value.problem == "tag"


def test_stage_changes_rewrite_the_labels_and_still_verify(fresh_settings: Settings) -> None:
    tag = registry.save_model(_model(), {"threshold": 0.2})
    digest = registry.model_digest(tag)
    info = _folder(fresh_settings, tag) / "model.yaml"
    before = info.read_bytes()
    registry.promote(tag)
    assert yaml.safe_load(info.read_text())["labels"]["stage"] == "production"
    assert info.read_bytes() != before
    assert registry.load_model().manifest_sha256 == digest
    registry.promote(registry.save_model(_model(1), {"threshold": 0.2}))  # archives `tag`
    assert yaml.safe_load(info.read_text())["labels"]["stage"] == "archived"
    assert registry.load_model(tag).manifest_sha256 == digest


def test_promotion_and_rollback_refuse_an_untrusted_model(fresh_settings: Settings) -> None:
    first = registry.save_model(_model(1), {"threshold": 0.2})
    second = registry.save_model(_model(2), {"threshold": 0.2})
    registry.promote(first)
    (_folder(fresh_settings, second) / registry.MODEL_FILE).write_bytes(b"tampered")
    before = registry.read_state()
    with pytest.raises(registry.UntrustedModelError, match=r"model\.joblib changed"):
        registry.promote(second)
    assert registry.read_state() == before
    third = registry.save_model(_model(3), {"threshold": 0.2})
    registry.promote(third)
    (_folder(fresh_settings, first) / signing.SIGNATURE_FILE).unlink()
    with pytest.raises(registry.UntrustedModelError, match="is not signed"):
        registry.rollback()
    assert registry.production_tag() == third


def test_the_signature_survives_export_and_import(fresh_settings: Settings, tmp_path: Path) -> None:
    bentoml = registry.bentoml_module()
    tag = registry.save_model(_model(), {"threshold": 0.2})
    digest = registry.model_digest(tag)
    archive = bentoml.models.export_model(tag, str(tmp_path / "model.bentomodel"))
    bentoml.models.delete(tag)
    bentoml.models.import_model(archive)
    assert (_folder(fresh_settings, tag) / "signature.json").is_file()
    assert registry.load_model(tag).manifest_sha256 == digest


def test_import_from_the_artifact_store_refuses_a_tampered_model(fresh_settings: Settings) -> None:
    bentoml = registry.bentoml_module()
    tag = registry.save_model(_model(), {"threshold": 0.2})
    registry.promote(tag)
    registry.publish_to_store(tag)
    joblib.dump(_model(9), _folder(fresh_settings, tag) / registry.MODEL_FILE)
    registry.publish_to_store(tag, replace=True)  # the published archive is the tampered one
    # Another machine: nothing in its store, no local registry file.
    bentoml.models.delete(tag)
    registry.registry_path(fresh_settings).unlink()
    with pytest.raises(registry.UntrustedModelError, match=r"model\.joblib changed"):
        registry.import_production()
    with pytest.raises(bentoml.exceptions.NotFound):
        bentoml.models.get(tag)  # not left in the store
    assert registry.read_state().production is None
    with pytest.raises(registry.UntrustedModelError):
        registry.load_model()  # what the service's start does (then: not ready, the reason)


def test_readmit_sign_signs_an_unsigned_model_and_audits_it(
    fresh_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = registry.save_model(_model(), {"threshold": 0.2})
    (_folder(fresh_settings, tag) / signing.SIGNATURE_FILE).unlink()
    assert cli.main(["sign", tag]) == 0
    digest = registry.load_model(tag).manifest_sha256
    assert digest is not None and digest in capsys.readouterr().out
    signed = [r for r in audit.read(fresh_settings.artifacts_uri) if r["decision"] == "signed"]
    assert [(r["tag"], r["manifest_sha256"]) for r in signed] == [(tag, digest)]
    assert cli.main(["sign", tag]) == 0 and "already signed" in capsys.readouterr().out
    # an altered model is not re-signed without --force
    joblib.dump(_model(5), _folder(fresh_settings, tag) / registry.MODEL_FILE)
    assert cli.main(["sign", tag]) == 2
    err = capsys.readouterr().err
    assert "model.joblib changed" in err and "--force" in err
    assert registry.signature_status(tag)["verified"] is False


def test_readmit_sign_force_re_signs_after_a_key_rotation(
    fresh_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = registry.save_model(_model(), {"threshold": 0.2})
    monkeypatch.setenv("READMIT_SIGNING_KEY", OTHER_KEY)
    get_settings.cache_clear()
    assert _refused(tag, get_settings()).problem == "key"
    assert cli.main(["sign", tag]) == 2
    assert cli.main(["sign", "--force", tag]) == 0
    assert registry.load_model(tag).manifest_sha256 == registry.model_digest(tag)


def test_a_manual_promotion_is_audited_with_its_digest(fresh_settings: Settings) -> None:
    tag = registry.save_model(_model(), {"threshold": 0.2})
    assert cli.main(["models", "promote", tag]) == 0
    assert cli.main(["models", "promote", tag]) == 0  # a repeated command audits nothing new
    promoted = [r for r in audit.read(fresh_settings.artifacts_uri) if r["decision"] == "promoted"]
    assert [(r["tag"], r["manifest_sha256"]) for r in promoted] == [
        (tag, registry.model_digest(tag))
    ]
    assert registry.read_state().history[-1]["manifest_sha256"] == registry.model_digest(tag)


def test_readmit_keys_public_prints_the_verify_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keys", "public"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == signing.public_key_hex(get_settings().signing_key_bytes)
    assert Settings(verify_key=printed).verify_key == printed


def test_verification_time_is_measured(fresh_settings: Settings) -> None:
    tag = registry.save_model(_model(), {"threshold": 0.2})
    assert 0 < registry.verify_ms(tag, repeats=3) < 5_000


def test_readmit_score_on_a_tampered_model_is_one_line_and_no_traceback(
    fresh_settings: Settings, sample_frame: pd.DataFrame, tmp_path: Path
) -> None:
    """The real command line in its own process (environment: this test's stores)."""
    tag = registry.save_model(_model(), {"threshold": 0.2})
    joblib.dump(_model(3), _folder(fresh_settings, tag) / registry.MODEL_FILE)
    feed = tmp_path / "feed.csv"
    feed.write_bytes(data.to_csv_bytes(sample_frame.drop(columns=["readmitted"]).head(50)))
    out = tmp_path / "scores.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "readmit_cli", "score", str(feed), "-o", str(out), "--model", tag],
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model "), proc.stderr[-2000:]
    assert "model.joblib changed" in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()
