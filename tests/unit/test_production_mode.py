"""Production mode (READMIT_ENV=production): no component starts on a public default secret;
the pseudonym key and the models' signing key come from an env var or a Prefect Secret block
(read on first use); a component that only verifies models may hold the public key alone."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness

from readmit import secret_sources
from readmit.model import signing
from readmit.settings import PROJECT_ROOT, Settings

DEFAULT = "readmit-local-pseudonym-key"
GOOD_KEY = "test-pseudonym-key-not-a-secret"
SIGNING_DEFAULT = "readmit-local-signing-key"
GOOD_SIGNING_KEY = "test-signing-key-not-a-secret"
SECRET_VARS = (
    "READMIT_ENV",
    "READMIT_PSEUDONYM_KEY",
    "READMIT_HISTORY_SALT",
    "READMIT_SIGNING_KEY",
    "READMIT_VERIFY_KEY",
)
BLOCK_VARS = ("READMIT_PSEUDONYM_KEY_BLOCK", "READMIT_SIGNING_KEY_BLOCK")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*SECRET_VARS, *BLOCK_VARS):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def signing_key_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """A good signing key: these tests are about the pseudonym key."""
    monkeypatch.setenv("READMIT_SIGNING_KEY", GOOD_SIGNING_KEY)


def test_outside_production_the_public_default_keeps_working() -> None:
    settings = Settings()
    assert settings.env == "development"
    assert settings.pseudonym_key_bytes == DEFAULT.encode()
    assert settings.signing_key_bytes == SIGNING_DEFAULT.encode()


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
def test_production_takes_a_key_from_the_env_var(
    monkeypatch: pytest.MonkeyPatch, signing_key_set: None, var: str
) -> None:
    monkeypatch.setenv("READMIT_ENV", "production")
    monkeypatch.setenv(var, GOOD_KEY)
    settings = Settings()
    assert settings.pseudonym_key_bytes == GOOD_KEY.encode()
    assert settings.signing_key_bytes == GOOD_SIGNING_KEY.encode()


# ------------------------------------------------------------------ the models' signing key


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "READMIT_SIGNING_KEY not set"),
        ({"READMIT_SIGNING_KEY": SIGNING_DEFAULT}, "public default"),
        ({"READMIT_SIGNING_KEY": "short-key"}, "shorter than 16"),
    ],
)
def test_production_refuses_a_public_or_weak_signing_key(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    monkeypatch.setenv("READMIT_ENV", "production")
    monkeypatch.setenv("READMIT_PSEUDONYM_KEY", GOOD_KEY)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(secret_sources.SecretConfigError) as refused:
        Settings()
    message = str(refused.value)
    assert says in message and "READMIT_ENV=production refuses to start" in message
    assert "the signing key" in message and "READMIT_PSEUDONYM_KEY" not in message
    assert "set READMIT_SIGNING_KEY to a secret" in message
    assert "READMIT_SIGNING_KEY_BLOCK" in message and "READMIT_VERIFY_KEY" in message
    assert SIGNING_DEFAULT not in message


def test_a_component_that_only_verifies_needs_the_public_key_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The service and a scoring job: READMIT_VERIFY_KEY, no signing key; signing there is
    still refused."""
    public = signing.public_key_hex(GOOD_SIGNING_KEY.encode())
    monkeypatch.setenv("READMIT_ENV", "production")
    monkeypatch.setenv("READMIT_PSEUDONYM_KEY", GOOD_KEY)
    monkeypatch.setenv("READMIT_VERIFY_KEY", public)
    settings = Settings()
    assert signing.public_bytes(signing.trusted_key(settings)).hex() == public
    with pytest.raises(secret_sources.SecretConfigError, match="READMIT_SIGNING_KEY not set"):
        signing.signing_key(settings)
    monkeypatch.setenv("READMIT_SIGNING_KEY", SIGNING_DEFAULT)  # said, not just left unset
    with pytest.raises(secret_sources.SecretConfigError, match=r"signing key .* public default"):
        Settings()


