"""Where readmit's secrets come from, and which values production refuses.

A secret setting (a `SecretStr` field of `readmit.settings.Settings`: the pseudonym key, the
models' signing key) comes from its env var (`READMIT_PSEUDONYM_KEY`, `READMIT_SIGNING_KEY`: a
Kubernetes Secret or the Compose `.env`) or, when `<name>_block` names one
(`READMIT_PSEUDONYM_KEY_BLOCK`, `READMIT_SIGNING_KEY_BLOCK`), from a Prefect Secret block of
that name, read the first time the key is used (`Settings.secret_bytes`), never at import.

With `READMIT_ENV=production` the settings refuse, when they are built, a secret left at a value
the code publishes: its declared default, a retired default (`RETIRED_DEFAULTS`), or one shorter
than `MIN_SECRET_LENGTH`. Every component reads the settings first (the service at import, the
flows' tasks and the command line), so none of them starts on a public key. A value read from a
block passes the same check when it is read. Outside production the defaults keep working, so
`make run` needs no configuration.

A component that only verifies signatures (the service, a scoring job) may go without the
signing key when it has its public half (`PUBLIC_HALVES`: `READMIT_VERIFY_KEY`); the public
half of a public default is refused in production like the default itself, and the signing key
is still refused at its default if that component ever signs (`resolve`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices, SecretStr

if TYPE_CHECKING:
    from readmit.settings import Settings

PRODUCTION = "production"
MIN_SECRET_LENGTH = 16
"""Shortest secret production accepts: `openssl rand -hex 32` gives 64 characters."""

RETIRED_DEFAULTS: dict[str, tuple[str, ...]] = {
    # READMIT_HISTORY_SALT's default before the rename to READMIT_PSEUDONYM_KEY.
    "pseudonym_key": ("readmit-local-salt",),
}
"""Public values a secret once had as its default: refused in production like the default."""

PUBLIC_HALVES: dict[str, str] = {"signing_key": "verify_key"}
"""Secrets with a public half (the setting named): a component given the public half only
verifies, and needs no secret (`readmit.model.signing`)."""


class SecretConfigError(RuntimeError):
    """A secret setting is unusable: a public default in production, two sources, a missing or
    malformed Prefect Secret block. The message names the variable and how to set it."""


def secret_fields(settings_cls: type[Settings]) -> list[str]:
    """Names of the settings' secret fields (`SecretStr`), in declaration order."""
    return [
        name
        for name, field in settings_cls.model_fields.items()
        if field.annotation is SecretStr or field.annotation == (SecretStr | None)
    ]


def declared_defaults(settings_cls: type[Settings]) -> dict[str, str]:
    """The public default of every secret field that has one (what `make audit` lists)."""
    out: dict[str, str] = {}
    for name in secret_fields(settings_cls):
        default = settings_cls.model_fields[name].default
        if isinstance(default, SecretStr) and default.get_secret_value():
            out[name] = default.get_secret_value()
    return out


def env_names(settings_cls: type[Settings], name: str) -> list[str]:
    """The env vars a field is read from, the preferred one first."""
    alias = settings_cls.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [f"READMIT_{name.upper()}"]


def block_setting(name: str) -> str:
    """The setting naming a secret's Prefect Secret block (`pseudonym_key_block`)."""
    return f"{name}_block"


def public_values(settings_cls: type[Settings], name: str) -> set[str]:
    """Values of a secret that are public: its declared default and retired defaults."""
    values = set(RETIRED_DEFAULTS.get(name, ()))
    default = declared_defaults(settings_cls).get(name)
    if default:
        values.add(default)
    return values


def how_to_set(settings_cls: type[Settings], name: str) -> str:
    """One sentence telling how to give a secret its value."""
    env = env_names(settings_cls, name)
    also = f" ({', '.join(env[1:])}, its former name, is read too)" if env[1:] else ""
    block = block_setting(name)
    text = (
        f"set {env[0]} to a secret of {MIN_SECRET_LENGTH}+ characters (e.g. `openssl rand -hex "
        f"32`, from a Kubernetes Secret or the Compose .env, never git){also}"
    )
    if block in settings_cls.model_fields:
        text += f", or name a Prefect Secret block holding it with READMIT_{block.upper()}"
    if name in PUBLIC_HALVES:
        text += (
            f"; a component that only verifies may instead set "
            f"READMIT_{PUBLIC_HALVES[name].upper()} to its public key (`readmit keys public`)"
        )
    return text


