"""Signed models: a digest manifest of a model's files, signed with Ed25519 when the model is
registered and verified before anything of it is unpickled (`joblib.load` is pickle: a model
file can run any code, so verifying after loading would be useless).

**What is signed.** A model version's folder in the BentoML store holds `model.joblib` (the
fitted pipeline, a pickle), `lineage.json` (its lineage: threshold, metrics, data digests, what
the service, the gate and `readmit models show` read), BentoML's `model.yaml`, and
`signature.json`. The manifest maps the path (relative to the folder) of every file to its
sha256, except `model.yaml` and `signature.json` (and their write temporaries): the registry
rewrites `model.yaml`'s `stage` label on every promotion, archive and rollback
(`registry._mirror_labels`), so a signature over it would break on every stage change; and
nothing readmit trusts comes from it (metadata is read from lineage.json, stages from the
registry file; BentoML parses it as YAML, never as a pickle). Any other file is in the
manifest, so one added later (a `custom_objects.pkl`, which BentoML would unpickle) or removed
is refused like a changed one. The manifest names the model's tag too: a signed model copied
under another tag is refused.

**The digest.** The sha256 of the manifest's canonical JSON names exactly what was signed: the
registry records it when a model is registered, promoted, rolled back or imported, the audit
log with each promotion, `readmit models show` and the service's `/model` show it; an approval
names it.

**Keys.** The private key is derived from a secret string, `READMIT_SIGNING_KEY` (or a Prefect
Secret block, `READMIT_SIGNING_KEY_BLOCK`): its 32-byte Ed25519 seed is sha256(secret), so any
strong string (`openssl rand -hex 32`) is a key. Production refuses the public development
default, like the pseudonym key's (`readmit.secret_sources`). A component that only verifies
(the service, a scoring job) can hold the public key alone, `READMIT_VERIFY_KEY` (64 hex
characters or base64; `readmit keys public` prints it); without it the public key is derived
from the signing key. The signature file names its key by an id (the first 16 hex characters
of sha256(public key)); verification never trusts a key the file brings, only the configured
one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

if TYPE_CHECKING:
    from readmit.settings import Settings

SIGNATURE_FILE = "signature.json"
ALGORITHM = "ed25519"
SIGNATURE_FORMAT = "readmit-model-signature/1"
MANIFEST_FORMAT = "readmit-model-manifest/1"
UNSIGNED_FILES = frozenset(
    {"model.yaml", "model.yaml.tmp", SIGNATURE_FILE, SIGNATURE_FILE + ".tmp"}
)
"""Top-level files of a model folder left out of the manifest (see the module docstring)."""

Problem = Literal["unsigned", "altered", "key", "tag"]


class SignatureError(Exception):
    """A model folder's signature does not hold. `problem` says which way: `unsigned` (no
    signature), `altered` (its files or its signature file are not what was signed), `key`
    (signed with a key this component does not trust), `tag` (signed as another model)."""

    def __init__(self, problem: Problem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class Verified:
    """A model folder whose signature holds: its digest, the key that signed it, and the exact
    bytes that were checked (load these, not the files again)."""

    digest: str
    key_id: str
    contents: dict[str, bytes]


# --------------------------------------------------------------------------- keys


def private_key(secret: bytes) -> Ed25519PrivateKey:
    """The Ed25519 key of a secret string: its seed is sha256(secret)."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(secret).digest())


def public_bytes(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_key_hex(secret: bytes) -> str:
    """The public key of a secret string, as READMIT_VERIFY_KEY takes it (64 hex characters)."""
    return public_bytes(private_key(secret).public_key()).hex()


def key_id(key: Ed25519PublicKey) -> str:
    """A short name of a public key: the first 16 hex characters of its sha256."""
    return hashlib.sha256(public_bytes(key)).hexdigest()[:16]


def parse_public_key(text: str) -> str:
    """An Ed25519 public key given as 64 hex characters or base64 (44 characters), as hex.

    Raises:
        ValueError: it is neither, or not 32 bytes long.
    """
    text = text.strip()
    raw: bytes | None = None
    try:
        raw = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raw = None
    if raw is None or len(raw) != 32:
        raise ValueError(
            "READMIT_VERIFY_KEY must be an Ed25519 public key: 64 hex characters or 44 base64 "
            "(`readmit keys public` prints it for the signing key)"
        )
    return raw.hex()


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The key models are signed with (READMIT_SIGNING_KEY or its Prefect Secret block).

    Raises:
        SecretConfigError: the key is refused (production, public default), or it is not the
            private half of READMIT_VERIFY_KEY (models it signed would be refused).
    """
    from readmit.secret_sources import SecretConfigError

    key = private_key(settings.signing_key_bytes)
    if settings.verify_key and public_bytes(key.public_key()).hex() != settings.verify_key:
        raise SecretConfigError(
            "READMIT_SIGNING_KEY is not the private half of READMIT_VERIFY_KEY: models signed "
            "here would be refused. Set READMIT_VERIFY_KEY to what `readmit keys public` prints, "
            "or unset it."
        )
    return key


def trusted_key(settings: Settings) -> Ed25519PublicKey:
    """The public key models must be signed with: READMIT_VERIFY_KEY, else the signing key's."""
    if settings.verify_key:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(settings.verify_key))
    return private_key(settings.signing_key_bytes).public_key()


