"""Model registry on the BentoML model store: save with lineage, list, promote, roll back.

Which model is in production is decided by ONE file, `<model_name>-registry.json` in `BENTOML_HOME`,
replaced atomically (write + rename) under a file lock. That is what makes a promotion atomic: the
store's per-model `stage` labels are a mirror of that file, refreshed after each change, so
`bentoml models list` shows them too, but a crash between the two never leaves two production
models, because readers only trust the registry file.

Every model is signed when it is saved, and verified before it is unpickled, promoted, rolled
back to or imported (`readmit.model.signing`): an unsigned or altered model, or one signed with
a key this component does not trust, raises `UntrustedModelError` (a `NoModelError`: the service
stays up, not ready, with the reason). The registry file records each model's manifest digest
when it is registered, promoted, rolled back to or imported.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import joblib
import yaml

from readmit import storage
from readmit.model import signing
from readmit.settings import Settings, get_settings

Stage = Literal["candidate", "production", "archived"]
MODEL_FILE = "model.joblib"
LINEAGE_FILE = "lineage.json"


class NoModelError(LookupError):
    """No usable model: none saved yet, none promoted, or the requested tag is unknown."""


class IncompatibleModelError(NoModelError):
    """A stored model this version of readmit cannot load (saved by another version: its
    classes moved, or its features changed). Handled like a missing model, with the reason."""


class UntrustedModelError(NoModelError):
    """A stored model whose signature does not hold: unsigned (saved before models were signed),
    altered since it was signed, or signed with a key this component does not trust. It is never
    unpickled; handled like a missing model, with the reason and what to do."""

    def __init__(self, message: str, problem: signing.Problem) -> None:
        super().__init__(message)
        self.problem = problem


class RegistryError(RuntimeError):
    """A registry operation is not allowed (e.g. nothing to roll back to)."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to score, with what the store knows about it."""

    tag: str
    model: Any
    metadata: dict[str, Any]
    stage: str
    manifest_sha256: str | None = None
    """Digest of the signed manifest of the model's files (`readmit.model.signing`)."""

    @property
    def version(self) -> str:
        """The version part of the tag (`readmission:<version>`): names its store folder."""
        return version_of(self.tag)


def version_of(tag: str) -> str:
    """`readmission:20261203-abc` -> `20261203-abc`."""
    return tag.split(":", 1)[1]


@dataclass(frozen=True)
class ModelSummary:
    """One row of `readmit models list`."""

    tag: str
    stage: str
    created_at: str
    roc_auc: float | None
    label_definition: str | None


@dataclass
class RegistryState:
    """Contents of the registry file: the production pointer and every decision made."""

    production: str | None = None
    stages: dict[str, str] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def bentoml_module(settings: Settings | None = None) -> Any:
    """Import bentoml with BENTOML_HOME taken from settings (bentoml reads it at first use)."""
    settings = settings or get_settings()
    os.environ["BENTOML_HOME"] = settings.bentoml_home
    import bentoml

    return bentoml


