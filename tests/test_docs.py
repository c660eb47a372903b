"""The documentation tells the truth about the code: every command a page shows exists (make
-n, --help, or the tool's own argument parser), every setting it names is read, the adoption
checklist names exactly the secrets and variables the workflows read, and the site builds with
mkdocs --strict (a broken link or anchor, or a page left out, fails)."""

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import click
import pytest
import typer
import yaml

from gitml.__main__ import MODULES
from gitml.config import PARAMS_FILE, PROJ_ROOT
from gitml.serving.settings import Settings
from tests.e2e.clone import project_uv

PAGES = sorted(
    [PROJ_ROOT / "README.md", PROJ_ROOT / "CONTRIBUTING.md", *(PROJ_ROOT / "docs").rglob("*.md")]
)
ADOPT = PROJ_ROOT / "docs" / "adopt.md"
WORKFLOWS = sorted((PROJ_ROOT / ".github" / "workflows").glob("*.yml"))
MAKE_TARGETS = set(re.findall(r"^([a-z][a-z0-9-]*):", (PROJ_ROOT / "Makefile").read_text(), re.M))
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.M | re.S)
# shell words that need no check: they are the shell's, or coreutils', or reach a cluster or a
# server the tests cannot (kubectl, curl)
PLAIN_TOOLS = {"cd", "cp", "rm", "mkdir", "export", "source", "git", "kubectl", "curl"}
# environment variables the docs name that other programs read (DVC's credentials, GitHub's)
EXTERNAL_NAMES = {
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_STORAGE_CONNECTION_STRING", "GITHUB_TOKEN", "GITHUB_REPOSITORY", "PATH", "HOME", "CI",
}  # fmt: skip
# where a name counts as read: the code, the Makefile, the workflows, the images (the server's,
# and deploy/'s, such as the GPU runner's), the manifests
READERS = [PROJ_ROOT / "Makefile", PROJ_ROOT / "Dockerfile", PROJ_ROOT / "dvc.yaml",
           *(PROJ_ROOT / "src").rglob("*.py"), *(PROJ_ROOT / "benchmarks").glob("*.py"),
           *WORKFLOWS, *(PROJ_ROOT / "deploy").rglob("*.y*ml"),
           *(PROJ_ROOT / "deploy").rglob("Dockerfile")]  # fmt: skip


def pages_text() -> Iterator[tuple[Path, str]]:
    for page in PAGES:
        yield page, page.read_text()


def shell_commands() -> list[tuple[str, list[str]]]:
    """Every command line of the pages' shell blocks: (page, words), continuation lines
    joined, comments dropped, `a && b` split."""
    found = []
    for page, text in pages_text():
        for block in SHELL_BLOCK.findall(text):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"(^|\s)#.*$", "", line).strip()  # a mid-word `#` is not one
                for command in filter(None, (part.strip() for part in line.split("&&"))):
                    found.append((str(page.relative_to(PROJ_ROOT)), shlex.split(command)))
    return found


def inline_spans() -> list[tuple[str, str]]:
    """Every `inline code` span of the pages, outside fenced blocks."""
    spans = []
    for page, text in pages_text():
        prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
        spans += [(page.name, span) for span in re.findall(r"`([^`\n]+)`", prose)]
    return spans


@cache
def read_by_the_project() -> str:
    """The readers' text, and the server's settings as its environment names them."""
    settings = [f"GITML_{name.upper()}" for name in Settings.__fields__]
    return "\n".join([*(path.read_text() for path in READERS), *settings])


@cache
def make_dry_run(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    # a fixed MODEL_VERSION spares make asking GTO (a second a call) for what it does not check
    return subprocess.run(["make", "-n", *args], cwd=PROJ_ROOT, capture_output=True, text=True,
                          check=False, timeout=120,
                          env={**os.environ, "MODEL_VERSION": "v0.0.0"})  # fmt: skip


@cache
def help_text(argv: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv, "--help"], cwd=PROJ_ROOT, capture_output=True,
                          text=True, check=False, timeout=120)  # fmt: skip


def options(words: list[str]) -> list[str]:
    return [word.split("=")[0] for word in words if word.startswith("--")]


def test_the_pages_show_commands() -> None:
    commands = shell_commands()
    assert len(commands) > 40  # the parser found the pages' commands, not an empty list
    assert ["make", "run"] in [words for _, words in commands]


