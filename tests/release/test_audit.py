"""The supply-chain audit: real pip-audit, strict, on the hash-pinned serving group.

The OSV service (osv.dev) cannot be reached from here; these tests serve OSV's query API on
loopback with the published advisories of the packages MLEM pins, so the command, its strict
mode and the ignore list are exercised for real. On GitHub `make audit` queries osv.dev itself.
"""

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gitml.config import PROJ_ROOT
from gitml.release.audit import IGNORE_FILE, audit_command, read_ignores

# Published advisories of the pinned serving packages (osv.dev records under OSV's own id,
# trimmed to what pip-audit reads), recorded when .pip-audit-ignore was last reviewed: the
# ignore file may name one by an alias (CVE-2025-54121 is published as GHSA-2c2j-9gv5-cj73).
ADVISORIES = {
    "fastapi": [("PYSEC-2024-38", ["CVE-2024-24762", "GHSA-qf9m-vfgh-m389"], "0.109.1")],
    "starlette": [
        ("GHSA-f96h-pmfr-66vw", ["CVE-2024-47874"], "0.40.0"),
        ("GHSA-2c2j-9gv5-cj73", ["CVE-2025-54121"], "0.47.2"),
        ("GHSA-86qp-5c8j-p5mr", ["CVE-2026-48710", "PYSEC-2026-161"], "1.0.1"),
        ("PYSEC-2026-248", [], None),  # recorded without its aliases and fix
    ],
}


def osv_record(
    package: str, vuln_id: str, aliases: list[str], fixed: str | None
) -> dict[str, object]:
    events: list[dict[str, str]] = [{"introduced": "0"}, *([{"fixed": fixed}] if fixed else [])]
    return {
        "id": vuln_id, "aliases": aliases, "summary": f"{package} advisory", "details": "",
        "affected": [{"package": {"name": package, "ecosystem": "PyPI"},
                      "ranges": [{"type": "ECOSYSTEM", "events": events}]}],
    }  # fmt: skip


class OSVQuery(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["content-length"])))
        name = query["package"]["name"].lower()
        advisories = self.server.advisories  # type: ignore[attr-defined]
        vulns = [osv_record(name, *advisory) for advisory in advisories.get(name, [])]
        body = json.dumps({"vulns": vulns} if vulns else {}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def osv_serving(advisories: dict[str, list[Any]]) -> Iterator[str]:
    """OSV's query API on loopback, publishing `advisories`; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), OSVQuery)
    server.advisories = advisories  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def osv_url() -> Iterator[str]:
    with osv_serving(ADVISORIES) as url:
        yield url


@pytest.fixture(scope="module")
def serving_requirements(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serving group, exported from uv.lock with hashes, as `make audit` exports it."""
    from tests.e2e.clone import clean_env

    target = tmp_path_factory.mktemp("audit") / "requirements.txt"
    subprocess.run(
        [clean_env()["UV"], "export", "--locked", "--no-default-groups", "--no-dev",
         "--no-emit-project", "--quiet", "-o", str(target)],
        cwd=PROJ_ROOT, check=True,
    )  # fmt: skip
    text = target.read_text()
    assert "fastapi==0.99.1" in text and "dvc==" not in text and "evidently==" not in text
    return target


def test_every_ignore_has_a_reason_and_a_review_date() -> None:
    ignores = read_ignores()
    assert ignores
    for vulnerability, reason in ignores.items():
        assert "reviewed 20" in reason, f"{vulnerability}: say when it was reviewed"


def test_an_ignore_without_reason_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "ignore"
    bad.write_text("PYSEC-2024-38\n")
    with pytest.raises(ValueError, match="expected `ID  # reason`"):
        read_ignores(bad)


def run_audit(
    requirements: Path, ignores: dict[str, str], osv_url: str
) -> subprocess.CompletedProcess[str]:
    command = audit_command(requirements, ignores, osv_url)
    assert Path(command[0]).parent == Path(sys.executable).parent
    return subprocess.run(
        [*command, "--format", "json"], capture_output=True, text=True, check=False
    )


def test_audit_finds_the_published_advisories(serving_requirements: Path, osv_url: str) -> None:
    result = run_audit(serving_requirements, {}, osv_url)
    assert result.returncode == 1, result.stderr
    reported = [v for d in json.loads(result.stdout)["dependencies"] for v in d.get("vulns", [])]
    found = [{v["id"], *v["aliases"]} for v in reported]  # pip-audit may name one by an alias
    published = [{i, *aliases} for group in ADVISORIES.values() for i, aliases, _ in group]
    assert sorted(map(sorted, found)) == sorted(map(sorted, published))


def reported_ids(result: subprocess.CompletedProcess[str]) -> list[set[str]]:
    """Each vulnerability pip-audit reports, as its id and aliases (it may name one by either)."""
    dependencies = json.loads(result.stdout)["dependencies"]
    return [{v["id"], *v["aliases"]} for d in dependencies for v in d.get("vulns", [])]


def test_each_justified_ignore_is_what_lets_the_audit_pass(
    serving_requirements: Path, osv_url: str
) -> None:
    """With every ignore the audit passes; without any one of them it fails, naming the one
    advisory that ignore justified, whether the file names it by OSV's id or by an alias."""
    ignores = read_ignores(IGNORE_FILE)
    result = run_audit(serving_requirements, ignores, osv_url)
    assert result.returncode == 0, result.stdout + result.stderr
    published = {i: {i, *aliases} for group in ADVISORIES.values() for i, aliases, _ in group}
    by_alias = [v for v in ignores if v not in published]
    assert by_alias, "no ignore names an advisory by an alias: pip-audit's alias match untested"
    for vulnerability in ignores:
        rest = {k: why for k, why in ignores.items() if k != vulnerability}
        result = run_audit(serving_requirements, rest, osv_url)
        assert result.returncode == 1, f"{vulnerability} justifies nothing the audit reports"
        [reported] = reported_ids(result)
        assert vulnerability in reported and reported in published.values()


def test_a_new_advisory_fails_the_audit_despite_the_ignores(serving_requirements: Path) -> None:
    # The ignores pass only the advisories they name: one published after them still fails.
    new = ("GHSA-xxxx-new0-test", ["CVE-2099-0001"], "9.9.9")
    advisories = {**ADVISORIES, "starlette": [*ADVISORIES["starlette"], new]}
    with osv_serving(advisories) as url:
        result = run_audit(serving_requirements, read_ignores(IGNORE_FILE), url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert reported_ids(result) == [{new[0], *new[1]}]
