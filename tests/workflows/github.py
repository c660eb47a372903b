"""GitHub's side of the workflows, on loopback, as strict as github.com about who may do what.

It serves, over HTTPS (a throw-away CA that the runner trusts through SSL_CERT_FILE /
NODE_EXTRA_CA_CERTS) and the way a GitHub Enterprise host is reached (`https://HOST/api/v3`):
- the REST endpoints that our commands, CML and the stand-in actions call: pull requests,
  comments, issues, labels, workflow dispatches, runners (repository and organisation),
  environments, the fork approval policy, GitHub App installation tokens; answers like GitHub's
  (pagination with `per_page`/`page`, 30 by default; 410 when issues are disabled);
- the repository itself over git's smart HTTP (`git http-backend`), so `origin` is
  `https://HOST/OWNER/REPO.git` as on GitHub, and fetches and pushes are real;
- GHCR's token service (`/token`), which the registry stand-in asks before a push.

Who may do what, as GitHub decides it:
- A job's token (GITHUB_TOKEN) is minted per workflow run (`register_run`); what it may do is
  the *calling job's* `permissions:` (job level, else workflow level, else the repository's
  default), read from the workflow file the run was started with. act gives every job of a run
  the same token, so the job is found from the calling process (its GITHUB_JOB, read through
  /proc from the TCP connection's owner): a job's request is judged by that job's permissions.
- In a run for a pull request from a fork, every `write` becomes `read`.
- Personal access tokens and GitHub App installation tokens carry their own permissions; an App
  token is minted through the API with a JWT signed by the App's private key, and expires.
- A request without the permission gets 403 (`Resource not accessible by integration`), a
  missing or unknown token 401, and git the same (`Permission to OWNER/REPO.git denied to ...`).
  The repository is private by default: reading needs `contents: read` too.
- `POST /pulls` with a job token is refused while "Allow GitHub Actions to create and approve
  pull requests" is off (GitHub's default for new repositories).
- Pushes and pull requests made with a job token start no workflow (`events` records what would
  start one, as GitHub's webhooks would say).
"""

import base64
import gzip
import json
import os
import re
import secrets
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme
import yaml

API = "/api/v3"
LEVELS = {"none": 0, "read": 1, "write": 2}
# The scopes a workflow's `permissions:` can name (GitHub's docs, 2026-12).
SCOPES = ("actions", "attestations", "checks", "contents", "deployments", "discussions",
          "id-token", "issues", "models", "packages", "pages", "pull-requests",
          "repository-projects", "security-events", "statuses")  # fmt: skip
BOT = "github-actions[bot]"
CANNOT_CREATE_PULLS = "GitHub Actions is not permitted to create or approve pull requests."
APP_TOKEN_SECONDS = 3600


@dataclass
class Call:
    method: str
    path: str
    body: Any
    authorization: str
    status: int = 0
    principal: str = ""  # who GitHub took the caller for (a job, a token's owner)


@dataclass
class Run:
    """One workflow run (one act invocation): its token's permissions come from `workflow`."""

    workflow: dict[str, Any]
    event: str
    fork: bool  # a pull request from a fork: a read-only token


@dataclass
class Token:
    value: str
    kind: str  # job | pat | app
    name: str  # the principal GitHub names in refusals and events
    permissions: dict[str, str] = field(default_factory=dict)  # repository permissions
    org_permissions: dict[str, str] = field(default_factory=dict)  # e.g. self_hosted_runners
    expires: float | None = None
    run: Run | None = None


@dataclass
class App:
    client_id: str  # what the App's JWT names as its issuer
    slug: str
    public_key: Any
    permissions: dict[str, str]
    app_id: int
    installation_id: int


@dataclass
class State:
    repository: str
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # by issue/PR number
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    dispatches: list[dict[str, Any]] = field(default_factory=list)  # workflow_dispatch events
    events: list[dict[str, Any]] = field(default_factory=list)  # pushes and PRs, as webhooks say
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runners: list[dict[str, Any]] = field(default_factory=list)  # the repository's
    org_runners: list[dict[str, Any]] = field(default_factory=list)  # the organisation's
    fork_pr_approval: str = "first_time_contributors"  # GitHub's default policy
    issues_enabled: bool = True
    private: bool = True
    actions_can_create_pulls: bool = False  # Settings > Actions > General, off by default
    default_workflow_permissions: str = "read"  # "read" (restricted) or "write" (permissive)
    package_policy_refusal: str = ""  # an organisation's package policy refusing this repo
    tokens: dict[str, Token] = field(default_factory=dict)
    apps: dict[str, App] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    next_id: int = 1000


