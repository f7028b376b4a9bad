"""The supply-chain checks of `make audit`, against one reviewed findings file.

Four checks, each a pinned tool from `deployments/audit/tools.lock` (own venv) or our own code:

- **SBOM**: `cyclonedx-py requirements` writes a CycloneDX JSON SBOM of `requirements.lock` (what
  the image installs) to `deployments/audit/sbom.cdx.json`, reproducible (no timestamp, no serial
  number); the bento ships it (`bentofile.yaml` include). Checked: its components are exactly the
  locked pins.
- **code**: `bandit` on src/, flows/ and bentos/, every severity, `# nosec` ignored (the findings
  file is the one place a finding is accepted). A finding is matched by test id, file, the
  enclosing function (`scope`) and the flagged line's text, never by line number.
- **secrets**: `detect-secrets` on the files git would commit (tracked, plus untracked files not
  ignored), matched by type, file and the secret's sha1 (the tool's `hashed_secret`); and the
  public defaults the settings declare for secret fields (`readmit.secret_sources`), which
  production mode refuses, matched by setting and sha1.
- **vulnerabilities**: `pip-audit` on the lock (`--no-deps --disable-pip`), matched by package
  and advisory id (or alias). Where no database answers, pip-audit reports every package as
  "could not be audited" and exits 0: here that is `not_audited`, said loudly and never a pass.

A finding that no entry of the findings file matches is *unlisted*: the run fails. An entry
that matches nothing is *stale*: reported, to be removed. The last printed line is one JSON
object (`audit_unlisted_findings`, `vulnerability_scan`, counts per tool, runtime).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from readmit.settings import PROJECT_ROOT

FINDINGS_FILE = Path("deployments/audit/findings.toml")
SBOM_FILE = Path("deployments/audit/sbom.cdx.json")
LOCK_FILE = Path("requirements.lock")
BANDIT_TARGETS = ("src", "flows", "bentos")
AUDITED = "audited"
ALLOWLIST_FILTER = "detect_secrets.filters.allowlist.is_line_allowlisted"
NOT_AUDITED = "not_audited"

LISTING_KEYS: dict[str, tuple[str, ...]] = {
    "bandit": ("test_id", "file", "scope", "code"),
    "secret": ("type", "file", "hashed_secret"),
    "default_secret": ("setting", "hashed_secret"),
    "vulnerability": ("package", "id"),
}
"""What an entry of each section of the findings file must name to match a finding."""


class AuditError(RuntimeError):
    """A tool failed, or the findings file is malformed."""


@dataclass(frozen=True)
class Finding:
    """One thing a check found. `keys`: the listing keys that match it (aliases give several)."""

    kind: str
    keys: tuple[tuple[str, ...], ...]
    where: str
    text: str


@dataclass
class CheckResult:
    """What one check found and how it compares with the findings file."""

    kind: str
    findings: list[Finding]
    unlisted: list[Finding] = field(default_factory=list)
    stale: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


# ------------------------------------------------------------------------- the findings file


def load_listed(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The reviewed findings file: per section, entries with their keys and a reason.

    Raises:
        AuditError: an unknown section, an entry without its keys or its reason, a duplicate.
    """
    doc = tomllib.loads(path.read_text())
    listed: dict[str, list[dict[str, Any]]] = {kind: [] for kind in LISTING_KEYS}
    for kind, entries in doc.items():
        if kind not in LISTING_KEYS:
            if isinstance(entries, list | dict):
                raise AuditError(f"{path}: unknown section [[{kind}]]")
            continue  # top-level notes (e.g. `reviewed`)
        if not isinstance(entries, list):
            raise AuditError(f"{path}: [{kind}] must be an array of tables, [[{kind}]]")
        seen: set[tuple[str, ...]] = set()
        for i, entry in enumerate(entries):
            missing = [k for k in (*LISTING_KEYS[kind], "reason") if not entry.get(k)]
            if missing:
                raise AuditError(f"{path}: [[{kind}]] #{i + 1} lacks {', '.join(missing)}")
            key = listing_key(kind, entry)
            if key in seen:
                raise AuditError(f"{path}: [[{kind}]] #{i + 1} is listed twice: {key}")
            seen.add(key)
            listed[kind].append(entry)
    return listed


