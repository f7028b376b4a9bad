"""`make audit` (readmit.ops.audit_checks): findings matched without line numbers, the loud
not-audited verdict, the reviewed findings file, and the SBOM the bento ships."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from readmit import secret_sources
from readmit.ops import audit_checks as ac
from readmit.settings import PROJECT_ROOT, Settings

SKIPPED = "Dependency not found on PyPI and could not be audited: a2wsgi (1.10.10)"

SOURCE = '''\
"""A module."""
import subprocess


class Runner:
    if True:

        def go(self) -> str:
            out = subprocess.run(["git", "status"], check=True)
            return str(out)
'''


def bandit_report(line: int, test_id: str = "B603") -> dict[str, Any]:
    return {
        "results": [
            {
                "filename": "src/x.py",
                "line_number": line,
                "test_id": test_id,
                "issue_severity": "LOW",
                "issue_text": "subprocess call - check for execution of untrusted input.",
            }
        ],
        "errors": [],
    }


def line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


LISTED_B603 = {
    "test_id": "B603",
    "file": "src/x.py",
    "scope": "Runner.go",
    "code": 'out = subprocess.run(["git", "status"], check=True)',
    "reason": "fixed argv",
}


def test_a_bandit_listing_survives_unrelated_edits_but_not_a_change_of_the_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "src").mkdir()
    path = tmp_path / "src" / "x.py"
    path.write_text(SOURCE)
    found = ac.bandit_findings(bandit_report(line_of(SOURCE, "subprocess.run")), tmp_path)
    assert found[0].keys == (("B603", "src/x.py", "Runner.go", LISTED_B603["code"]),)
    assert not ac.reconcile("bandit", found, [LISTED_B603]).unlisted

    moved = SOURCE.replace('"""A module."""', '"""A module."""\n\nX = 1\nY = 2\n')
    path.write_text(moved)
    found = ac.bandit_findings(bandit_report(line_of(moved, "subprocess.run")), tmp_path)
    result = ac.reconcile("bandit", found, [LISTED_B603])
    assert not result.unlisted and not result.stale  # lines moved: still the reviewed finding

    changed = SOURCE.replace('["git", "status"]', '["git", "push"]')
    path.write_text(changed)
    found = ac.bandit_findings(bandit_report(line_of(changed, "subprocess.run")), tmp_path)
    result = ac.reconcile("bandit", found, [LISTED_B603])
    assert len(result.unlisted) == 1 and result.stale == [LISTED_B603]  # re-review needed


def test_scopes_are_qualified_names_of_the_innermost_def() -> None:
    import ast

    tree = ast.parse(SOURCE)
    assert ac.enclosing_scope(tree, line_of(SOURCE, "import subprocess")) == "<module>"
    assert ac.enclosing_scope(tree, line_of(SOURCE, "subprocess.run")) == "Runner.go"
    assert ac.enclosing_scope(tree, line_of(SOURCE, "if True")) == "Runner"


def test_secrets_are_matched_by_type_file_and_hash() -> None:
    report = {
        "results": {
            "a.yaml": [{"type": "Secret Keyword", "hashed_secret": "ab" * 20, "line_number": 3}]
        }
    }
    found = ac.secret_findings(report)
    listed = [{"type": "Secret Keyword", "file": "a.yaml", "hashed_secret": "ab" * 20}]
    assert not ac.reconcile("secret", found, [{**listed[0], "reason": "placeholder"}]).unlisted
    other_file = [{**listed[0], "file": "b.yaml", "reason": "placeholder"}]
    assert len(ac.reconcile("secret", found, other_file).unlisted) == 1


def test_the_settings_public_default_secrets_are_findings() -> None:
    found = ac.default_secret_findings()
    defaults = secret_sources.declared_defaults(Settings)
    assert {"pseudonym_key", "signing_key"} <= set(defaults)
    assert {f.keys[0] for f in found} == {
        (name, ac.sha1_hex(value)) for name, value in defaults.items()
    }


def test_no_database_answering_is_not_audited_and_said_loudly() -> None:
    scan = ac.vulnerability_scan(
        {"dependencies": [{"name": "a2wsgi", "skip_reason": SKIPPED}], "fixes": []}
    )
    assert scan.status == ac.NOT_AUDITED and scan.not_audited == 1 and not scan.findings
    text = "\n".join(ac.describe_scan(scan))
    assert "NOT AUDITED" in text and "NOT a pass" in text

    partial = ac.vulnerability_scan(
        {
            "dependencies": [
                {"name": "a2wsgi", "skip_reason": SKIPPED},
                {"name": "idna", "version": "3.10", "vulns": []},
            ]
        }
    )
    assert partial.status == ac.NOT_AUDITED  # one package unaudited is not a clean scan
    assert ac.vulnerability_scan({"dependencies": []}).status == ac.NOT_AUDITED


def test_an_advisory_is_listed_by_its_id_or_an_alias() -> None:
    scan = ac.vulnerability_scan(
        {
            "dependencies": [
                {
                    "name": "Jinja2",
                    "version": "3.1.0",
                    "vulns": [
                        {
                            "id": "PYSEC-2024-1",
                            "aliases": ["CVE-2024-0001", "GHSA-xxxx"],
                            "fix_versions": ["3.1.4"],
                        }
                    ],
                }
            ]
        }
    )
    assert scan.status == ac.AUDITED and len(scan.findings) == 1
    entry = {"package": "jinja2", "id": "CVE-2024-0001", "reason": "not reachable"}
    spelled = {**entry, "package": "Jinja2"}  # names compare normalised (PEP 503)
    assert not ac.reconcile("vulnerability", scan.findings, [spelled]).unlisted
    assert not ac.reconcile("vulnerability", scan.findings, [entry]).unlisted
    assert ac.reconcile("vulnerability", scan.findings, []).unlisted == scan.findings


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[bandit]]\ntest_id = "B101"\nfile = "a.py"\nscope = "f"\ncode = "assert x"\n', "reason"),
        ('[[bandits]]\nreason = "x"\n', "unknown section"),
        ('[bandit]\nreason = "x"\n', "array of tables"),
        (
            '[[vulnerability]]\npackage = "a"\nid = "X"\nreason = "r"\n' * 2,
            "listed twice",
        ),
    ],
)
def test_a_malformed_findings_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "findings.toml"
    path.write_text(text)
    with pytest.raises(ac.AuditError, match=message):
        ac.load_listed(path)


def test_the_reviewed_findings_file_is_valid_and_lists_the_settings_defaults() -> None:
    listed = ac.load_listed(PROJECT_ROOT / ac.FINDINGS_FILE)
    assert all(len(e["reason"]) > 20 for entries in listed.values() for e in entries)
    keys = {ac.listing_key("default_secret", e) for e in listed["default_secret"]}
    assert {f.keys[0] for f in ac.default_secret_findings()} <= keys
    for entry in listed["bandit"] + listed["secret"]:
        assert (PROJECT_ROOT / entry["file"]).is_file(), entry["file"]


def test_the_sbom_is_cyclonedx_json_of_exactly_the_locked_packages() -> None:
    sbom = json.loads((PROJECT_ROOT / ac.SBOM_FILE).read_text())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"].startswith("1.")
    assert sbom["metadata"]["component"]["name"] == "readmit"
    pins = ac.locked_pins(PROJECT_ROOT / ac.LOCK_FILE)
    assert len(pins) > 150 and pins["bentoml"] == "1.4.39"
    # A stale SBOM (lock changed, `make audit` not re-run) fails here.
    assert ac.sbom_mismatch(sbom, pins) == []
    purls = {c["purl"] for c in sbom["components"]}
    assert f"pkg:pypi/scikit-learn@{pins['scikit-learn']}" in purls


def test_the_bentofile_ships_the_sbom() -> None:
    bentofile = yaml.safe_load((PROJECT_ROOT / "bentos/readmission/bentofile.yaml").read_text())
    assert ac.SBOM_FILE.as_posix() in bentofile["include"]
    assert not any(ac.SBOM_FILE.as_posix().startswith(x) for x in bentofile["exclude"])


@pytest.mark.slow
def test_a_built_bento_contains_the_sbom(tmp_path: Path) -> None:
    from readmit.ops import deploy

    settings = Settings(bentoml_home=str(tmp_path / "bentoml"))
    tag = deploy.build_bento(None, settings)
    shipped = deploy.bento_dir(tag, settings) / "src" / ac.SBOM_FILE
    assert shipped.read_bytes() == (PROJECT_ROOT / ac.SBOM_FILE).read_bytes()


# ------------------------------------------------------------- the whole run, on fake scanners


def fake_tool(bin_dir: Path, name: str, stdout: str, code: int = 0) -> None:
    path = bin_dir / name
    path.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stdout.write({stdout!r})\nsys.exit({code})\n"
    )
    path.chmod(0o755)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A tiny project in git: one source file, a two-package lock, a findings file."""
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "src" / "x.py").write_text(SOURCE)
    (root / "requirements.lock").write_text("idna==3.10\n    # via x\nsix==1.17.0\n")
    (root / "deployments" / "audit").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def fake_scanners(tmp_path: Path, root: Path, audited: bool) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    comps = [
        {"type": "library", "name": n, "version": v, "purl": f"pkg:pypi/{n}@{v}"}
        for n, v in (("idna", "3.10"), ("six", "1.17.0"))
    ]
    sbom = {"bomFormat": "CycloneDX", "specVersion": "1.6", "components": comps}
    fake_tool(bin_dir, "cyclonedx-py", json.dumps(sbom))
    line = line_of(SOURCE, "subprocess.run")
    fake_tool(bin_dir, "bandit", json.dumps(bandit_report(line)), code=1)
    fake_tool(bin_dir, "detect-secrets", json.dumps({"results": {}}))
    deps = [
        {"name": "idna", "version": "3.10", "vulns": []}
        if audited
        else {"name": "idna", "skip_reason": SKIPPED},
        {"name": "six", "version": "1.17.0", "vulns": []},
    ]
    fake_tool(bin_dir, "pip-audit", json.dumps({"dependencies": deps, "fixes": []}))
    return bin_dir