def job_permissions(run: Run, job: str, default: str) -> dict[str, str]:
    """The permissions GitHub gives `job`'s GITHUB_TOKEN in `run`."""
    spec = run.workflow.get("jobs", {}).get(job, {}).get("permissions")
    if spec is None:
        spec = run.workflow.get("permissions")
    if spec is None:  # neither sets them: the repository's default
        spec = {"contents": "read", "packages": "read"} if default == "read" else "write-all"
    if spec in ("read-all", "write-all"):
        spec = dict.fromkeys(SCOPES, spec.removesuffix("-all"))
    granted = {scope: str(level) for scope, level in (spec or {}).items()}
    if run.fork:  # GitHub: read-only in pull requests from forks
        granted = {s: "read" if level == "write" else level for s, level in granted.items()}
    return granted


def peer_environment(client_port: int, server_port: int) -> dict[str, str]:
    """The environment of the local process at the other end of a loopback TCP connection."""
    inode = ""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote = fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]
            if int(local, 16) == client_port and int(remote, 16) == server_port:
                inode = fields[9]
    if not inode:
        return {}
    target = f"socket:[{inode}]"
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                if os.readlink(fd.path) == target:
                    raw = Path(f"/proc/{entry.name}/environ").read_bytes()
                    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
                    return {
                        k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs
                    }
        except OSError:
            continue
    return {}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeGitHub:
    """`with FakeGitHub(tmp, "acme/bikes") as gh:` serves until the block ends."""

    def __init__(self, directory: Path, repository: str) -> None:
        self.state = State(repository)
        self.git_root = directory / "git"  # holds OWNER/REPO.git, the bare origin
        ca = trustme.CA()
        self.ca_file = directory / "github-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeGitHub":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- set-up, as a repository's admin would do it on github.com -------------------------

    def register_run(self, workflow: Path, event: str, fork: bool = False) -> str:
        """A workflow run's GITHUB_TOKEN: each job gets the permissions its file grants."""
        parsed = yaml.safe_load(workflow.read_text())
        parsed["on"] = parsed.pop(True, parsed.get("on"))
        token = f"ghs_run_{secrets.token_hex(12)}"
        self.state.tokens[token] = Token(token, "job", BOT, run=Run(parsed, event, fork))
        return token

    def add_token(
        self, value: str, permissions: dict[str, str], *, name: str = "dana",
        org_permissions: dict[str, str] | None = None, expires_in: float | None = None,
    ) -> str:  # fmt: skip
        """A person's fine-grained token with these repository (and organisation) permissions."""
        expires = None if expires_in is None else time.time() + expires_in
        self.state.tokens[value] = Token(value, "pat", name, dict(permissions),
                                         dict(org_permissions or {}), expires)  # fmt: skip
        return value

    def add_app(self, client_id: str, slug: str, permissions: dict[str, str]) -> str:
        """A GitHub App installed on the repository; returns its private key (PEM)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        number = len(self.state.apps)
        self.state.apps[client_id] = App(client_id, slug, key.public_key(), dict(permissions),
                                         app_id=100 + number, installation_id=4200 + number)  # fmt: skip
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption()).decode()  # fmt: skip

    def add_environment(self, name: str, reviewers: int = 0, wait_minutes: int = 0) -> None:
        rules: list[dict[str, Any]] = []
        if reviewers:
            rules.append({"id": 1, "type": "required_reviewers",
                          "reviewers": [{"type": "User", "reviewer": {"login": f"r{i}"}}
                                        for i in range(reviewers)]})  # fmt: skip
        if wait_minutes:
            rules.append({"id": 2, "type": "wait_timer", "wait_timer": wait_minutes})
        self.state.environments[name] = {"name": name, "protection_rules": rules}

    # --- what a user would see, for the assertions --------------------------------------------

    def comments_on(self, number: int) -> list[dict[str, Any]]:
        return self.state.comments.get(number, [])

    def open_issues(self) -> list[dict[str, Any]]:
        return [i for i in self.state.issues.values() if i["state"] == "open"]

    def add_pull(self, number: int, head_sha: str, head_repo: str) -> None:
        self.state.pulls[number] = {
            "number": number,
            "head": {"sha": head_sha, "repo": {"full_name": head_repo}},
        }

    def _origin(self) -> Path:
        return self.git_root / f"{self.state.repository}.git"

    def _branch_sha(self, branch: str) -> str | None:
        """The commit of `branch` in the bare origin, as GitHub resolves a pull request's head."""
        found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
                               cwd=self._origin(), capture_output=True, text=True, check=False)  # fmt: skip
        return found.stdout.strip() or None

    def _new_id(self) -> int:
        self.state.next_id += 1
        return self.state.next_id

    # --- who is calling, and may they ----------------------------------------------------------

    def identify(self, authorization: str, client_port: int) -> tuple[Token | None, str]:
        """(the token, the job it acts for) from an Authorization header; None: unknown."""
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() == "basic":  # git: x-access-token:TOKEN
            credential = base64.b64decode(credential).decode(errors="replace").partition(":")[2]
        token = self.state.tokens.get(credential.strip())
        if token is None or (token.expires is not None and token.expires < time.time()):
            return None, ""
        if token.kind != "job":
            return token, ""
        job = peer_environment(client_port, self.server.server_address[1]).get("GITHUB_JOB", "")
        return (token, job) if job else (None, "")  # a job token outside its job is nobody's

    def granted(self, token: Token, job: str) -> dict[str, str]:
        if token.kind == "job" and token.run is not None:
            return job_permissions(token.run, job, self.state.default_workflow_permissions)
        return token.permissions

    def allows(self, token: Token, job: str, scope: str, level: str) -> bool:
        have = self.granted(token, job).get(scope, "none")
        return LEVELS.get(have, 0) >= LEVELS[level]

    @staticmethod
    def principal(token: Token, job: str) -> str:
        return f"{token.name} (job {job})" if job else token.name

    # --- HTTP ----------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep the test output readable
                pass

            def _answer(self, status: int, payload: Any = None,
                        headers: dict[str, str] | None = None) -> None:  # fmt: skip
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _text(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        data += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return data
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _caller(self) -> tuple[Token | None, str]:
                return fake.identify(self.headers.get("Authorization", ""), self.client_address[1])

            def _git(self, method: str, raw: bytes) -> None:
                """git's smart HTTP protocol, through git's own CGI program. As on GitHub, the
                repository answers with and without `.git` (actions/checkout leaves it off);
                reading a private repository needs `contents: read`, pushing `contents: write`."""
                url = urlsplit(self.path)
                owner, repo, rest = url.path.lstrip("/").split("/", 2)
                pushing = "git-receive-pack" in (url.path + url.query)
                token, job = self._caller()
                call = Call(method, url.path, None, self.headers.get("Authorization", ""))
                fake.state.calls.append(call)
                if token is None and (pushing or fake.state.private):
                    call.status = 401
                    return self._text(401, "Invalid username or token.\n" if
                                      self.headers.get("Authorization") else "",
                                      {"WWW-Authenticate": 'Basic realm="GitHub"'})  # fmt: skip
                if token is not None:
                    call.principal = fake.principal(token, job)
                    needed = "write" if pushing else "read"
                    if not fake.allows(token, job, "contents", needed):
                        call.status = 403
                        return self._text(403, f"Permission to {owner}/{repo.removesuffix('.git')}"
                                               f".git denied to {token.name}.\n")  # fmt: skip
                path = f"/{owner}/{repo.removesuffix('.git')}.git/{rest}"
                env = {**os.environ, "GIT_PROJECT_ROOT": str(fake.git_root),
                       "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
                       "QUERY_STRING": url.query, "REQUEST_METHOD": method,
                       "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                       "CONTENT_LENGTH": str(len(raw)), "REMOTE_USER": "x-access-token",
                       "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                       "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}  # fmt: skip
                out = subprocess.run(["git", "http-backend"], input=raw, env=env,
                                     capture_output=True, check=False).stdout  # fmt: skip
                head, _, body = out.partition(b"\r\n\r\n")
                headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n") if line)
                status = int(headers.pop("Status", "200").split()[0])
                call.status = status
                if pushing and method == "POST" and status == 200 and token is not None:
                    fake._record_pushes(raw, self.headers.get("Content-Encoding", ""), body,
                                        token, job)  # fmt: skip
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _registry_token(self, query: dict[str, list[str]]) -> None:
                """GHCR's token service: may these credentials push (or pull) the image?"""
                token, job = self._caller()
                scope = query.get("scope", [""])[0]  # repository:NAME:pull,push
                call = Call("GET", "/token", {"scope": scope}, "")
                fake.state.calls.append(call)
                if token is None:
                    call.status = 401
                    return self._answer(401, {"errors": [{"code": "UNAUTHORIZED",
                                                          "message": "authentication required"}]})  # fmt: skip
                call.principal = fake.principal(token, job)
                actions = scope.rsplit(":", 1)[-1].split(",")
                level = "write" if "push" in actions else "read"
                if not fake.allows(token, job, "packages", level):
                    call.status = 403
                    return self._answer(403, {"errors": [{"code": "DENIED", "message":
                                        f"permission_denied: {token.name} needs packages: "
                                        f"{level} to {'/'.join(actions)}"}]})  # fmt: skip
                if level == "write" and fake.state.package_policy_refusal:
                    call.status = 403
                    return self._answer(403, {"errors": [{"code": "DENIED", "message":
                                        fake.state.package_policy_refusal}]})  # fmt: skip
                call.status = 200
                self._answer(200, {"token": secrets.token_hex(8)})

            def _route(self, method: str) -> None:
                try:
                    self._serve(method)
                except Exception as err:  # a stand-in bug: say so, never drop the connection
                    self._answer(500, {"message": f"GitHub stand-in error: {err!r}"})
                    raise

            def _serve(self, method: str) -> None:
                url = urlsplit(self.path)
                raw = self._body()
                if re.search(r"/(info/refs|git-upload-pack|git-receive-pack)$", url.path):
                    return self._git(method, raw)
                if url.path == "/token":
                    return self._registry_token(parse_qs(url.query))
                body = json.loads(raw) if raw else None
                authorization = self.headers.get("Authorization", "")
                call = Call(method, url.path, body, authorization)
                fake.state.calls.append(call)
                status, payload, headers = fake.answer(
                    method, url.path, parse_qs(url.query), body, authorization,
                    self.client_address[1], call,
                )  # fmt: skip
                call.status = status
                self._answer(status, payload, headers)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PATCH(self) -> None:
                self._route("PATCH")

            def do_DELETE(self) -> None:
                self._route("DELETE")

        return Handler

    def _record_pushes(self, raw: bytes, encoding: str, response: bytes, token: Token,
                       job: str) -> None:  # fmt: skip
        """The refs a receive-pack request updated, as GitHub's push events name them."""
        data = gzip.decompress(raw) if encoding == "gzip" else raw
        refs = []
        while len(data) >= 4 and data[:4] != b"0000":
            size = int(data[:4], 16)
            _old, new, ref = data[4:size].split(b"\0")[0].decode().split()[:3]
            refs.append((ref, new))
            data = data[size:]
        text = response.decode(errors="replace")
        for ref, new in refs:
            if f"ok {ref}" in text:
                self.state.events.append({"event": "push", "ref": ref, "sha": new,
                                          "by": self.principal(token, job),
                                          "starts_workflows": token.kind != "job"})  # fmt: skip

    # --- the REST API ----------------------------------------------------------------------------

    def answer(
        self, method: str, path: str, query: dict[str, list[str]], body: Any,
        authorization: str, client_port: int, call: Call,
    ) -> tuple[int, Any, dict[str, str]]:  # fmt: skip
        """Authenticate, authorise, then GitHub's REST semantics for the endpoints used."""
        if not path.startswith(API):
            return 404, {"message": "Not Found"}, {}
        path = path[len(API) :]
        if path.startswith("/app/") or path.endswith("/installation"):
            return (*self.app_endpoint(method, path, body, authorization), {})
        if not authorization:
            return 401, {"message": "Requires authentication"}, {}
        token, job = self.identify(authorization, client_port)
        if token is None:
            return 401, {"message": "Bad credentials"}, {}
        call.principal = self.principal(token, job)
        if match := re.fullmatch(r"/orgs/([^/]+)/actions/runners", path):
            owner = self.state.repository.split("/")[0]
            if match[1].lower() != owner.lower():
                return 404, {"message": "Not Found"}, {}
            if LEVELS.get(token.org_permissions.get("self_hosted_runners", "none"), 0) < 1:
                return self.refused(token, "organization_self_hosted_runners=read")
            return 200, {"total_count": len(self.state.org_runners),
                         "runners": self.state.org_runners}, {}  # fmt: skip
        prefix = f"/repos/{self.state.repository}"
        if not path.startswith(prefix):
            return 404, {"message": "Not Found"}, {}
        path = path[len(prefix) :]
        need = self.required(method, path)
        if need and not any(self.allows(token, job, scope, level) for scope, level in need):
            return self.refused(token, ",".join(f"{s.replace('-', '_')}={lv}" for s, lv in need))
        creating_pull = path == "/pulls" and method == "POST"
        if creating_pull and token.kind == "job" and not self.state.actions_can_create_pulls:
            return 403, {"message": CANNOT_CREATE_PULLS}, {}
        status, payload = self.dispatch(method, path, query, body)
        if path == "/pulls" and method == "POST" and status == 201:
            self.state.events.append({"event": "pull_request", "number": payload["number"],
                                      "by": self.principal(token, job),
                                      "starts_workflows": token.kind != "job"})  # fmt: skip
        return status, payload, {}

    @staticmethod
    def refused(token: Token, accepted: str) -> tuple[int, Any, dict[str, str]]:
        who = "personal access token" if token.kind == "pat" else "integration"
        return (403, {"message": f"Resource not accessible by {who}"},
                {"X-Accepted-GitHub-Permissions": accepted})  # fmt: skip

    def required(self, method: str, path: str) -> list[tuple[str, str]]:
        """Any one of these (scope, level) lets the request through; [] needs none."""
        reading = method == "GET"
        level = "read" if reading else "write"
        if re.fullmatch(r"/pulls(/\d+)?", path):
            return [("pull-requests", level)]
        if match := re.fullmatch(r"/issues/(\d+)(/comments)?", path):
            is_pull = int(match[1]) in self.state.pulls
            return [("issues", level)] + ([("pull-requests", level)] if is_pull else [])
        if match := re.fullmatch(r"/issues/comments/(\d+)", path):
            on_pull = any(int(match[1]) in {c["id"] for c in cs} and n in self.state.pulls
                          for n, cs in self.state.comments.items())  # fmt: skip
            return [("issues", level)] + ([("pull-requests", level)] if on_pull else [])
        if path.startswith("/issues") or path.startswith("/labels"):
            return [("issues", level), ("pull-requests", level)] if path.startswith(
                "/labels") else [("issues", level)]  # fmt: skip
        if path.startswith("/actions/workflows/"):
            return [("actions", level)]
        if path.startswith("/environments"):
            return [] if not self.state.private else [("actions", "read")]
        if path.startswith("/actions/runners") or path.startswith("/actions/permissions"):
            return [("administration", level)]  # never a job token's (GitHub has no such scope)
        return [("metadata", "read")] if reading else [("contents", "write")]

    def app_endpoint(
        self, method: str, path: str, body: Any, authorization: str
    ) -> tuple[int, Any]:
        """GitHub App authentication: a JWT (RS256, signed with the App's key) for these."""
        app = self.verify_jwt(authorization)
        if app is None:
            return 401, {"message": "A JSON web token could not be decoded"}
        if path == f"/repos/{self.state.repository}/installation" and method == "GET":
            return 200, {"id": app.installation_id, "app_id": app.app_id,
                         "client_id": app.client_id, "app_slug": app.slug,
                         "permissions": app.permissions}  # fmt: skip
        if match := re.fullmatch(r"/app/installations/(\d+)/access_tokens", path):
            if int(match[1]) != app.installation_id or method != "POST":
                return 404, {"message": "Not Found"}
            wanted = (body or {}).get("permissions") or app.permissions
            for scope, level in wanted.items():
                if LEVELS.get(app.permissions.get(scope, "none"), 0) < LEVELS.get(level, 3):
                    return 422, {"message": "The permissions requested are not granted to "
                                            f"this installation: {scope}={level}"}  # fmt: skip
            value = f"ghs_app_{secrets.token_hex(12)}"
            expires = time.time() + APP_TOKEN_SECONDS
            self.state.tokens[value] = Token(value, "app", f"{app.slug}[bot]", dict(wanted),
                                             expires=expires)  # fmt: skip
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
            return 201, {"token": value, "expires_at": stamp, "permissions": wanted}
        return 404, {"message": "Not Found"}

    def verify_jwt(self, authorization: str) -> App | None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        scheme, _, jwt = authorization.partition(" ")
        parts = jwt.strip().split(".")
        if scheme.lower() != "bearer" or len(parts) != 3:
            return None
        try:
            header, claims = (json.loads(unb64url(p)) for p in parts[:2])
        except ValueError:
            return None
        app = self.state.apps.get(str(claims.get("iss", "")))
        now = time.time()
        if (
            app is None
            or header.get("alg") != "RS256"
            or not (
                claims.get("iat", now + 1) <= now + 60 and now < claims.get("exp", 0) <= now + 660
            )
        ):
            return None
        try:
            app.public_key.verify(unb64url(parts[2]), f"{parts[0]}.{parts[1]}".encode(),
                                  padding.PKCS1v15(), hashes.SHA256())  # fmt: skip
        except InvalidSignature:
            return None
        return app

    def dispatch(
        self, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        """GitHub's REST semantics for the few endpoints the workflows use (once authorised)."""
        state = self.state
        page = int(query.get("page", ["1"])[0])
        per_page = min(int(query.get("per_page", ["30"])[0]), 100)

        def paginate(items: list[Any]) -> list[Any]:
            return items[(page - 1) * per_page : page * per_page]

        if match := re.fullmatch(r"/actions/workflows/([^/]+)/dispatches", path):
            if method != "POST" or not isinstance(body, dict) or "ref" not in body:
                return 422, {"message": "Invalid request: ref is required"}
            state.dispatches.append({"workflow": match[1], **body})
            return 204, None
        if path == "/actions/runners" and method == "GET":
            return 200, {"total_count": len(state.runners), "runners": paginate(state.runners)}
        if path == "/actions/permissions/fork-pr-contributor-approval" and method == "GET":
            return 200, {"approval_policy": state.fork_pr_approval}
        if match := re.fullmatch(r"/environments/([^/]+)", path):
            environment = state.environments.get(match[1])
            return (200, environment) if environment else (404, {"message": "Not Found"})
        if path == "/pulls" and method == "POST":
            head = None if body["head"] == body.get("base") else self._branch_sha(body["head"])
            if head is None:
                return 422, {"message": "Validation Failed",
                             "errors": [{"resource": "PullRequest", "field": "head",
                                         "code": "invalid"}]}  # fmt: skip
            number = max([*state.issues, *state.pulls, 0]) + 1
            self.add_pull(number, head, state.repository)
            state.pulls[number].update(
                {"title": body["title"], "body": body.get("body", ""), "base": {"ref": body["base"]},
                 "head": {**state.pulls[number]["head"], "ref": body["head"]}}
            )  # fmt: skip
            return 201, state.pulls[number]
        if match := re.fullmatch(r"/pulls/(\d+)", path):
            pull = state.pulls.get(int(match[1]))
            return (200, pull) if pull else (404, {"message": "Not Found"})
        if path.startswith("/issues") and not state.issues_enabled:
            return 410, {"message": "Issues are disabled for this repo"}
        if match := re.fullmatch(r"/issues/(\d+)/comments", path):
            comments = state.comments.setdefault(int(match[1]), [])
            if method == "GET":
                return 200, paginate(comments)
            comment = {"id": self._new_id(), "body": body["body"]}
            comments.append(comment)
            return 201, comment
        if match := re.fullmatch(r"/issues/comments/(\d+)", path):
            for comments in state.comments.values():
                for comment in comments:
                    if comment["id"] == int(match[1]):
                        if method == "DELETE":
                            comments.remove(comment)
                            return 204, None
                        comment["body"] = body["body"]
                        return 200, comment
            return 404, {"message": "Not Found"}
        if path == "/issues" and method == "GET":
            wanted = set(filter(None, query.get("labels", [""])[0].split(",")))
            found = [
                i for i in state.issues.values()
                if i["state"] == query.get("state", ["open"])[0]
                and wanted <= {label["name"] for label in i["labels"]}
            ]  # fmt: skip
            return 200, paginate(sorted(found, key=lambda i: -i["number"]))
        if path == "/issues" and method == "POST":
            number = max([*state.issues, *state.pulls, 0]) + 1
            labels = [{"name": name} for name in body.get("labels", [])]
            state.issues[number] = {"number": number, "title": body["title"],
                                    "body": body.get("body", ""), "labels": labels,
                                    "state": "open"}  # fmt: skip
            return 201, state.issues[number]
        if match := re.fullmatch(r"/issues/(\d+)", path):
            issue = state.issues.get(int(match[1]))
            if issue is None:
                return 404, {"message": "Not Found"}
            issue.update(body or {})
            return 200, issue
        if path == "/labels" and method == "POST":
            if body["name"] in state.labels:
                return 422, {"message": "Validation Failed",
                             "errors": [{"resource": "Label", "code": "already_exists"}]}  # fmt: skip
            state.labels[body["name"]] = body
            return 201, body
        return 404, {"message": "Not Found"}
