"""Backup and restore of everything readmit keeps, as one consistent, verifiable snapshot.

A snapshot is a folder below `READMIT_BACKUP_URI` (a local folder or s3://; default
`<artifacts>/backups`, which a copy of the artifact store then carries along: put it elsewhere
in production), named by its UTC time:

- `bentoml/models/<name>/<version>.bentomodel`: every stored model, exported;
- `bentoml/<name>-registry.json`: the production pointer and every stage decision;
- `artifacts/<path>`: the artifact store (audit log, monitoring state and windows, outcomes,
  model reports and monitoring references, exported models, batches, prediction logs), except
  the backups themselves and the live served-history database;
- `history/served.sqlite` (SQLite online backup) or `history/redis.jsonl.gz` (every key of the
  store): the patient-history store the service reads;
- `prefect/prefect.db` (SQLite online backup) or `prefect/prefect.dump` (`pg_dump -Fc`): the
  Prefect database, when `READMIT_PREFECT_DATABASE` names it;
- `manifest.json`, written LAST: sha256 and size of every file above, the production tag and
  what was left out. A folder without it is an unfinished snapshot: never restored, never
  counted by retention, removed by the next prune once old enough.

Restore verifies every digest before it writes anything, refuses a machine that already has
state (unless forced), then rebuilds: models, pointer, artifact store, history, Prefect database.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from readmit import storage
from readmit.model import registry
from readmit.settings import Settings

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
UNFINISHED_GRACE = timedelta(hours=6)
"""An unfinished snapshot (no manifest) younger than this may still be being written."""

Progress = Callable[[str], None]


class BackupError(RuntimeError):
    """A snapshot cannot be written or restored; the message says which part and why."""


class SnapshotCorruptError(BackupError):
    """A snapshot file is missing or its digest differs from the manifest: nothing is restored."""


class RestoreTargetNotEmptyError(BackupError):
    """The machine already has models or an audit log: restore refuses to mix two states."""


@dataclass(frozen=True)
class SnapshotInfo:
    """One complete snapshot: where, when, what it holds."""

    uri: str
    created_at: str
    production: str | None
    models: list[str]
    files: int
    bytes: int
    not_included: list[str] = field(default_factory=list)

    @property
    def megabytes(self) -> float:
        """Size in MB (10^6 bytes)."""
        return self.bytes / 1e6


@dataclass(frozen=True)
class RestoreReport:
    """What a restore rebuilt."""

    snapshot: str
    production: str | None
    models: list[str]
    artifact_files: int
    history: str | None
    prefect_database: str | None


def _quiet(_: str) -> None:
    """No progress output."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def backup_root(settings: Settings) -> str:
    """Where snapshots go: READMIT_BACKUP_URI, else `<artifacts>/backups`."""
    return settings.backup_uri or settings.layout.path("backups")


def snapshot_name(now: datetime) -> str:
    """A snapshot's folder name: its UTC time, sortable, to the microsecond."""
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _join(root: str, rel: str) -> str:
    return "/".join([root.rstrip("/"), rel.strip("/")])


def relative_files(root: str) -> list[str]:
    """Every file below `root`, as paths relative to it (empty when the folder is absent)."""
    fs, path = storage.filesystem(root)
    storage.forget_listings(fs, path)
    base = path.rstrip("/")
    if not fs.exists(base):
        return []
    return sorted(p[len(base) + 1 :] for p in fs.find(base) if p.startswith(base + "/"))


def _inside(child: str, parent: str) -> str | None:
    """`child`'s path relative to `parent` when it lies below it (local paths or URLs)."""

    def norm(u: str) -> str:
        u = u.removeprefix("file://")
        return u.rstrip("/") if "://" in u else str(Path(u).resolve())

    c, p = norm(child), norm(parent)
    return c[len(p) + 1 :] if c.startswith(p + "/") else None


def artifact_exclusions(settings: Settings) -> list[str]:
    """Artifact-store prefixes a snapshot leaves out: the backups, the live history database."""
    skip = []
    inside = _inside(backup_root(settings), settings.artifacts_uri)
    if inside:
        skip.append(inside + "/")
    history = _inside(settings.history_store_uri.removeprefix("sqlite://"), settings.artifacts_uri)
    if settings.history_store_uri.startswith("sqlite://") and history:
        skip.append(history)  # and its -wal / -shm files: a prefix match
    return skip