def _registry_path(settings: Settings) -> Path:
    return Path(settings.bentoml_home) / f"{settings.model_name}-registry.json"


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """Serialise registry changes across processes (flows, CLI, service) on this machine."""
    home = Path(settings.bentoml_home)
    home.mkdir(parents=True, exist_ok=True)
    with open(_registry_path(settings).with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_state(settings: Settings | None = None) -> RegistryState:
    """Current registry state (empty if no model was ever registered)."""
    path = _registry_path(settings or get_settings())
    if not path.exists():
        return RegistryState()
    return RegistryState(**json.loads(path.read_text()))


def _write_state(state: RegistryState, settings: Settings) -> None:
    """Replace the registry file in one rename: readers see the old or the new state, never half.
    Called under `_locked`."""
    content = json.dumps(state.__dict__, indent=2, sort_keys=True).encode()
    _replace_file(_registry_path(settings), content)


def _replace_file(path: Path, content: bytes) -> None:
    """Write `content` to a temporary sibling, fsync it, rename it over `path`, fsync the folder
    (the rename itself survives a power cut). Called under the registry's lock only, so any
    temporary of `path` already there was left by a writer that died (SIGKILL, OOM) between
    write and rename: it is removed, never left to pile up. Temporaries are named after the
    file (`.<name>.<random>`): the lock is per model name, another model's are not ours."""
    prefix = f".{path.name}."
    for stale in path.parent.glob(f"{prefix}*"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json_safe(obj: Any) -> Any:
    """Metadata as plain JSON types (numpy scalars become numbers)."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _bentoml_safe(obj: Any) -> Any:
    """BentoML's metadata rejects None: drop None values (the exact copy is in lineage.json)."""
    if isinstance(obj, dict):
        return {k: _bentoml_safe(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_bentoml_safe(v) if v is not None else "null" for v in obj]
    return obj


def new_version() -> str:
    """A sortable, unique model version: UTC time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]


def save_model(
    model: Any,
    metadata: dict[str, Any],
    *,
    stage: Stage = "candidate",
    version: str | None = None,
    settings: Settings | None = None,
) -> str:
    """Save a fitted pipeline as `<model_name>:<version>` with its lineage; returns the tag.

    The model is registered (recorded in the registry file) only once BentoML has copied all of
    it into the store: a model the registry does not know is one whose save never completed.
    Saving a `version` again (a rerun of a run killed while saving) first discards what the
    killed save left of it. The model's files are signed before BentoML copies them into the
    store (`readmit.model.signing`); the registry records the manifest's digest.

    Raises:
        SecretConfigError: the signing key is refused (production: a public default).
    """
    settings = settings or get_settings()
    bentoml = bentoml_module(settings)
    key = signing.signing_key(settings)  # refused before anything is written
    version = version or new_version()
    name = f"{settings.model_name}:{version}"
    _discard_unregistered(name, settings)
    lineage = _json_safe(metadata)
    with bentoml.models.create(
        name, labels={"stage": stage}, metadata=_bentoml_safe(lineage)
    ) as bento_model:
        joblib.dump(model, bento_model.path_of(MODEL_FILE))
        Path(bento_model.path_of(LINEAGE_FILE)).write_text(json.dumps(lineage, indent=2))
        tag = str(bento_model.tag)
        digest = signing.sign_folder(Path(bento_model.path), tag, key)
    with _locked(settings):
        state = read_state(settings)
        state.stages[tag] = stage
        state.history.append(
            {"at": _now(), "event": "registered", "tag": tag, "stage": stage,
             "manifest_sha256": digest}
        )  # fmt: skip
        _write_state(state, settings)
    return tag


def _discard_unregistered(tag: str, settings: Settings) -> None:
    """Remove a store folder of `tag` that the registry never registered: left by a save killed
    half-way (BentoML copies a model into its store file by file), it may lack files, and it
    would make every later save of the tag fail with "already exists"."""
    folder = Path(settings.bentoml_home) / "models" / settings.model_name / version_of(tag)
    if folder.exists() and tag not in read_state(settings).stages:
        shutil.rmtree(folder)


def production_tag(settings: Settings | None = None) -> str | None:
    """Tag of the production model, or None."""
    return read_state(settings).production


def load_model(tag: str | None = None, settings: Settings | None = None) -> LoadedModel:
    """Load a model by tag, or the production model when `tag` is None.

    The model's signature is verified first, and the bytes verified are the bytes unpickled.

    Raises:
        NoModelError: with a message that says why no model can be loaded.
        UntrustedModelError: the model is unsigned, altered, or signed with another key.
        IncompatibleModelError: the model was saved by a version of readmit that this one
            cannot load.
    """
    settings = settings or get_settings()
    state = read_state(settings)
    wanted = tag or settings.model_tag or state.production or import_production(settings)
    if wanted is None:
        raise NoModelError(
            f"no production model in {settings.bentoml_home}: train one with `readmit train` "
            "(or `make run`), or set READMIT_MODEL_TAG"
        )
    bentoml = bentoml_module(settings)
    try:
        stored = bentoml.models.get(wanted)
    except bentoml.exceptions.NotFound as exc:
        raise NoModelError(f"model {wanted!r} is not in the store {settings.bentoml_home}") from exc
    resolved = str(stored.tag)
    verified = _verify(stored, settings)  # before anything of it is unpickled
    model = _unpickle(verified.contents[MODEL_FILE], resolved)
    stage = state.stages.get(resolved, stored.info.labels.get("stage", "candidate"))
    metadata = json.loads(verified.contents[LINEAGE_FILE])
    return LoadedModel(resolved, model, metadata, stage, verified.digest)


def _verify(stored: Any, settings: Settings) -> signing.Verified:
    """A stored model's signature checked with the key this component trusts.

    Raises:
        UntrustedModelError: unsigned, altered, or signed with another key (the message says
            which file differs and what to do).
    """
    try:
        verified = signing.verify_folder(
            Path(stored.path), str(stored.tag), signing.trusted_key(settings)
        )
    except signing.SignatureError as exc:
        raise UntrustedModelError(str(exc), exc.problem) from exc
    for required in (MODEL_FILE, LINEAGE_FILE):
        if required not in verified.contents:  # signed without it: not a model of ours
            raise UntrustedModelError(f"model {stored.tag} has no {required}", "altered")
    return verified


def model_digest(tag: str, settings: Settings | None = None) -> str:
    """The manifest digest of a stored model (sha256 of its signed manifest), after verifying
    its signature: what an approval, a promotion and the audit log name.

    Raises:
        NoModelError: the tag is not in the store.
        UntrustedModelError: its signature does not hold.
    """
    settings = settings or get_settings()
    return _verify(_stored(tag, settings), settings).digest


def verify_ms(tag: str, repeats: int = 20, settings: Settings | None = None) -> float:
    """Median milliseconds to verify a stored model, what every load adds before unpickling:
    reading and hashing its files and checking the Ed25519 signature (the store lookup, which
    loading does anyway, is not counted)."""
    settings = settings or get_settings()
    stored = _stored(tag, settings)
    return signing.median_ms(lambda: _verify(stored, settings), repeats)


def _stored(tag: str, settings: Settings) -> Any:
    """The store's model of a tag, or NoModelError."""
    bentoml = bentoml_module(settings)
    try:
        return bentoml.models.get(tag)
    except bentoml.exceptions.NotFound as exc:
        raise NoModelError(f"model {tag!r} is not in the store {settings.bentoml_home}") from exc


def _unpickle(content: bytes, tag: str) -> Any:
    """The fitted pipeline (from verified bytes); a clear error when another version of
    readmit saved it."""
    try:
        return joblib.load(io.BytesIO(content))
    except (ModuleNotFoundError, ImportError, AttributeError) as exc:
        raise IncompatibleModelError(
            f"model {tag} was saved by another version of readmit and cannot be loaded here "
            f"({exc}); train a new one with `readmit train` (or `make run`): a first model "
            "that passes the gate replaces a production model that cannot be loaded"
        ) from exc


def production_loads(settings: Settings | None = None) -> bool:
    """True if there is a production model and this version of readmit can load it."""
    settings = settings or get_settings()
    if read_state(settings).production is None:
        return False
    try:
        load_model(read_state(settings).production, settings)
    except (IncompatibleModelError, UntrustedModelError):
        return False
    return True


def _lineage(stored: Any) -> dict[str, Any]:
    """Exact lineage (lineage.json); BentoML's own metadata for models saved without it."""
    path = Path(stored.path_of(LINEAGE_FILE))
    return json.loads(path.read_text()) if path.exists() else dict(stored.info.metadata)


def model_metadata(tag: str, settings: Settings | None = None) -> dict[str, Any]:
    """Metadata (lineage) of a stored model without unpickling it."""
    bentoml = bentoml_module(settings)
    try:
        return _lineage(bentoml.models.get(tag))
    except bentoml.exceptions.NotFound as exc:
        raise NoModelError(f"model {tag!r} is not in the store") from exc


def signature_status(tag: str, settings: Settings | None = None) -> dict[str, Any]:
    """Whether a stored model's signature holds here: its digest, or why it is refused."""
    try:
        return {"verified": True, "manifest_sha256": model_digest(tag, settings)}
    except UntrustedModelError as exc:
        return {"verified": False, "problem": exc.problem, "reason": str(exc)}


def list_models(settings: Settings | None = None) -> list[ModelSummary]:
    """Every stored readmission model, newest first, with its stage from the registry file."""
    settings = settings or get_settings()
    bentoml = bentoml_module(settings)
    state = read_state(settings)
    rows = []
    try:
        stored_models = bentoml.models.list(settings.model_name)
    except bentoml.exceptions.NotFound:
        return []
    for stored in stored_models:
        tag, meta = str(stored.tag), stored.info.metadata
        rows.append((
            stored.info.creation_time,  # full precision: models saved within one second
            ModelSummary(
                tag=tag,
                stage=state.stages.get(tag, stored.info.labels.get("stage", "candidate")),
                created_at=stored.info.creation_time.isoformat(timespec="seconds"),
                roc_auc=(meta.get("metrics") or {}).get("roc_auc"),
                label_definition=meta.get("label_definition"),
            ),
        ))  # fmt: skip
    return [summary for _, summary in sorted(rows, key=lambda r: r[0], reverse=True)]


def _mirror_labels(state: RegistryState, settings: Settings) -> None:
    """Copy stages into each model's `model.yaml` labels (atomic per file; cosmetic mirror)."""
    models_dir = Path(settings.bentoml_home) / "models" / settings.model_name
    for tag, stage in state.stages.items():
        version = version_of(tag)
        info_path = models_dir / version / "model.yaml"
        if not info_path.exists():
            continue
        info = yaml.safe_load(info_path.read_text())
        if (info.get("labels") or {}).get("stage") == stage:
            continue
        info["labels"] = {**(info.get("labels") or {}), "stage": stage}
        tmp = info_path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(info, sort_keys=False))
        os.replace(tmp, info_path)


def _set_production(
    state: RegistryState,
    tag: str,
    event: str,
    reason: str,
    digest: str,
    approval: dict[str, Any] | None = None,
) -> dict[str, Any]:
    previous = state.production
    if previous and previous != tag:
        state.stages[previous] = "archived"
    state.stages[tag] = "production"
    state.production = tag
    record: dict[str, Any] = {
        "at": _now(), "event": event, "tag": tag, "previous": previous, "reason": reason,
        "id": uuid.uuid4().hex[:12],  # the audit line of this decision names it (`lifecycle`)
        "manifest_sha256": digest,  # what was put in production, provably (`signing`)
    }  # fmt: skip
    if approval is not None:
        record["approval"] = approval  # who approved it, why, having seen what (`approval`)
    state.history.append(record)
    return record


def _production_record(state: RegistryState) -> dict[str, Any] | None:
    """The history record that put the current production model there (None if none did)."""
    for record in reversed(state.history):
        if record.get("tag") == state.production and record["event"] in (
            "promoted", "rolled_back", "imported",
        ):  # fmt: skip
            return record
    return None


def promote(
    tag: str,
    reason: str = "manual",
    settings: Settings | None = None,
    approval: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Make `tag` the production model in one atomic step; the previous one is archived.

    With an approval record (`readmit.model.approval`), the record goes into the registry's
    history (the model's lineage), and the model must be exactly the one approved: its manifest
    digest must be the approved digest, or nothing is promoted.

    Idempotent: promoting the model that is already in production (a rerun of a flow killed
    half-way, a repeated command) writes no second record (whose `previous` would be the model
    itself, and a rollback a no-op); it returns the record that put it there and re-mirrors
    the labels, which the killed run may not have reached.

    The model's signature is verified first: an untrusted model never becomes production. The
    record names its manifest digest (`manifest_sha256`).
    """
    settings = settings or get_settings()
    bentoml = bentoml_module(settings)
    try:
        stored = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound as exc:
        raise NoModelError(f"cannot promote {tag!r}: it is not in the store") from exc
    resolved = str(stored.tag)
    with _locked(settings):
        state = read_state(settings)
        if resolved not in state.stages:
            raise NoModelError(
                f"cannot promote {resolved}: it was never registered (its save did not complete, "
                "so it may be missing files); save it again"
            )
        digest = _verify(stored, settings).digest
        approved = (approval or {}).get("approved_digest", digest)
        if approved != digest:
            raise RegistryError(
                f"cannot promote {resolved}: its files (digest {digest[:16]}) are not the ones "
                f"that were approved (digest {str(approved)[:16]}); review it again"
            )
        record = _production_record(state) if state.production == resolved else None
        if record is None:
            record = _set_production(state, resolved, "promoted", reason, digest, approval)
            _write_state(state, settings)
    _mirror_labels(state, settings)
    return record


def set_stage(tag: str, stage: Stage, reason: str, settings: Settings | None = None) -> None:
    """Record a non-production stage (e.g. a rejected challenger stays `candidate`/`archived`)."""
    settings = settings or get_settings()
    with _locked(settings):
        state = read_state(settings)
        if state.production == tag and stage != "production":
            raise RegistryError(f"{tag} is in production; promote another model instead")
        state.stages[tag] = stage
        state.history.append(
            {"at": _now(), "event": f"stage:{stage}", "tag": tag, "reason": reason}
        )
        _write_state(state, settings)
    _mirror_labels(state, settings)


def previous_production(state: RegistryState) -> str | None:
    """The model that was in production before the current one (for rollback)."""
    current = state.production
    for record in reversed(state.history):
        if record["event"] == "promoted" and record["tag"] == current:
            return record.get("previous")
    return None


def rollback(reason: str = "manual", settings: Settings | None = None) -> dict[str, Any]:
    """Restore the previous production model atomically; the current one is archived.

    Raises:
        RegistryError: there is no earlier production model to restore.
        UntrustedModelError: the earlier model's signature does not hold (it is not restored).
    """
    settings = settings or get_settings()
    with _locked(settings):
        state = read_state(settings)
        target = previous_production(state)
        if target is None:
            raise RegistryError("nothing to roll back to: no earlier production model")
        digest = _verify(_stored(target, settings), settings).digest
        record = _set_production(state, target, "rolled_back", reason, digest)
        _write_state(state, settings)
    _mirror_labels(state, settings)
    return record


def exported_uri(tag: str, settings: Settings) -> str:
    """Where a model's archive lives in the artifact store (`bentoml models export`)."""
    return settings.layout.exported_model(tag.split(":", 1)[0], version_of(tag))


def _store_state_uri(settings: Settings) -> str:
    return settings.layout.registry_file(settings.model_name)


def publish_to_store(tag: str, settings: Settings | None = None, *, replace: bool = False) -> str:
    """Export a model to the artifact store (local folder or s3://) and mirror the registry file.

    A service or worker on another machine, with an empty BENTOML_HOME, then imports the
    production model from there. The archive is written before the registry file that points
    to it, so a reader never sees a pointer to a missing model. An archive already there is
    kept unless `replace` (a model signed since it was exported: `sign_model`).
    """
    settings = settings or get_settings()
    bentoml = bentoml_module(settings)
    uri = exported_uri(tag, settings)
    if replace or not storage.exists(uri):
        with tempfile.TemporaryDirectory() as scratch:
            archive = bentoml.models.export_model(tag, f"{scratch}/model.bentomodel")
            storage.write_bytes(uri, Path(archive).read_bytes())
    storage.write_json(_store_state_uri(settings), read_state(settings).__dict__)
    return uri


def import_production(settings: Settings | None = None) -> str | None:
    """Import the artifact store's production model into an empty local store; its tag or None.

    The imported model's signature is verified before the local pointer names it; a model that
    fails is removed from the store again (if this call imported it) and refused.

    Raises:
        UntrustedModelError: the published model is unsigned, altered or signed with another key.
    """
    settings = settings or get_settings()
    state_uri = _store_state_uri(settings)
    if not storage.exists(state_uri):
        return None
    remote = RegistryState(**storage.read_json(state_uri))
    if remote.production is None or not storage.exists(exported_uri(remote.production, settings)):
        return None
    bentoml = bentoml_module(settings)
    imported = False
    try:
        stored = bentoml.models.get(remote.production)
    except bentoml.exceptions.NotFound:
        stored = bentoml.models.import_model(exported_uri(remote.production, settings))
        imported = True
    try:
        digest = _verify(stored, settings).digest
    except UntrustedModelError:
        if imported:
            bentoml.models.delete(remote.production)
        raise
    with _locked(settings):
        local = read_state(settings)
        local.production = remote.production
        local.stages[remote.production] = "production"
        local.history.append(
            {
                "at": _now(),
                "event": "imported",
                "tag": remote.production,
                "source": exported_uri(remote.production, settings),
                "manifest_sha256": digest,
            }
        )
        _write_state(local, settings)
    return remote.production


# --------------------------------------------------------------------------- backup and restore


def registry_path(settings: Settings) -> Path:
    """The registry file (production pointer and stages) in BENTOML_HOME (`readmit.ops.backup`)."""
    return _registry_path(settings)


def locked(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """The registry's cross-process lock: a backup reads the pointer and the models under it."""
    return _locked(settings)


def restore_state_file(content: bytes, settings: Settings) -> RegistryState:
    """Put a backed-up registry file back byte for byte, atomically, under the lock; then mirror
    the stages into the models' labels. Raises ValueError if the content is not a registry."""
    state = RegistryState(**json.loads(content))
    path = _registry_path(settings)
    with _locked(settings):
        _replace_file(path, content)
    _mirror_labels(state, settings)
    return state


# --------------------------------------------------------------------------- signing


def sign_model(
    tag: str, *, force: bool = False, settings: Settings | None = None
) -> dict[str, Any]:
    """Sign a stored, registered model that is not (a model saved before models were signed),
    or, with `force`, re-sign one whose signature does not hold here (after a key rotation):
    only for a model whose files you trust. Re-exports it if it was published, so machines
    that import it get the signature. Returns tag, digest, key id and whether it was signed.

    Raises:
        NoModelError: not in the store, or never registered (a save that did not complete).
        RegistryError: it has a signature that does not hold, and `force` is not given.
    """
    settings = settings or get_settings()
    key = signing.signing_key(settings)
    stored = _stored(tag, settings)
    resolved = str(stored.tag)
    with _locked(settings):
        if resolved not in read_state(settings).stages:
            raise NoModelError(f"cannot sign {resolved}: it was never registered; save it again")
        try:
            verified = _verify(stored, settings)
            return {"tag": resolved, "manifest_sha256": verified.digest,
                    "key_id": verified.key_id, "signed": False}  # fmt: skip
        except UntrustedModelError as exc:
            if exc.problem != "unsigned" and not force:
                raise RegistryError(
                    f"{exc}. `readmit sign --force {resolved}` replaces its signature: only if "
                    "you trust its files (e.g. after rotating the signing key)"
                ) from exc
        digest = signing.sign_folder(Path(stored.path), resolved, key)
    if storage.exists(exported_uri(resolved, settings)):
        publish_to_store(resolved, settings, replace=True)
    return {"tag": resolved, "manifest_sha256": digest,
            "key_id": signing.key_id(key.public_key()), "signed": True}  # fmt: skip