def listing_key(kind: str, entry: dict[str, Any]) -> tuple[str, ...]:
    """The key of a findings-file entry, comparable with `Finding.keys`."""
    key = tuple(str(entry[k]) for k in LISTING_KEYS[kind])
    return (canonical(key[0]), *key[1:]) if kind == "vulnerability" else key


def reconcile(kind: str, findings: list[Finding], listed: list[dict[str, Any]]) -> CheckResult:
    """Split findings into listed and unlisted, and find the entries that matched nothing."""
    entries = {listing_key(kind, e): e for e in listed}
    used: set[tuple[str, ...]] = set()
    unlisted: list[Finding] = []
    for finding in findings:
        hits = [key for key in finding.keys if key in entries]
        used.update(hits)
        if not hits:
            unlisted.append(finding)
    stale = [e for key, e in entries.items() if key not in used]
    return CheckResult(kind, findings, unlisted, stale)


# ------------------------------------------------------------------------------------ bandit


def normalised(line: str) -> str:
    """A source line with its whitespace collapsed: the stable text of a finding."""
    return " ".join(line.split())


SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def enclosing_scope(tree: ast.Module, line: int) -> str:
    """Qualified name of the innermost function or class around `line` (`<module>` if none)."""
    path: list[str] = []
    node: ast.AST = tree
    while True:
        inner = next(
            (n for n in _scopes_in(node) if n.lineno <= line <= (n.end_lineno or n.lineno)), None
        )
        if inner is None:
            return ".".join(path) or "<module>"
        path.append(inner.name)
        node = inner


def _scopes_in(node: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef]:
    """Functions and classes defined in `node`'s own body (inside any block, not a nested def)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, SCOPES):
            yield child
        else:
            yield from _scopes_in(child)


def bandit_findings(report: dict[str, Any], root: Path) -> list[Finding]:
    """Findings of a `bandit -f json` report, keyed by test id, file, scope and line text."""
    sources: dict[str, tuple[list[str], ast.Module]] = {}
    out: list[Finding] = []
    for r in report.get("results", []):
        path = Path(r["filename"])
        rel = (path if path.is_absolute() else root / path).resolve().relative_to(root.resolve())
        name = rel.as_posix()
        if name not in sources:
            text = (root / rel).read_text()
            sources[name] = (text.splitlines(), ast.parse(text))
        lines, tree = sources[name]
        line = int(r["line_number"])
        code = normalised(lines[line - 1]) if 0 < line <= len(lines) else ""
        scope = enclosing_scope(tree, line)
        out.append(
            Finding(
                kind="bandit",
                keys=((r["test_id"], name, scope, code),),
                where=f"{name}:{line} ({scope})",
                text=f"{r['test_id']} {r['issue_severity'].lower()}: {r['issue_text']} `{code}`",
            )
        )
    return out


# ----------------------------------------------------------------------------------- secrets


def sha1_hex(value: str) -> str:
    """sha1 of a secret, as detect-secrets' `hashed_secret` spells it."""
    return hashlib.sha1(value.encode(), usedforsecurity=False).hexdigest()


def secret_findings(report: dict[str, Any]) -> list[Finding]:
    """Findings of a `detect-secrets scan` report, keyed by type, file and hashed secret."""
    out: list[Finding] = []
    for name, results in sorted(report.get("results", {}).items()):
        for r in results:
            out.append(
                Finding(
                    kind="secret",
                    keys=((r["type"], name, r["hashed_secret"]),),
                    where=f"{name}:{r['line_number']}",
                    text=f"{r['type']} (sha1 {r['hashed_secret']})",
                )
            )
    return out