def test_production_refuses_the_public_key_of_the_default_signing_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("READMIT_ENV", "production")
    monkeypatch.setenv("READMIT_PSEUDONYM_KEY", GOOD_KEY)
    monkeypatch.setenv("READMIT_VERIFY_KEY", signing.public_key_hex(SIGNING_DEFAULT.encode()))
    with pytest.raises(secret_sources.SecretConfigError) as refused:
        Settings()
    assert "READMIT_VERIFY_KEY is the public key of the public default signing key" in str(
        refused.value
    )
    monkeypatch.setenv("READMIT_SIGNING_KEY", GOOD_SIGNING_KEY)  # even with a good signing key
    with pytest.raises(secret_sources.SecretConfigError, match="READMIT_VERIFY_KEY is the public"):
        Settings()
    monkeypatch.delenv("READMIT_ENV")
    assert Settings().verify_key  # development: fine


def test_a_public_signing_key_read_from_a_block_is_refused_when_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {"readmit-signing-key": SIGNING_DEFAULT}
    monkeypatch.setattr(secret_sources, "read_secret_block", lambda block, env: values[block])
    monkeypatch.setenv("READMIT_ENV", "production")
    monkeypatch.setenv("READMIT_PSEUDONYM_KEY", GOOD_KEY)
    monkeypatch.setenv("READMIT_SIGNING_KEY_BLOCK", "readmit-signing-key")
    settings = Settings()  # the block is read on first use, not here
    with pytest.raises(secret_sources.SecretConfigError, match="Prefect Secret block"):
        settings.signing_key_bytes  # noqa: B018
    values["readmit-signing-key"] = GOOD_SIGNING_KEY
    assert Settings().signing_key_bytes == GOOD_SIGNING_KEY.encode()


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
    monkeypatch: pytest.MonkeyPatch, signing_key_set: None
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
    clean = {k: v for k, v in os.environ.items() if k not in (*SECRET_VARS, *BLOCK_VARS)}
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
        assert "READMIT_SIGNING_KEY" in refused.stderr
    # the service verifies models only: the public key is all it needs
    verify_only = {
        "READMIT_ENV": "production",
        "READMIT_PSEUDONYM_KEY": GOOD_KEY,
        "READMIT_VERIFY_KEY": signing.public_key_hex(GOOD_SIGNING_KEY.encode()),
    }
    started = run_component(service, verify_only)
    assert started.returncode == 0, started.stderr[-2000:]


# --------------------------------------------------------------- a real Prefect Secret block


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    """A temporary Prefect API (start-up is slow on 2 busy cores)."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


KEYS = {
    # secret setting: (its block's env var, the other key's env var, its public default, good)
    "pseudonym_key": ("READMIT_PSEUDONYM_KEY_BLOCK", "READMIT_SIGNING_KEY", DEFAULT, GOOD_KEY),
    "signing_key": (
        "READMIT_SIGNING_KEY_BLOCK", "READMIT_PSEUDONYM_KEY", SIGNING_DEFAULT, GOOD_SIGNING_KEY,
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KEYS))
def test_production_reads_the_key_from_a_prefect_secret_block(
    prefect_api: None, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    from prefect.blocks.system import Secret

    block_var, other_var, _, good = KEYS[name]
    block = f"readmit-{name}-{uuid.uuid4().hex[:8]}".replace("_", "-")
    Secret(value=good).save(block)
    monkeypatch.setenv("READMIT_ENV", "production")
    monkeypatch.setenv(block_var, block)
    monkeypatch.setenv(other_var, "another-good-key-for-the-other-secret")
    assert Settings().secret_bytes(name) == good.encode()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KEYS))
def test_a_public_key_in_the_block_is_refused_in_production_only(
    prefect_api: None, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    from prefect.blocks.system import Secret

    block_var, other_var, default, _ = KEYS[name]
    block = f"readmit-default-{name}-{uuid.uuid4().hex[:8]}".replace("_", "-")
    Secret(value=default).save(block)
    monkeypatch.setenv(block_var, block)
    assert Settings().secret_bytes(name) == default.encode()  # development: fine
    monkeypatch.setenv("READMIT_ENV", "production")
    monkeypatch.setenv(other_var, "another-good-key-for-the-other-secret")
    settings = Settings()
    with pytest.raises(secret_sources.SecretConfigError, match=f"Prefect Secret block '{block}'"):
        settings.secret_bytes(name)


@pytest.mark.slow
def test_a_missing_block_names_the_setting(
    prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("READMIT_PSEUDONYM_KEY_BLOCK", "no-such-block")
    with pytest.raises(secret_sources.SecretConfigError, match="READMIT_PSEUDONYM_KEY_BLOCK"):
        Settings().pseudonym_key_bytes  # noqa: B018