# --------------------------------------------------------------------------- history store


def _sqlite_online_backup(source: str, target: Path) -> None:
    """A consistent copy of a live SQLite database (readers and writers may keep going)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _redis_dump(url: str, prefix: str) -> bytes:
    """Every key of the Redis history store, as gzipped JSON lines (lists and sets)."""
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    lines = []
    for key in sorted(client.scan_iter(match=f"{prefix}*", count=1000)):
        kind = client.type(key)
        if kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "set":
            values = sorted(client.smembers(key))
        else:
            raise BackupError(f"history store key {key!r} is a Redis {kind!r}: not readmit's")
        lines.append(json.dumps({"key": key, "type": kind, "values": values}))
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


def _redis_load(url: str, dump: bytes) -> int:
    """Write a history dump into Redis (each key replaced whole); returns keys written."""
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    pipe = client.pipeline(transaction=True)
    n = 0
    for line in gzip.decompress(dump).decode().splitlines():
        if not line:
            continue
        item = json.loads(line)
        pipe.delete(item["key"])
        if item["values"]:
            push = pipe.rpush if item["type"] == "list" else pipe.sadd
            push(item["key"], *item["values"])
        n += 1
    pipe.execute()
    return n


REDIS_PREFIX = "readmit:history:"


def history_files(uri: str, scratch: Path) -> dict[str, Path]:
    """The history store as snapshot files, written into `scratch`."""
    if uri.startswith("sqlite://"):
        path = uri.removeprefix("sqlite://")
        if not Path(path).exists():
            return {}
        out = scratch / "served.sqlite"
        _sqlite_online_backup(path, out)
        return {"history/served.sqlite": out}
    out = scratch / "redis.jsonl.gz"
    out.write_bytes(_redis_dump(uri, REDIS_PREFIX))
    return {"history/redis.jsonl.gz": out}


# --------------------------------------------------------------------------- Prefect database


def prefect_database_kind(url: str) -> str:
    """`sqlite` or `postgres`, from a SQLAlchemy-style URL (Prefect's own spelling works)."""
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    raise BackupError(
        f"READMIT_PREFECT_DATABASE: {scheme!r} is not supported; expected "
        "sqlite+aiosqlite:///<path> or a postgresql+asyncpg:// URL (user, password, host, port, db)"
    )


def _sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1] if ":///" in url else url.split("://", 1)[1]


def _pg_args(url: str) -> tuple[list[str], dict[str, str]]:
    """Connection flags and env (the password goes in PGPASSWORD, never on a command line)."""
    parts = urlsplit(url.replace("+asyncpg", "").replace("+psycopg", ""))
    args = ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432)]
    if parts.username:
        args += ["-U", parts.username]
    env = {**os.environ, "PGPASSWORD": parts.password or ""}
    return [*args, "-d", parts.path.lstrip("/")], env