def test_every_make_command_shown_runs_under_make_n() -> None:
    """`make -n` with the page's own targets and variables: a target that does not exist, or
    a variable spelled so that make cannot parse it, fails."""
    calls = sorted({tuple(words[1:]) for _, words in shell_commands() if words[0] == "make"})
    unknown = {target for call in calls for target in call if "=" not in target} - MAKE_TARGETS
    assert not unknown, f"make targets shown in the docs that the Makefile lacks: {unknown}"
    with ThreadPoolExecutor(2) as pool:
        failed = {" ".join(call): done.stderr[-500:] for call, done in
                  zip(calls, pool.map(make_dry_run, calls), strict=True) if done.returncode}  # fmt: skip
    assert not failed, failed


def test_every_make_target_named_in_the_prose_exists() -> None:
    # a span like `make deploy ENV=staging` (a quoted message, with its colon, is not one)
    named = {(page, target) for page, span in inline_spans()
             if span.startswith("make ") and ":" not in span
             for target in shlex.split(span)[1:] if "=" not in target and target[0] != "-"}  # fmt: skip
    assert len(named) > 20
    missing = sorted((page, target) for page, target in named if target not in MAKE_TARGETS)
    assert not missing, missing


def test_every_gitml_and_benchmark_command_shown_takes_its_options() -> None:
    """`python -m gitml CMD [SUB] --help` answers, and lists every option the page uses; a
    benchmark module exists (and takes the options shown)."""
    calls: dict[tuple[str, ...], set[str]] = {}
    for page, words in shell_commands():
        if words[:3] == ["python", "-m", "gitml"]:
            command = words[3] if len(words) > 3 else "--help"
            assert command in MODULES or command == "--help", f"{page}: no command {command!r}"
            sub = [w for w in words[4:5] if not w.startswith("-")]
            calls.setdefault(("-m", "gitml", command, *sub), set()).update(options(words[4:]))
        elif words[:2] == ["python", "-m"] and words[2].startswith("benchmarks."):
            module = PROJ_ROOT / (words[2].replace(".", "/") + ".py")
            assert module.is_file(), f"{page}: {words[2]} does not exist"
            if options(words[3:]):
                calls.setdefault(("-m", words[2]), set()).update(options(words[3:]))
    assert calls
    with ThreadPoolExecutor(2) as pool:
        answers = dict(zip(calls, pool.map(help_text, calls), strict=True))
    for call, used in calls.items():
        done = answers[call]
        assert done.returncode == 0, f"python {' '.join(call)} --help: {done.stderr[-500:]}"
        assert not [o for o in used if o not in done.stdout], (call, used)


def test_every_dvc_command_shown_parses() -> None:
    from dvc.cli import DvcParserError, parse_args

    shown = [(page, words[1:]) for page, words in shell_commands() if words[0] == "dvc"]
    assert shown
    for page, argv in shown:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            try:
                parse_args(argv)
            except (SystemExit, DvcParserError):
                pytest.fail(f"{page}: dvc {' '.join(argv)} is not a dvc command line")


def click_parses(command: click.Command, argv: list[str]) -> None:
    """Parse argv as the click command would, down its subcommands, running nothing."""
    ctx = command.make_context(command.name or "cli", list(argv), resilient_parsing=False)
    if isinstance(command, click.Group) and ctx.protected_args:
        name, *rest = [*ctx.protected_args, *ctx.args]
        sub = command.get_command(ctx, name)
        if sub is None:
            raise click.UsageError(f"no command {name!r}")
        sub.make_context(name, rest, parent=ctx)


def test_every_gto_and_uv_command_shown_parses() -> None:
    from gto.cli import app as gto_app

    for page, words in shell_commands():
        if words[0] == "gto":
            try:
                click_parses(typer.main.get_command(gto_app), words[1:])
            except click.ClickException as err:
                pytest.fail(f"{page}: {' '.join(words)}: {err}")
        elif words[0] == "uv":
            done = subprocess.run([project_uv(), words[1], "--help"], capture_output=True, text=True,
                                  check=False)  # fmt: skip
            assert done.returncode == 0, f"{page}: uv {words[1]}"
            assert not [o for o in options(words[2:]) if o not in done.stdout], words