def default_secret_findings() -> list[Finding]:
    """The public defaults of the settings' secret fields (refused in production)."""
    from readmit import secret_sources
    from readmit.settings import Settings

    out: list[Finding] = []
    for name, value in secret_sources.declared_defaults(Settings).items():
        env = secret_sources.env_names(Settings, name)[0]
        out.append(
            Finding(
                kind="default_secret",
                keys=((name, sha1_hex(value)),),
                where=f"readmit.settings.Settings.{name}",
                text=f"public default of {env} (sha1 {sha1_hex(value)})",
            )
        )
    return out


def commit_candidates(root: Path, git: str) -> list[str]:
    """Files git would commit: tracked, plus untracked ones that .gitignore does not hide."""
    proc = run_tool([git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], root)
    names = sorted({n for n in proc.stdout.split("\0") if n})
    return [n for n in names if (root / n).is_file()]


# --------------------------------------------------------------------------- vulnerabilities


@dataclass
class VulnerabilityScan:
    """pip-audit's answer: findings, and how many locked packages a database answered for."""

    findings: list[Finding]
    audited: int
    not_audited: int
    skip_reasons: list[str]

    @property
    def status(self) -> str:
        """`audited` only when every locked package was audited: anything less is no pass."""
        return AUDITED if self.audited and not self.not_audited else NOT_AUDITED


def vulnerability_scan(report: dict[str, Any]) -> VulnerabilityScan:
    """Read a `pip-audit -f json` report: advisories per package, audited or skipped."""
    findings: list[Finding] = []
    audited = 0
    skipped: list[str] = []
    for dep in report.get("dependencies", []):
        if dep.get("skip_reason"):
            skipped.append(str(dep["skip_reason"]))
            continue
        audited += 1
        for vuln in dep.get("vulns", []):
            ids = [vuln["id"], *vuln.get("aliases", [])]
            fixes = ", ".join(vuln.get("fix_versions", [])) or "none"
            findings.append(
                Finding(
                    kind="vulnerability",
                    keys=tuple((canonical(dep["name"]), i) for i in ids),
                    where=f"{dep['name']}=={dep.get('version', '?')}",
                    text=f"{' / '.join(ids)} (fixed in: {fixes})",
                )
            )
    return VulnerabilityScan(findings, audited, len(skipped), skipped)


# ------------------------------------------------------------------------------------- SBOM


def locked_pins(lock: Path) -> dict[str, str]:
    """`name==version` pins of a uv/pip-compile lock, names normalised (PEP 503)."""
    pins: dict[str, str] = {}
    for raw in lock.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+).*", line)
        if match:
            pins[canonical(match.group(1))] = match.group(3)
    return pins


def canonical(name: str) -> str:
    """PEP 503 normalised package name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def sbom_components(sbom: dict[str, Any]) -> dict[str, str]:
    """Library components of a CycloneDX JSON SBOM: normalised name -> version.

    Raises:
        AuditError: the document is not a CycloneDX BOM.
    """
    if sbom.get("bomFormat") != "CycloneDX" or not str(sbom.get("specVersion", "")):
        raise AuditError("not a CycloneDX JSON document (bomFormat/specVersion)")
    return {
        canonical(c["name"]): str(c.get("version", ""))
        for c in sbom.get("components", [])
        if c.get("type") == "library"
    }


def sbom_mismatch(sbom: dict[str, Any], pins: dict[str, str]) -> list[str]:
    """How an SBOM differs from the lock's pins (empty: it lists exactly the locked packages)."""
    comps = sbom_components(sbom)
    out = [f"missing {n}=={v}" for n, v in sorted(pins.items()) if comps.get(n) != v]
    out += [f"extra {n}=={v}" for n, v in sorted(comps.items()) if pins.get(n) != v]
    return out