def write_findings(root: Path, bandit: list[dict[str, Any]]) -> None:
    lines = ['reviewed = "today"']
    for entry in bandit:
        lines.append("[[bandit]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in entry.items()]
    for finding in ac.default_secret_findings():  # every public default, listed
        default = finding.keys[0]
        lines += [
            "[[default_secret]]",
            f'setting = "{default[0]}"',
            f'hashed_secret = "{default[1]}"',
            'reason = "public local default, refused in production"',
        ]
    (root / ac.FINDINGS_FILE).write_text("\n".join(lines) + "\n")


def audit(root: Path, bin_dir: Path, *extra: str) -> tuple[int, str]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "readmit.ops.audit_checks",
            "--root",
            str(root),
            "--tools",
            str(bin_dir),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout


def test_the_run_fails_on_an_unlisted_finding_and_ends_with_one_json_line(
    tmp_path: Path, project: Path
) -> None:
    bin_dir = fake_scanners(tmp_path, project, audited=False)
    write_findings(project, [])
    code, out = audit(project, bin_dir)
    last = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and last["audit_unlisted_findings"] == 1 and last["exit_code"] == 1
    assert "NEW   src/x.py" in out and "B603" in out
    assert last["vulnerability_scan"] == "not_audited" and "NOT AUDITED" in out
    assert last["sbom_matches_lock"] and last["sbom_components"] == 2
    assert (project / ac.SBOM_FILE).is_file()

    write_findings(project, [LISTED_B603])
    code, out = audit(project, bin_dir)
    last = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and last["audit_unlisted_findings"] == 0, out
    assert last["vulnerability_scan"] == "not_audited"  # green here, and still never a pass
    code, out = audit(project, bin_dir, "--require-vulnerability-scan")
    assert code == 1 and "FAILED" in out


def test_where_every_package_answers_the_scan_is_audited(tmp_path: Path, project: Path) -> None:
    bin_dir = fake_scanners(tmp_path, project, audited=True)
    write_findings(project, [LISTED_B603])
    code, out = audit(project, bin_dir, "--require-vulnerability-scan")
    last = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and last["vulnerability_scan"] == "audited" and last["packages_audited"] == 2


def test_a_missing_scanner_is_an_error_not_a_pass(tmp_path: Path, project: Path) -> None:
    write_findings(project, [])
    (tmp_path / "empty").mkdir()
    code, out = audit(project, tmp_path / "empty")
    assert code == 2 and json.loads(out.strip().splitlines()[-1])["exit_code"] == 2


# ------------------------------------------------------------------ the real scanners, if here

TOOLS = PROJECT_ROOT / ".venv" / "audit-tools" / "bin"


@pytest.mark.skipif(not (TOOLS / "bandit").exists(), reason="scanners not installed: make audit")
def test_real_bandit_and_detect_secrets_findings_are_keyed(tmp_path: Path, project: Path) -> None:
    (project / "src" / "y.py").write_text(
        textwrap.dedent(
            """\
            def check(x):
                assert x is not None
                return x
            """
        )
    )
    fake_key = "AKIA" + "IOSFODNN7EXAMPLF"  # split: this test file must not carry one
    (project / "conf.yaml").write_text(f'aws_key: "{fake_key}"\n')
    (project / "flows").mkdir()
    (project / "bentos").mkdir()
    found = ac.bandit_findings(ac.run_bandit(TOOLS, project), project)
    keys = {f.keys[0] for f in found}
    assert ("B101", "src/y.py", "check", "assert x is not None") in keys
    assert ("B404", "src/x.py", "<module>", "import subprocess") in keys
    report, n_files = ac.run_detect_secrets(TOOLS, project)
    assert n_files >= 3
    assert any(f.keys[0][0] == "AWS Access Key" for f in ac.secret_findings(report))