def refusal(settings_cls: type[Settings], name: str, value: str, source: str) -> str | None:
    """Why production refuses a secret's value, or None when it is acceptable."""
    what = f"the {name.replace('_', ' ')} ({source})"
    if value in public_values(settings_cls, name):
        problem = f"{what} is a public default"
    elif len(value) < MIN_SECRET_LENGTH:
        problem = f"{what} is shorter than {MIN_SECRET_LENGTH} characters"
    else:
        return None
    return f"READMIT_ENV=production refuses to start: {problem}; {how_to_set(settings_cls, name)}."


def check_settings(settings: Settings) -> None:
    """Refuse, at start, a secret with two sources or, in production, a public value.

    A secret read from a Prefect block is checked when it is read (`resolve`).

    Raises:
        SecretConfigError: naming each refused variable and how to set it.
    """
    cls = type(settings)
    problems: list[str] = []
    for name in secret_fields(cls):
        env = env_names(cls, name)
        block = getattr(settings, block_setting(name), None)
        public_half = getattr(settings, PUBLIC_HALVES.get(name, ""), None)
        if public_half and settings.env == PRODUCTION:
            problems += _public_half_refusal(cls, name, public_half)
        if block:
            if name in settings.model_fields_set:
                problems.append(
                    f"{env[0]} and READMIT_{block_setting(name).upper()}={block} are both set: "
                    f"the key must have one source; unset one of them."
                )
            continue
        if settings.env != PRODUCTION:
            continue
        if public_half and name not in settings.model_fields_set:
            continue  # verifies only: the secret is checked if it is ever used (`resolve`)
        secret = getattr(settings, name)
        if secret is None and cls.model_fields[name].default is None:
            continue  # an optional secret (e.g. the Prefect database URL), not configured
        value = secret.get_secret_value() if secret is not None else ""
        source = " or ".join(env) if name in settings.model_fields_set else f"{env[0]} not set"
        reason = refusal(cls, name, value, source)
        if reason:
            problems.append(reason)
    if problems:
        raise SecretConfigError("\n".join(problems))


def _public_half_refusal(settings_cls: type[Settings], name: str, public_half: str) -> list[str]:
    """Why production refuses a public half (the public key of a public default), if it does."""
    from readmit.model import signing  # the one secret with a public half: the signing key

    public = {signing.public_key_hex(v.encode()) for v in public_values(settings_cls, name)}
    if public_half not in public:
        return []
    setting = f"READMIT_{PUBLIC_HALVES[name].upper()}"
    secret = env_names(settings_cls, name)[0]
    return [
        f"READMIT_ENV=production refuses to start: {setting} is the public key of the public "
        f"default {name.replace('_', ' ')}; set it to the public key of your {secret} "
        f"(`readmit keys public` prints it where {secret} is set)."
    ]


def resolve(settings: Settings, name: str) -> str:
    """A secret's value: from its Prefect Secret block when one is named, else the setting.

    Raises:
        SecretConfigError: the block is missing, not a string, or (in production) public.
    """
    block = getattr(settings, block_setting(name), None)
    if block:
        value = read_secret_block(block, env=f"READMIT_{block_setting(name).upper()}")
        source = f"Prefect Secret block {block!r}"
    else:
        secret = getattr(settings, name)
        value = secret.get_secret_value() if secret is not None else ""
        env = env_names(type(settings), name)
        source = " or ".join(env) if name in settings.model_fields_set else f"{env[0]} not set"
    if settings.env == PRODUCTION:  # a secret excused at start (`PUBLIC_HALVES`) is used now
        reason = refusal(type(settings), name, value, source)
        if reason:
            raise SecretConfigError(reason)
    return value


def read_secret_block(block: str, env: str) -> str:
    """The string held by the Prefect Secret block `block` (on PREFECT_API_URL's server).

    Raises:
        SecretConfigError: no such block (or no Prefect API), or its value is not a string.
    """
    from prefect.blocks.system import Secret

    load: Any = Secret.load  # `_sync`: a plain call even inside an event loop (async_dispatch)
    try:
        loaded = load(block, _sync=True)
    except Exception as exc:  # Prefect raises ValueError, HTTP or connection errors
        raise SecretConfigError(
            f"{env}={block}: cannot read the Prefect Secret block {block!r} ({exc}). Create it "
            f"on the Prefect server the component uses (PREFECT_API_URL), e.g. "
            f"`Secret(value=...).save({block!r})` from prefect.blocks.system."
        ) from exc
    value = loaded.get()
    if not isinstance(value, str) or not value:
        raise SecretConfigError(
            f"{env}={block}: the Prefect Secret block {block!r} must hold a non-empty string."
        )
    return value