# ------------------------------------------------------------------------------- the tools


def run_tool(
    argv: Sequence[str], cwd: Path, ok_codes: tuple[int, ...] = (0,), timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run one scanner (an absolute path from our pinned venv, fixed arguments, no shell).

    Raises:
        AuditError: it exited with a code outside `ok_codes` (its stderr tail is in the message).
    """
    proc = subprocess.run(
        list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode not in ok_codes:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
        raise AuditError(f"{Path(argv[0]).name} exited {proc.returncode}:\n{tail}")
    return proc


def tool(tools: Path, name: str) -> str:
    """Absolute path of a scanner in the audit venv.

    Raises:
        AuditError: it is not installed there (`make audit` installs it).
    """
    path = tools / name
    if not path.exists():
        raise AuditError(f"{path} not found: run `make audit` (it installs the scanners)")
    return str(path.resolve())


def write_sbom(tools: Path, root: Path, out: Path) -> tuple[bool, dict[str, Any]]:
    """Generate the SBOM of the lock; rewrite `out` only if it changed. Returns (changed, doc)."""
    proc = run_tool(
        [
            tool(tools, "cyclonedx-py"),
            "requirements",
            "--pyproject",
            "pyproject.toml",
            "--output-reproducible",
            "--of",
            "JSON",
            "-o",
            "-",
            str(LOCK_FILE),
        ],
        root,
    )
    text = proc.stdout if proc.stdout.endswith("\n") else proc.stdout + "\n"
    target = root / out
    changed = not target.exists() or target.read_text() != text
    if changed:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return changed, json.loads(text)


def run_bandit(tools: Path, root: Path) -> dict[str, Any]:
    """bandit's JSON report on the code (exit 1 means findings, not failure)."""
    proc = run_tool(
        [tool(tools, "bandit"), "-r", *BANDIT_TARGETS, "-f", "json", "-q", "--ignore-nosec"],
        root,
        ok_codes=(0, 1),
    )
    report: dict[str, Any] = json.loads(proc.stdout)
    if report.get("errors"):
        raise AuditError(f"bandit could not scan: {report['errors']}")
    return report


def run_detect_secrets(
    tools: Path, root: Path, findings_file: Path = FINDINGS_FILE
) -> tuple[dict[str, Any], int]:
    """detect-secrets' JSON report on the files git would commit, and how many it read.

    Inline `pragma: allowlist secret` comments are ignored (the findings file is the one place
    a literal is accepted); the findings file itself is not scanned: it holds the sha1 of each
    accepted literal, which the scanner would take for new secrets.
    """
    git = shutil.which("git")
    if git is None:
        raise AuditError("git not found: the secrets check scans the files git would commit")
    files = [f for f in commit_candidates(root, git) if f != findings_file.as_posix()]
    argv = [tool(tools, "detect-secrets"), "scan", "--disable-filter", ALLOWLIST_FILTER, *files]
    proc = run_tool(argv, root)
    return json.loads(proc.stdout), len(files)


def run_pip_audit(tools: Path, root: Path, service: str) -> dict[str, Any]:
    """pip-audit's JSON report on the lock (exit 1 means vulnerabilities found)."""
    proc = run_tool(
        [
            tool(tools, "pip-audit"),
            "-r",
            str(LOCK_FILE),
            "--no-deps",
            "--disable-pip",
            "-s",
            service,
            "-f",
            "json",
            "--progress-spinner",
            "off",
        ],
        root,
        ok_codes=(0, 1),
    )
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


# ---------------------------------------------------------------------------------- the run


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """`fn()` and its wall time."""
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


@dataclass
class Audit:
    """Everything one run found."""

    results: list[CheckResult]
    scan: VulnerabilityScan
    sbom: dict[str, Any]
    sbom_path: Path
    sbom_changed: bool
    sbom_mismatch: list[str]
    files_scanned: int
    seconds: float = 0.0

    @property
    def unlisted(self) -> int:
        """Findings no entry of the findings file matches."""
        return sum(len(r.unlisted) for r in self.results)

    @property
    def stale(self) -> int:
        """Entries of the findings file that matched nothing."""
        return sum(len(r.stale) for r in self.results)


def run_checks(
    root: Path,
    tools: Path,
    listed: dict[str, list[dict[str, Any]]],
    service: str,
    sbom_rel: Path,
    findings_rel: Path = FINDINGS_FILE,
) -> Audit:
    """Run the four checks (pip-audit, network-bound, beside the others) and reconcile them."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pip_audit = pool.submit(timed, lambda: run_pip_audit(tools, root, service))
        (sbom_changed, sbom), _ = timed(lambda: write_sbom(tools, root, sbom_rel))
        bandit_report, bandit_s = timed(lambda: run_bandit(tools, root))
        (secrets_report, n_files), secrets_s = timed(
            lambda: run_detect_secrets(tools, root, findings_rel)
        )
        vuln_report, vuln_s = pip_audit.result()
    scan = vulnerability_scan(vuln_report)
    found = {
        "bandit": (bandit_findings(bandit_report, root), bandit_s),
        "secret": (secret_findings(secrets_report), secrets_s),
        "default_secret": (default_secret_findings(), 0.0),
        "vulnerability": (scan.findings, vuln_s),
    }
    results = []
    for kind, (findings, seconds) in found.items():
        results.append(reconcile(kind, findings, listed[kind]))
        results[-1].seconds = seconds
    mismatch = sbom_mismatch(sbom, locked_pins(root / LOCK_FILE))
    return Audit(results, scan, sbom, root / sbom_rel, sbom_changed, mismatch, n_files)


LABELS = dict(
    zip(
        LISTING_KEYS,
        (
            "bandit findings on " + ", ".join(f"{t}/" for t in BANDIT_TARGETS),
            "secret-like literals in the {files} files git would commit",
            "public default secrets declared by the settings",
            "vulnerabilities in the {audited} audited packages of the lock (pip-audit)",
        ),
        strict=True,
    )
)
"""What each check looked at, for the summary (built by position: no secret-named literals)."""


def describe_scan(scan: VulnerabilityScan) -> list[str]:
    """The summary lines of the vulnerability scan: loud when not everything was audited."""
    total = scan.audited + scan.not_audited
    if scan.status == AUDITED:
        return [f"  vulnerabilities  AUDITED: all {total} locked packages answered"]
    reason = scan.skip_reasons[0] if scan.skip_reasons else "no package in the report"
    return [
        f"  vulnerabilities  *** NOT AUDITED *** {scan.audited} of {total} locked packages "
        f"audited, {scan.not_audited} could not be (e.g. {reason!r})",
        "                   no vulnerability database answered: this is NOT a pass. Run "
        "`make audit AUDIT_ARGS=--require-vulnerability-scan` where one does.",
    ]


def summary_lines(audit: Audit, findings_file: Path, failed: bool) -> list[str]:
    """The human summary of a run."""
    sbom = audit.sbom
    lock_note = (
        f"DIFFERS FROM {LOCK_FILE}: {audit.sbom_mismatch[:5]}"
        if audit.sbom_mismatch
        else f"exactly the pins of {LOCK_FILE}"
    )
    lines = [
        f"readmit audit against {findings_file}",
        f"  sbom             {audit.sbom_path.name}: CycloneDX {sbom['specVersion']}, "
        f"{len(sbom_components(sbom))} components, {audit.sbom_path.stat().st_size:,} bytes, "
        f"{'rewritten (commit it)' if audit.sbom_changed else 'unchanged'}; {lock_note}",
    ]
    for res in audit.results:
        label = LABELS[res.kind].format(files=audit.files_scanned, audited=audit.scan.audited)
        lines.append(
            f"  {res.kind:<16} {len(res.findings)} {label}: {len(res.findings) - len(res.unlisted)}"
            f" listed, {len(res.unlisted)} NEW, {len(res.stale)} stale [{res.seconds:.1f} s]"
        )
        lines += [f"      NEW   {f.where}: {f.text}" for f in res.unlisted]
        lines += [f"      STALE [[{res.kind}]] {listing_key(res.kind, e)}" for e in res.stale]
    lines += describe_scan(audit.scan)
    verdict = "FAILED" if failed else "no unlisted finding"
    if audit.scan.status != AUDITED:
        verdict += "; vulnerabilities NOT AUDITED (not a pass)"
    lines.append(
        f"  result           {verdict}: {audit.unlisted} unlisted finding(s), {audit.stale} "
        f"stale listing(s), vulnerability scan {audit.scan.status}; {audit.seconds:.1f} s"
    )
    return lines


def summary_json(audit: Audit, root: Path, failed: bool) -> dict[str, Any]:
    """The machine summary of a run (the last printed line)."""
    by_kind = {r.kind: len(r.findings) for r in audit.results}
    return {
        "audit_unlisted_findings": audit.unlisted,
        "vulnerability_scan": audit.scan.status,
        "bandit_findings": by_kind["bandit"],
        "secret_findings": by_kind["secret"],
        "default_secrets": by_kind["default_secret"],
        "vulnerabilities": by_kind["vulnerability"],
        "packages_audited": audit.scan.audited,
        "packages_not_audited": audit.scan.not_audited,
        "stale_listings": audit.stale,
        "sbom_path": audit.sbom_path.relative_to(root).as_posix(),
        "sbom_components": len(sbom_components(audit.sbom)),
        "sbom_bytes": audit.sbom_path.stat().st_size,
        "sbom_matches_lock": not audit.sbom_mismatch,
        "seconds": round(audit.seconds, 1),
        "exit_code": 1 if failed else 0,
    }


def run_audit(args: argparse.Namespace) -> int:
    """Run every check, print the summary and the JSON line; 0 only when nothing is unlisted
    and the SBOM is the lock's (and, if required, every package was audited)."""
    root, tools = Path(args.root).resolve(), Path(args.tools)
    started = time.perf_counter()
    listed = load_listed(root / args.findings)
    audit = run_checks(root, tools, listed, args.service, args.sbom, args.findings)
    audit.seconds = time.perf_counter() - started
    unscanned = args.require_vulnerability_scan and audit.scan.status != AUDITED
    failed = bool(audit.unlisted or audit.sbom_mismatch or unscanned)
    print("\n".join(summary_lines(audit, args.findings, failed)))
    print(json.dumps(summary_json(audit, root, failed)), flush=True)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """Arguments of `python -m readmit.ops.audit_checks` (what `make audit` runs)."""
    parser = argparse.ArgumentParser(prog="readmit-audit", description=__doc__.split("\n")[0])
    parser.add_argument("--tools", default=str(Path(sys.prefix) / "audit-tools" / "bin"))
    parser.add_argument("--root", default=str(PROJECT_ROOT))
    parser.add_argument("--findings", type=Path, default=FINDINGS_FILE)
    parser.add_argument("--sbom", type=Path, default=SBOM_FILE)
    parser.add_argument("--service", default="pypi", choices=("pypi", "osv"))
    parser.add_argument(
        "--require-vulnerability-scan",
        action="store_true",
        help="fail unless every locked package was audited (CI where a database answers)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `make audit`."""
    args = build_parser().parse_args(argv)
    try:
        return run_audit(args)
    except AuditError as exc:
        print(f"audit error: {exc}", file=sys.stderr)
        error = str(exc).splitlines()[0]
        verdict = {"audit_unlisted_findings": None, "vulnerability_scan": NOT_AUDITED}
        print(json.dumps({**verdict, "error": error, "exit_code": 2}))
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