def test_every_other_command_shown_is_known() -> None:
    checked = {"make", "dvc", "gto", "uv", "python", "mutmut", "pytest"}
    unknown = {(page, words[0]) for page, words in shell_commands()
               if words[0] not in checked | PLAIN_TOOLS}  # fmt: skip
    assert not unknown, f"commands the docs show that this test does not check: {unknown}"
    for page, words in shell_commands():
        if words[0] == "python":
            assert words[1:2] == ["-m"], f"{page}: {' '.join(words)}"
        if words[0] == "mutmut":
            assert words[1] in ("run", "results", "show", "browse"), words
        if words[0] == "source":
            assert (PROJ_ROOT / ".venv" / "bin" / "activate").is_file()


def test_every_gitml_setting_named_is_read() -> None:
    named = {(page.name, name) for page, text in pages_text()
             for name in re.findall(r"\bGITML_[A-Z0-9_]*[A-Z0-9]\b", text)}  # fmt: skip
    assert len(named) > 20
    unread = sorted((page, name) for page, name in named
                    if not re.search(rf"\b{name}\b", read_by_the_project()))  # fmt: skip
    assert not unread, f"settings the docs name that nothing reads: {unread}"


def test_every_upper_case_name_in_code_spans_is_read() -> None:
    """A secret, variable or spec name written `LIKE_THIS` is read by the code, the Makefile,
    a workflow, the image or the manifests (or by DVC and GitHub themselves)."""
    names = {(page, span) for page, span in inline_spans()
             if re.fullmatch(r"[A-Z][A-Z0-9_]{2,}", span)}  # fmt: skip
    unread = sorted((page, name) for page, name in names if name not in EXTERNAL_NAMES
                    and not re.search(rf"\b{name}\b", read_by_the_project()))  # fmt: skip
    assert not unread, f"names the docs give that nothing reads: {unread}"


def params_has(params: object, path: list[str]) -> bool:
    if not path:
        return True
    if not isinstance(params, dict):
        return False
    head, *rest = path
    if head.startswith("<"):  # a placeholder (`<family>`): any key will do
        return any(params_has(value, rest) for value in params.values())
    return head in params and params_has(params[head], rest)


def test_every_params_key_named_exists() -> None:
    params = yaml.safe_load(PARAMS_FILE.read_text())
    files = {"yml", "yaml", "py", "prom", "md", "html", "json", "jsonl", "csv", "parquet", "dvc"}
    named = {(page, span) for page, span in inline_spans()
             if re.fullmatch(r"[a-z]+(\.[a-z_<>]+)+", span) and span.split(".")[0] in params
             and span.split(".")[-1] not in files}  # fmt: skip
    assert len(named) > 10
    missing = sorted((page, span) for page, span in named
                     if not params_has(params, span.split(".")))  # fmt: skip
    assert not missing, f"params.yaml has no {missing}"


def workflow_settings() -> dict[str, str]:
    """Every `secrets.X` and `vars.X` the workflows read: name -> secret or variable."""
    read: dict[str, str] = {}
    for workflow in WORKFLOWS:
        for kind, name in re.findall(r"\b(secrets|vars)\.([A-Z][A-Z0-9_]*)", workflow.read_text()):
            read[name] = "secret" if kind == "secrets" else "variable"
    return read


def test_the_adoption_checklist_names_every_secret_and_variable_the_workflows_read() -> None:
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \| (secret|variable) \|", ADOPT.read_text(), re.M)
    listed = dict(rows)
    assert len(rows) == len(listed), "a name is listed twice"
    read = workflow_settings()
    assert "KUBECONFIG" in read and "PREDICTION_LOGS_URL" in read  # the parser found them
    assert {n: k for n, k in read.items() if listed.get(n) != k} == {}, "missing from adopt.md"
    assert {n: k for n, k in listed.items() if read.get(n) != k} == {}, "no workflow reads these"


def test_the_readme_is_short_and_its_links_and_pictures_exist() -> None:
    readme = (PROJ_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert "make test" in readme and "```mermaid" in readme
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    targets += re.findall(r'<img src="([^"]+)"', readme)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert len(local) > 10
    assert [t for t in local if not (PROJ_ROOT / t).exists()] == []
    pictures = [t for t in local if t.endswith(".png")]
    assert len(pictures) >= 2  # the pull request's comment, the monitor's report
    assert [t for t in pictures if (PROJ_ROOT / t).stat().st_size > 300_000] == []


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=PROJ_ROOT, capture_output=True, text=True, check=False, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "adopt" / "index.html").is_file()