def _pg_tool(name: str) -> str:
    """A PostgreSQL client binary: Debian keeps the versioned ones in /usr/lib/postgresql."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3])
    )
    found = str(versions[-1]) if versions else shutil.which(name)
    if not found:
        raise BackupError(f"`{name}` not found: install PostgreSQL's client tools")
    return found


def prefect_database_files(url: str, scratch: Path) -> dict[str, Path]:
    """The Prefect database as a snapshot file (SQLite online backup, or `pg_dump -Fc`)."""
    if prefect_database_kind(url) == "sqlite":
        path = _sqlite_path(url)
        if not Path(path).exists():
            raise BackupError(f"READMIT_PREFECT_DATABASE: no SQLite database at {path}")
        out = scratch / "prefect.db"
        _sqlite_online_backup(path, out)
        return {"prefect/prefect.db": out}
    out = scratch / "prefect.dump"
    args, env = _pg_args(url)
    done = subprocess.run(
        [_pg_tool("pg_dump"), "-Fc", "-f", str(out), *args],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise BackupError(f"pg_dump of the Prefect database failed: {done.stderr.strip()}")
    return {"prefect/prefect.dump": out}


def restore_prefect_database(url: str, snapshot_file: Path) -> str:
    """Put the Prefect database back (the Prefect server must be stopped); where it went."""
    if prefect_database_kind(url) == "sqlite":
        target = Path(_sqlite_path(url))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.restore")
        shutil.copyfile(snapshot_file, tmp)
        for suffix in ("-wal", "-shm"):  # a stale WAL would be replayed into the restored file
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, target)
        return str(target)
    args, env = _pg_args(url)
    done = subprocess.run(
        [_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", *args,
         str(snapshot_file)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise BackupError(f"pg_restore of the Prefect database failed: {done.stderr.strip()}")
    return url.split("@")[-1]


# --------------------------------------------------------------------------- snapshot


@contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="readmit-backup-") as tmp:
        yield Path(tmp)


def _model_files(settings: Settings, scratch: Path) -> tuple[dict[str, Path], list[str]]:
    """Every stored model exported, plus the registry file, read under the registry's lock so
    the pointer and the models it names are one consistent state."""
    bentoml = registry.bentoml_module(settings)
    files: dict[str, Path] = {}
    with registry.locked(settings):
        state_path = registry.registry_path(settings)
        if state_path.exists():
            out = scratch / state_path.name
            shutil.copyfile(state_path, out)
            files[f"bentoml/{state_path.name}"] = out
        try:
            stored = bentoml.models.list(settings.model_name)
        except bentoml.exceptions.NotFound:
            stored = []
        tags = sorted(str(m.tag) for m in stored)
        for tag in tags:
            name, version = tag.split(":", 1)
            out = Path(bentoml.models.export_model(tag, str(scratch / f"{version}.bentomodel")))
            files[f"bentoml/models/{name}/{version}.bentomodel"] = out
    return files, tags


def create_snapshot(
    settings: Settings, *, now: datetime | None = None, progress: Progress = _quiet
) -> SnapshotInfo:
    """Write a snapshot of the whole state below `backup_root`; the manifest goes last.

    Order: models and pointer (under the registry lock), the artifact store, the history store,
    the Prefect database. Each file's digest is taken from the bytes written.
    """
    now = now or datetime.now(UTC)
    uri = _join(backup_root(settings), snapshot_name(now))
    digests: dict[str, dict[str, Any]] = {}

    def put(rel: str, data: bytes) -> None:
        storage.write_bytes(_join(uri, rel), data)
        digests[rel] = {"sha256": _sha256(data), "bytes": len(data)}

    not_included: list[str] = []
    with _scratch() as scratch:
        model_files, tags = _model_files(settings, scratch)
        pointer = model_files.get(f"bentoml/{registry.registry_path(settings).name}")
        production = json.loads(pointer.read_bytes()).get("production") if pointer else None
        for rel, path in model_files.items():
            put(rel, path.read_bytes())
        progress(f"models: {len(tags)} exported, registry pointer copied")
        skip = artifact_exclusions(settings)
        rels = [r for r in relative_files(settings.artifacts_uri) if not r.startswith(tuple(skip))]
        for rel in rels:
            put(f"artifacts/{rel}", storage.read_bytes(settings.layout.path(rel)))
        progress(f"artifact store: {len(rels)} files")
        history = history_files(settings.history_store_uri, scratch)
        for rel, path in history.items():
            put(rel, path.read_bytes())
        if not history:
            not_included.append("history store: empty (nothing served and recorded yet)")
        if settings.prefect_database is None:
            not_included.append("Prefect database: READMIT_PREFECT_DATABASE is not set")
        else:
            url = settings.prefect_database.get_secret_value()
            for rel, path in prefect_database_files(url, scratch).items():
                put(rel, path.read_bytes())
            progress(f"Prefect database ({prefect_database_kind(url)}) copied")
    manifest = {
        "format": FORMAT_VERSION,
        "created_at": now.astimezone(UTC).isoformat(),
        "model_name": settings.model_name,
        "production": production,
        "models": tags,
        "history": next((r for r in digests if r.startswith("history/")), None),
        "prefect_database": next((r for r in digests if r.startswith("prefect/")), None),
        "not_included": not_included,
        "files": digests,
    }
    storage.write_json(_join(uri, MANIFEST), manifest)
    return _info(uri, manifest)


def _info(uri: str, manifest: dict[str, Any]) -> SnapshotInfo:
    files = manifest["files"]
    return SnapshotInfo(
        uri=uri,
        created_at=manifest["created_at"],
        production=manifest.get("production"),
        models=list(manifest.get("models", [])),
        files=len(files),
        bytes=sum(int(f["bytes"]) for f in files.values()),
        not_included=list(manifest.get("not_included", [])),
    )


def read_manifest(snapshot_uri: str) -> dict[str, Any]:
    """A snapshot's manifest.

    Raises:
        SnapshotCorruptError: there is none (an unfinished or foreign folder) or it is unreadable.
    """
    url = _join(snapshot_uri, MANIFEST)
    if not storage.exists(url):
        raise SnapshotCorruptError(
            f"{snapshot_uri} has no {MANIFEST}: not a snapshot, or one whose writing did not "
            "finish (the manifest is written last); choose another with `readmit backup list`"
        )
    try:
        manifest: dict[str, Any] = storage.read_json(url)
    except (ValueError, OSError) as exc:
        raise SnapshotCorruptError(f"{url} is unreadable: {exc}") from exc
    if manifest.get("format") != FORMAT_VERSION:
        raise SnapshotCorruptError(
            f"{url}: format {manifest.get('format')!r}, this readmit reads {FORMAT_VERSION}"
        )
    return manifest


def list_snapshots(settings: Settings) -> list[SnapshotInfo]:
    """Complete snapshots, oldest first (folders without a manifest are not snapshots)."""
    root = backup_root(settings)
    out = []
    for rel in relative_files(root):
        if rel.count("/") == 1 and rel.endswith("/" + MANIFEST):
            uri = _join(root, rel.split("/", 1)[0])
            try:
                out.append(_info(uri, read_manifest(uri)))
            except SnapshotCorruptError:
                continue
    return sorted(out, key=lambda s: s.created_at)


def _remove_tree(uri: str) -> None:
    fs, path = storage.filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def prune(settings: Settings, keep: int, *, now: datetime | None = None) -> list[str]:
    """Keep the newest `keep` complete snapshots; remove older ones and unfinished folders older
    than UNFINISHED_GRACE. Returns what was removed."""
    if keep < 1:
        raise BackupError("keep must be at least 1: pruning every snapshot is never wanted")
    now = now or datetime.now(UTC)
    root = backup_root(settings)
    complete = list_snapshots(settings)
    removed = [s.uri for s in complete[:-keep]]
    complete_names = {s.uri.rsplit("/", 1)[1] for s in complete}
    for name in sorted({r.split("/", 1)[0] for r in relative_files(root) if "/" in r}):
        if name in complete_names:
            continue
        try:
            started = datetime.strptime(name, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            continue  # not ours: leave it alone
        if now - started > UNFINISHED_GRACE:
            removed.append(_join(root, name))
    for uri in removed:
        _remove_tree(uri)
    return removed


# --------------------------------------------------------------------------- restore


def verify(snapshot_uri: str) -> dict[str, Any]:
    """Check every file of a snapshot against its manifest; the manifest when all match.

    Raises:
        SnapshotCorruptError: naming the first missing or altered file.
    """
    manifest = read_manifest(snapshot_uri)
    for rel, expected in sorted(manifest["files"].items()):
        url = _join(snapshot_uri, rel)
        if not storage.exists(url):
            raise SnapshotCorruptError(f"{snapshot_uri}: {rel} is missing")
        if _sha256(storage.read_bytes(url)) != expected["sha256"]:
            raise SnapshotCorruptError(
                f"{snapshot_uri}: {rel} does not match its digest in the manifest (altered or "
                "truncated): nothing was restored"
            )
    return manifest


def state_present(settings: Settings) -> list[str]:
    """What this machine already holds that a restore would overwrite (empty: safe to restore).

    Models alone do not count: a stored model of the same tag is the same model (tags are unique
    and models immutable), so restore skips it and imports the missing ones."""
    found = []
    if registry.registry_path(settings).exists():
        found.append(f"a registry pointer in {settings.bentoml_home}")
    if storage.exists(settings.layout.monitoring_state()):
        found.append(f"monitoring state in {settings.artifacts_uri}")
    if storage.exists(settings.layout.audit_log()):
        found.append(f"an audit log in {settings.artifacts_uri}")
    return found


def restore(
    snapshot_uri: str,
    settings: Settings,
    *,
    force: bool = False,
    restore_prefect: bool = True,
    progress: Progress = _quiet,
) -> RestoreReport:
    """Rebuild this machine's state from a snapshot (verified first; nothing written if not).

    Raises:
        SnapshotCorruptError: a file is missing or altered.
        RestoreTargetNotEmptyError: the machine has state already and `force` is False.
    """
    manifest = verify(snapshot_uri)
    progress(f"verified {len(manifest['files'])} files of {snapshot_uri}")
    present = state_present(settings)
    if present and not force:
        raise RestoreTargetNotEmptyError(
            "this machine already has state (" + "; ".join(present) + "): restore rebuilds an "
            "empty machine. Point READMIT_BENTOML_HOME / READMIT_ARTIFACTS_URI at empty places, "
            "or pass --force to overwrite"
        )
    files: dict[str, Any] = manifest["files"]
    bentoml = registry.bentoml_module(settings)
    models = []
    with _scratch() as scratch:
        for rel in sorted(r for r in files if r.startswith("bentoml/models/")):
            local = scratch / rel.rsplit("/", 1)[1]
            local.write_bytes(storage.read_bytes(_join(snapshot_uri, rel)))
            name, version = (
                rel.removeprefix("bentoml/models/").removesuffix(".bentomodel").split("/")
            )
            try:
                bentoml.models.get(f"{name}:{version}")
            except bentoml.exceptions.NotFound:
                bentoml.models.import_model(str(local))
            models.append(f"{name}:{version}")
        progress(f"models: {len(models)} imported")
        pointer = f"bentoml/{registry.registry_path(settings).name}"
        if pointer in files:
            registry.restore_state_file(storage.read_bytes(_join(snapshot_uri, pointer)), settings)
        artifact_rels = sorted(r for r in files if r.startswith("artifacts/"))
        for rel in artifact_rels:
            data = storage.read_bytes(_join(snapshot_uri, rel))
            storage.write_bytes(settings.layout.path(rel.removeprefix("artifacts/")), data)
        progress(f"artifact store: {len(artifact_rels)} files")
        history = _restore_history(snapshot_uri, manifest.get("history"), settings, scratch)
        prefect_db = None
        if restore_prefect and manifest.get("prefect_database"):
            if settings.prefect_database is None:
                raise BackupError(
                    "the snapshot holds the Prefect database: set READMIT_PREFECT_DATABASE to "
                    "where it goes (the Prefect server stopped), or restore without it "
                    "(--no-prefect)"
                )
            local = scratch / "prefect-db"
            local.write_bytes(storage.read_bytes(_join(snapshot_uri, manifest["prefect_database"])))
            prefect_db = restore_prefect_database(
                settings.prefect_database.get_secret_value(), local
            )
            progress(f"Prefect database restored to {prefect_db}")
    return RestoreReport(
        snapshot=snapshot_uri,
        production=manifest.get("production"),
        models=models,
        artifact_files=len(artifact_rels),
        history=history,
        prefect_database=prefect_db,
    )


def _restore_history(
    snapshot_uri: str, rel: str | None, settings: Settings, scratch: Path
) -> str | None:
    """Put the patient-history store back into the store this machine is configured with."""
    if rel is None:
        return None
    data = storage.read_bytes(_join(snapshot_uri, rel))
    target = settings.history_store_uri
    if rel.endswith(".sqlite"):
        if not target.startswith("sqlite://"):
            raise BackupError(
                f"the snapshot's history store is SQLite, READMIT_HISTORY_STORE is {target!r}: "
                "restore into an SQLite store (same kind)"
            )
        path = Path(target.removeprefix("sqlite://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = scratch / "history.sqlite"
        tmp.write_bytes(data)
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        shutil.move(str(tmp), path)
        return str(path)
    if target.startswith("sqlite://"):
        raise BackupError(
            "the snapshot's history store is Redis: set READMIT_HISTORY_STORE=redis://... "
            "(same kind) before restoring"
        )
    _redis_load(target, data)
    return target
