"""Production mode (READMIT_ENV=production): no component starts on a public default secret;
the pseudonym key comes from an env var or a Prefect Secret block (read on first use)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness

from readmit import secret_sources
from readmit.settings import PROJECT_ROOT, Settings

DEFAULT = "readmit-local-pseudonym-key"
GOOD_KEY = "test-pseudonym-key-not-a-secret"
SECRET_VARS = ("READMIT_ENV", "READMIT_PSEUDONYM_KEY", "READMIT_HISTORY_SALT")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*SECRET_VARS, "READMIT_PSEUDONYM_KEY_BLOCK"):
        monkeypatch.delenv(name, raising=False)


def test_outside_production_the_public_default_keeps_working() -> None:
    settings = Settings()
    assert settings.env == "development"
    assert settings.pseudonym_key_bytes == DEFAULT.encode()


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "READMIT_PSEUDONYM_KEY not set"),
        ({"READMIT_PSEUDONYM_KEY": DEFAULT}, "public default"),
        ({"READMIT_HISTORY_SALT": DEFAULT}, "public default"),
        ({"READMIT_HISTORY_SALT": "readmit-local-salt"}, "public default"),  # its old default
        ({"READMIT_PSEUDONYM_KEY": "short-key"}, "shorter than 16"),
    ],
)
def test_production_refuses_a_public_or_weak_key_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    monkeypatch.setenv("READMIT_ENV", "production")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(secret_sources.SecretConfigError) as refused:
        Settings()
    message = str(refused.value)
    assert says in message and "READMIT_ENV=production refuses to start" in message
    assert "set READMIT_PSEUDONYM_KEY to a secret" in message  # and how to set it
    assert "READMIT_PSEUDONYM_KEY_BLOCK" in message
    assert DEFAULT not in message  # a refusal never echoes the value


@pytest.mark.parametrize("var", ["READMIT_PSEUDONYM_KEY", "READMIT_HISTORY_SALT"])
def test_production_takes_a_key_from_the_env_var(monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.setenv("READMIT_ENV", "production")
    monkeypatch.setenv(var, GOOD_KEY)
    assert Settings().pseudonym_key_bytes == GOOD_KEY.encode()


def test_a_mistyped_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("READMIT_ENV", "prod")
    with pytest.raises(ValueError, match="development\\|production"):
        Settings()


def test_a_key_with_two_sources_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("READMIT_PSEUDONYM_KEY", GOOD_KEY)
    monkeypatch.setenv("READMIT_PSEUDONYM_KEY_BLOCK", "readmit-pseudonym-key")
    with pytest.raises(secret_sources.SecretConfigError, match="both set"):
        Settings()


def test_the_block_is_read_when_the_key_is_used_not_when_settings_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        secret_sources, "read_secret_block", lambda block, env: calls.append(block) or GOOD_KEY
    )
    monkeypatch.setenv("READMIT_ENV", "production")
    monkeypatch.setenv("READMIT_PSEUDONYM_KEY_BLOCK", "readmit-pseudonym-key")
    settings = Settings()  # no public default refused: the key comes from the block
    assert calls == []
    assert settings.pseudonym_key_bytes == GOOD_KEY.encode()
    assert settings.pseudonym_key_bytes == GOOD_KEY.encode()
    assert calls == ["readmit-pseudonym-key"]  # read once


# ------------------------------------------------------------------ components refuse to start


def run_component(code: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    return subprocess.run(
        code, cwd=PROJECT_ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_the_service_and_the_command_line_refuse_to_start_on_the_default() -> None:
    service = [sys.executable, "-c", "import bentos.readmission.service"]
    cli = [str(PROJECT_ROOT / ".venv" / "bin" / "readmit"), "models", "list"]
    for component in (service, cli):
        refused = run_component(component, {"READMIT_ENV": "production"})
        assert refused.returncode != 0
        assert "READMIT_ENV=production refuses to start" in refused.stderr
        assert "READMIT_PSEUDONYM_KEY" in refused.stderr
        assert "READMIT_PSEUDONYM_KEY" in refused.stderr
    started = run_component(
        service, {"READMIT_ENV": "production", "READMIT_PSEUDONYM_KEY": GOOD_KEY}
    )
    assert started.returncode == 0, started.stderr[-2000:]


# --------------------------------------------------------------- a real Prefect Secret block


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    """A temporary Prefect API (start-up is slow on 2 busy cores)."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow
def test_production_reads_the_key_from_a_prefect_secret_block(
    prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret

    block = f"readmit-pseudonym-key-{uuid.uuid4().hex[:8]}"
    Secret(value=GOOD_KEY).save(block)
    monkeypatch.setenv("READMIT_ENV", "production")
    monkeypatch.setenv("READMIT_PSEUDONYM_KEY_BLOCK", block)
    assert Settings().pseudonym_key_bytes == GOOD_KEY.encode()


@pytest.mark.slow
def test_a_public_key_in_the_block_is_refused_in_production_only(
    prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret

    block = f"readmit-default-key-{uuid.uuid4().hex[:8]}"
    Secret(value=DEFAULT).save(block)
    monkeypatch.setenv("READMIT_PSEUDONYM_KEY_BLOCK", block)
    assert Settings().pseudonym_key_bytes == DEFAULT.encode()  # development: fine
    monkeypatch.setenv("READMIT_ENV", "production")
    settings = Settings()
    with pytest.raises(secret_sources.SecretConfigError, match=f"Prefect Secret block '{block}'"):
        settings.pseudonym_key_bytes  # noqa: B018


@pytest.mark.slow
def test_a_missing_block_names_the_setting(
    prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("READMIT_PSEUDONYM_KEY_BLOCK", "no-such-block")
    with pytest.raises(secret_sources.SecretConfigError, match="READMIT_PSEUDONYM_KEY_BLOCK"):
        Settings().pseudonym_key_bytes  # noqa: B018