# --------------------------------------------------------------------------- manifest


def read_files(folder: Path) -> dict[str, bytes]:
    """Every file of a model folder that the manifest covers, by relative POSIX path (a
    symbolic link counts as a file whose content is its target, so adding one is seen)."""
    out: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if rel in UNSIGNED_FILES:
            continue
        if path.is_symlink():
            out[rel] = b"symlink:" + os.readlink(path).encode()
        elif not path.is_dir():
            out[rel] = path.read_bytes()
    return out


def manifest(tag: str, contents: dict[str, bytes]) -> dict[str, Any]:
    """The manifest of a model: its tag and the sha256 of each of its files."""
    files = {rel: hashlib.sha256(data).hexdigest() for rel, data in sorted(contents.items())}
    return {"format": MANIFEST_FORMAT, "tag": tag, "files": files}


def canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes that are signed and digested: sorted keys, no spaces, ASCII."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def digest(manifest: dict[str, Any]) -> str:
    """The manifest's sha256: what an approval, a promotion and the audit log name."""
    return hashlib.sha256(canonical(manifest)).hexdigest()


# --------------------------------------------------------------------------- sign and verify


def sign_folder(folder: Path, tag: str, key: Ed25519PrivateKey) -> str:
    """Sign every file of a model folder (see the module docstring): writes `signature.json`
    into it (atomically) and returns the manifest's digest."""
    signed = manifest(tag, read_files(folder))
    record = {
        "format": SIGNATURE_FORMAT,
        "algorithm": ALGORITHM,
        "key_id": key_id(key.public_key()),
        "manifest": signed,
        "manifest_sha256": digest(signed),
        "signature": base64.b64encode(key.sign(canonical(signed))).decode(),
    }
    tmp = folder / (SIGNATURE_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, folder / SIGNATURE_FILE)
    return digest(signed)


def _read_signature(folder: Path, tag: str) -> tuple[dict[str, Any], bytes, str]:
    """(manifest, signature, key id) of a folder's signature file."""
    path = folder / SIGNATURE_FILE
    if not path.is_file():
        raise SignatureError(
            "unsigned",
            f"model {tag} is not signed (no {SIGNATURE_FILE}; models saved before signing "
            f"are unsigned): if you trust its files, sign it with `readmit sign {tag}`, else "
            "retrain (`readmit train`)",
        )
    try:
        record = json.loads(path.read_bytes())
        if record["algorithm"] != ALGORITHM:
            raise ValueError(f"algorithm {record['algorithm']!r}")
        signature = base64.b64decode(record["signature"], validate=True)
        return dict(record["manifest"]), signature, str(record["key_id"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise SignatureError(
            "altered", f"model {tag}: its {SIGNATURE_FILE} is unreadable ({exc}); {_DO_NOT_USE}"
        ) from exc


_DO_NOT_USE = "do not use it: restore it from a backup (`readmit restore`) or retrain"


def _differences(signed: dict[str, str], contents: dict[str, bytes]) -> list[str]:
    """What differs between the signed manifest's files and the folder's, file by file."""
    found = manifest("", contents)["files"]
    changed = [
        f"{rel} changed" for rel in sorted(signed) if rel in found and found[rel] != signed[rel]
    ]
    removed = [f"{rel} removed" for rel in sorted(set(signed) - set(found))]
    added = [f"{rel} added" for rel in sorted(set(found) - set(signed))]
    return changed + removed + added


def verify_folder(folder: Path, tag: str, key: Ed25519PublicKey) -> Verified:
    """Check a model folder against its signature, with the trusted public key `key`.

    Returns the digest and the exact bytes checked: unpickle those, not the files again.

    Raises:
        SignatureError: unsigned, signed with another key, signed as another tag, or its files
            (or its signature file) are not what was signed; the message names the model, the
            files that differ, and what to do.
    """
    signed, signature, claimed = _read_signature(folder, tag)
    trusted = key_id(key)
    if claimed != trusted:
        raise SignatureError(
            "key",
            f"model {tag} was signed with key {claimed}, not with the key this component "
            f"trusts ({trusted}: READMIT_VERIFY_KEY, else the public half of "
            "READMIT_SIGNING_KEY): give this component the public key of the key that signs "
            "models (`readmit keys public` where READMIT_SIGNING_KEY is set), or, if you trust "
            f"its files, re-sign it with `readmit sign --force {tag}`",
        )
    try:
        key.verify(signature, canonical(signed))
    except InvalidSignature:
        raise SignatureError(
            "altered",
            f"model {tag}: its signature does not match its manifest ({SIGNATURE_FILE} was "
            f"altered); {_DO_NOT_USE}",
        ) from None
    if signed.get("tag") != tag:
        raise SignatureError(
            "tag", f"model {tag} carries the signature of {signed.get('tag')}; {_DO_NOT_USE}"
        )
    contents = read_files(folder)
    differences = _differences(dict(signed.get("files") or {}), contents)
    if differences:
        raise SignatureError(
            "altered",
            f"model {tag}: its files are not the ones that were signed "
            f"({', '.join(differences)}); {_DO_NOT_USE}",
        )
    return Verified(digest(signed), trusted, contents)


def median_ms(check: Callable[[], object], repeats: int = 20) -> float:
    """Median wall time of `check()` in milliseconds, over `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        check()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
