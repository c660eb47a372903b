"""GitHub's side of the workflows, on loopback: the REST endpoints that `gitml.pull_requests.comment`,
`gitml.monitoring.notify` and CML call, served over HTTPS (a throw-away CA that the runner trusts through
SSL_CERT_FILE / NODE_EXTRA_CA_CERTS), the way a GitHub Enterprise host is reached
(`https://HOST/api/v3`). It keeps pull requests, comments, issues and labels in memory, answers
like GitHub (pagination with `per_page`/`page`, 30 by default; 410 when issues are disabled),
and records every call so a test asserts what a user would see on github.com. It also serves
the repository itself over smart HTTP (`git http-backend`), so `origin` is
`https://HOST/OWNER/REPO.git` as on GitHub, and fetches and pushes are real."""

import json
import os
import re
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme

API = "/api/v3"


@dataclass
class Call:
    method: str
    path: str
    body: Any
    authorization: str


@dataclass
class State:
    repository: str
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # by issue/PR number
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    dispatches: list[dict[str, Any]] = field(default_factory=list)  # workflow_dispatch events
    issues_enabled: bool = True
    read_only_tokens: set[str] = field(default_factory=set)  # a job without `issues: write`
    calls: list[Call] = field(default_factory=list)
    next_id: int = 1000


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

    # What a user would see, for the assertions.
    def comments_on(self, number: int) -> list[dict[str, Any]]:
        return self.state.comments.get(number, [])

    def open_issues(self) -> list[dict[str, Any]]:
        return [i for i in self.state.issues.values() if i["state"] == "open"]

    def add_pull(self, number: int, head_sha: str, head_repo: str) -> None:
        self.state.pulls[number] = {
            "number": number,
            "head": {"sha": head_sha, "repo": {"full_name": head_repo}},
        }

    def _branch_sha(self, branch: str) -> str | None:
        """The commit of `branch` in the bare origin, as GitHub resolves a pull request's head."""
        origin = self.git_root / f"{self.state.repository}.git"
        found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
                               cwd=origin, capture_output=True, text=True, check=False)  # fmt: skip
        return found.stdout.strip() or None

    def _new_id(self) -> int:
        self.state.next_id += 1
        return self.state.next_id

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep the test output readable
                pass

            def _answer(self, status: int, payload: Any = None) -> None:
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
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

            def _git(self, method: str, raw: bytes) -> None:
                """git's smart HTTP protocol, through git's own CGI program. As on GitHub, the
                repository answers with and without `.git` (actions/checkout leaves it off)."""
                url = urlsplit(self.path)
                owner, repo, rest = url.path.lstrip("/").split("/", 2)
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
                self.send_response(int(headers.pop("Status", "200").split()[0]))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _route(self, method: str) -> None:
                url = urlsplit(self.path)
                raw = self._body()
                if re.search(r"/(info/refs|git-upload-pack|git-receive-pack)$", url.path):
                    fake.state.calls.append(Call(method, url.path, None, ""))
                    return self._git(method, raw)
                body = json.loads(raw) if raw else None
                fake.state.calls.append(
                    Call(method, url.path, body, self.headers.get("Authorization", ""))
                )
                if not self.headers.get("Authorization"):
                    return self._answer(401, {"message": "Requires authentication"})
                token = self.headers["Authorization"].split()[-1]
                if method != "GET" and token in fake.state.read_only_tokens:
                    return self._answer(403, {"message": "Resource not accessible by integration"})
                prefix = f"{API}/repos/{fake.state.repository}"
                if not url.path.startswith(prefix):
                    return self._answer(404, {"message": "Not Found"})
                status, payload = fake.dispatch(
                    method, url.path[len(prefix) :], parse_qs(url.query), body
                )
                self._answer(status, payload)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PATCH(self) -> None:
                self._route("PATCH")

            def do_DELETE(self) -> None:
                self._route("DELETE")

        return Handler

    def dispatch(
        self, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        """GitHub's REST semantics for the few endpoints the workflows use."""
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
        if path == "/pulls" and method == "POST":
            head = self._branch_sha(body["head"])
            if head is None:
                return 422, {"message": "Validation Failed", "errors": [{"field": "head"}]}
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
