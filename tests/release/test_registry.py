import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gitml.config import PROJ_ROOT
from gitml.release import registry
from gitml.release.registry import (
    BOT,
    app,
    git_environment,
    image_digest,
    image_name,
    record,
    stage_assignment,
)


@pytest.mark.parametrize("stage", ["staging", "production"])
def test_a_stage_tag_names_stage_and_version(stage: str) -> None:
    ref = {"tag": f"bike-demand#{stage}#4", "event": "assignment", "stage": stage,
           "version": "v0.0.2"}  # fmt: skip
    assert stage_assignment(ref) == (stage, "v0.0.2")


@pytest.mark.parametrize(
    "ref",
    [
        {"tag": "bike-demand@v1.0.0", "event": "registration", "version": "v1.0.0"},
        {"tag": "bike-demand#qa#1", "event": "assignment", "stage": "qa", "version": "v1"},
        # a stage tag that takes the stage away, or retires the model, must not deploy it
        {
            "tag": "bike-demand#production!#5",
            "event": "unassignment",
            "stage": "production",
            "version": "v0.0.2",
        },
        {
            "tag": "bike-demand@deprecated",
            "event": "deprecation",
            "stage": "production",
            "version": "v0.0.2",
        },
        {},
    ],
)
def test_other_refs_are_refused(ref: dict[str, str]) -> None:
    with pytest.raises(
        ValueError, match=r"does not assign one of \('staging', 'production'\)"
    ) as err:
        stage_assignment(ref)
    assert repr(ref.get("tag")) in str(err.value)


# --- recording tags in origin, as a release job does ------------------------------------------


def git(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                            check=True)  # fmt: skip
    return result.stdout.strip()


@pytest.fixture
def runner_env(tmp_path: Path) -> dict[str, str]:
    """A runner's environment: a fresh HOME, so git has no identity."""
    home = tmp_path / "home"
    home.mkdir()
    gto = str(Path(sys.executable).parent)
    return {"HOME": str(home), "PATH": f"{gto}{os.pathsep}{os.environ['PATH']}",
            "GIT_CONFIG_NOSYSTEM": "1"}  # fmt: skip


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    bare, seed = tmp_path / "origin.git", tmp_path / "seed"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("init", "-q", "-b", "main", str(seed), cwd=tmp_path)
    identity = ["-c", "user.name=Dana", "-c", "user.email=dana@example.com"]
    git(*identity, "commit", "-q", "--allow-empty", "-m", "one", cwd=seed)
    git("push", "-q", str(bare), "main", cwd=seed)
    return bare


def checkout(origin: Path, name: str, env: dict[str, str]) -> Path:
    path = origin.parent / name
    git("clone", "-q", str(origin), str(path), cwd=origin.parent, env=env)
    return path


def test_tags_are_made_as_the_bot_when_git_has_no_identity(
    origin: Path, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = checkout(origin, "job", runner_env)
    monkeypatch.chdir(work)
    tag = record(["register", "model"], "model", push=True, env=runner_env)
    assert tag == "model@v0.0.1"
    assert git("tag", "--list", cwd=origin) == "model@v0.0.1"  # pushed
    tagger = git("for-each-ref", "--format=%(taggername) %(taggeremail)", f"refs/tags/{tag}",
                 cwd=origin)  # fmt: skip
    assert tagger == f"{BOT[0]} <{BOT[1]}>"


def in_a_later_merge(
    origin: Path, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One job registers model@v0.0.1 in origin; then work in a second checkout, a later
    merge whose run looked at origin just before that push (its next number is taken)."""
    first, second = checkout(origin, "first", runner_env), checkout(origin, "second", runner_env)
    monkeypatch.chdir(first)
    record(["register", "model"], "model", push=True, env=runner_env)
    monkeypatch.chdir(second)
    identity = ["-c", "user.name=Dana", "-c", "user.email=dana@example.com"]
    git(*identity, "commit", "-q", "--allow-empty", "-m", "two", cwd=second, env=runner_env)


def test_a_number_taken_by_a_concurrent_run_is_retried_not_lost(
    origin: Path, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    in_a_later_merge(origin, runner_env, monkeypatch)
    real_fetch, fetches = registry.fetch_tags, []

    def stale_first_fetch(name: str, env: dict[str, str]) -> None:
        fetches.append(name)
        if len(fetches) > 1:
            real_fetch(name, env)

    monkeypatch.setattr(registry, "fetch_tags", stale_first_fetch)
    assert record(["register", "model"], "model", push=True, env=runner_env) == "model@v0.0.2"
    assert sorted(git("tag", "--list", cwd=origin).split()) == ["model@v0.0.1", "model@v0.0.2"]
    assert fetches == ["model", "model"]


def test_a_number_taken_at_every_attempt_gives_up_saying_so(
    origin: Path, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    in_a_later_merge(origin, runner_env, monkeypatch)
    monkeypatch.setattr(registry, "fetch_tags", lambda name, env: None)  # never sees origin's
    monkeypatch.setattr(registry, "ATTEMPTS", 2)  # as good as 5 here, and quicker
    with pytest.raises(registry.RegistryError) as err:
        record(["register", "model"], "model", push=True, env=runner_env)
    assert str(err.value) == "model@v0.0.1 was taken 2 times by concurrent runs; run it again"
    assert git("tag", "--list", cwd=Path.cwd()) == ""  # each refused tag deleted, none left


def test_a_push_origin_refuses_is_an_error_not_a_retry(
    origin: Path, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = origin / "hooks" / "pre-receive"  # e.g. a tag protection rule
    hook.write_text("#!/bin/sh\necho 'tags are protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    work = checkout(origin, "job", runner_env)
    monkeypatch.chdir(work)
    calls = []
    monkeypatch.setattr(registry, "fetch_tags", lambda name, env: calls.append(name))
    with pytest.raises(
        registry.RegistryError, match=r"^git push of model@v0\.0\.1 failed: "
    ) as err:
        record(["register", "model"], "model", push=True, env=runner_env)
    assert "tags are protected" in str(err.value) and "pre-receive hook declined" in str(err.value)
    assert calls == ["model"]  # one attempt


def test_an_unreachable_origin_is_an_error_naming_the_fetch(
    origin: Path, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = checkout(origin, "job", runner_env)
    git("remote", "set-url", "origin", str(origin.parent / "gone.git"), cwd=work)
    monkeypatch.chdir(work)
    with pytest.raises(registry.RegistryError) as err:
        record(["register", "model"], "model", push=True, env=runner_env)
    assert str(err.value).startswith("git fetch of origin's tags failed: ")
    assert "gone.git" in str(err.value)


def test_without_push_the_tag_stays_in_the_checkout(
    origin: Path, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = checkout(origin, "job", runner_env)
    monkeypatch.chdir(work)
    assert record(["register", "model"], "model", push=False, env=runner_env) == "model@v0.0.1"
    assert git("tag", "--list", cwd=work) == "model@v0.0.1"
    assert git("tag", "--list", cwd=origin) == ""


def test_tags_are_made_as_the_person_when_git_has_an_identity(
    origin: Path, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = checkout(origin, "job", runner_env)
    git("config", "user.name", "Dana", cwd=work)
    git("config", "user.email", "dana@example.com", cwd=work)
    monkeypatch.chdir(work)
    tag = record(["register", "model"], "model", push=False, env=runner_env)
    tagger = git("for-each-ref", "--format=%(taggername) %(taggeremail)", f"refs/tags/{tag}",
                 cwd=work)  # fmt: skip
    assert tagger == "Dana <dana@example.com>"


def test_a_failing_gto_command_is_an_error_naming_it(
    origin: Path, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(checkout(origin, "job", runner_env))
    args = ["assign", "model", "--stage", "production", "--version", "v9.9.9"]
    with pytest.raises(registry.RegistryError) as err:
        record(args, "model", push=False, env=runner_env)
    message = str(err.value)
    assert message.startswith("gto assign model --stage production --version v9.9.9 failed: ")
    assert len(message) > len("gto assign model --stage production --version v9.9.9 failed: ")


@pytest.mark.parametrize(
    ("script", "made"), [("", "no tag"), ("git tag a1; git tag a2", "['a1', 'a2']")]
)
def test_a_gto_command_must_make_exactly_one_tag(
    origin: Path, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, script: str,
    made: str,
) -> None:  # fmt: skip
    bin_dir = origin.parent / "bin"  # a GTO that succeeds, making no tag or two
    bin_dir.mkdir()
    (bin_dir / "gto").write_text(f"#!/bin/sh\n{script}\n")
    (bin_dir / "gto").chmod(0o755)
    env = {**runner_env, "PATH": f"{bin_dir}{os.pathsep}{runner_env['PATH']}"}
    monkeypatch.chdir(checkout(origin, "job", env))
    with pytest.raises(registry.RegistryError) as err:
        record(["register", "a"], "a", push=False, env=env)
    assert str(err.value) == f"gto register made {made}, expected one tag"


def test_the_job_token_reaches_origin_and_origin_judges_it(
    tmp_path: Path, origin: Path, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Origin served over HTTPS by the GitHub stand-in, which refuses a push without a token
    or with one that may only read: the tag lands only when the job's token is sent."""
    from tests.workflows.github import FakeGitHub

    (tmp_path / "github").mkdir()
    with FakeGitHub(tmp_path / "github", "acme/bikes") as github:
        github.add_token("ghs_writer", {"contents": "write"})
        github.add_token("ghs_reader", {"contents": "read"})
        bare = github.git_root / "acme" / "bikes.git"
        bare.parent.mkdir(parents=True)
        git("clone", "-q", "--bare", str(origin), str(bare), cwd=tmp_path)
        git("config", "http.receivepack", "true", cwd=bare)
        work = checkout(bare, "job", runner_env)
        git("remote", "set-url", "origin", f"https://{github.host}/acme/bikes.git", cwd=work)
        monkeypatch.chdir(work)
        job = {**runner_env, "GIT_SSL_CAINFO": str(github.ca_file), "GIT_TERMINAL_PROMPT": "0",
               "GITHUB_SERVER_URL": f"https://{github.host}"}  # fmt: skip
        with pytest.raises(registry.RegistryError, match=r"^git fetch of origin's tags failed"):
            record(["register", "model"], "model", push=True, env=job)  # private: no token
        with pytest.raises(registry.RegistryError) as refused:
            record(["register", "model"], "model", push=True,
                   env={**job, "GITHUB_TOKEN": "ghs_reader"})  # fmt: skip
        assert str(refused.value).startswith("git push of model@v0.0.1 failed: ")
        assert "Permission to acme/bikes.git denied to dana" in str(refused.value)
        assert git("tag", "--list", cwd=bare) == ""
        git("tag", "--delete", "model@v0.0.1", cwd=work)  # the refused attempt's
        tag = record(["register", "model"], "model", push=True,
                     env={**job, "GITHUB_TOKEN": "ghs_writer"})  # fmt: skip
        assert tag == "model@v0.0.1" and git("tag", "--list", cwd=bare) == tag
        assert "GIT_COMMITTER_NAME" not in git_environment(job, has_identity=True)


def test_a_rerun_reuses_the_version_its_commit_already_has(
    origin: Path, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Re-run failed jobs` after the image push failed: a fresh checkout of the same commit,
    whose version origin already holds (GTO 1.8 would raise VersionExistsForCommit)."""
    monkeypatch.chdir(checkout(origin, "attempt-1", runner_env))
    assert registry.register("model", "", "", True, runner_env) == ("model@v0.0.1", False)
    monkeypatch.chdir(checkout(origin, "attempt-2", runner_env))
    assert registry.register("model", "", "", True, runner_env) == ("model@v0.0.1", True)
    assert git("tag", "--list", cwd=origin) == "model@v0.0.1"  # one version, not two
    # asked for that very version, it is the same; asked for another, refused by name
    assert registry.register("model", "v0.0.1", "", True, runner_env) == ("model@v0.0.1", True)
    with pytest.raises(registry.RegistryError) as refused:
        registry.register("model", "v1.0.0", "", True, runner_env)
    assert str(refused.value) == ("HEAD is already model@v0.0.1: GTO registers one version "
                                  "per commit, so it cannot also be v1.0.0")  # fmt: skip


def test_a_version_made_but_not_pushed_is_pushed_on_the_rerun(
    origin: Path, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(checkout(origin, "job", runner_env))
    assert registry.register("model", "", "", False, runner_env) == ("model@v0.0.1", False)
    assert git("tag", "--list", cwd=origin) == ""
    assert registry.register("model", "", "", True, runner_env) == ("model@v0.0.1", True)
    assert git("tag", "--list", cwd=origin) == "model@v0.0.1"


def test_make_register_twice_says_it_reused_the_version(
    origin: Path, runner_env: dict[str, str], tmp_path: Path
) -> None:
    work = checkout(origin, "job", runner_env)
    outputs = tmp_path / "outputs"
    env = {**runner_env, "GITHUB_OUTPUT": str(outputs)}
    command = [sys.executable, "-m", "gitml", "registry", "register", "--name", "model", "--push"]
    first = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
    again = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert first.stdout.strip() == "registry: model@v0.0.1 (pushed to origin)"
    assert again.stdout.strip() == ("registry: HEAD is already model@v0.0.1 (an earlier attempt "
                                    "of this release registered it): reused")  # fmt: skip
    assert outputs.read_text() == "version=v0.0.1\nversion=v0.0.1\n"


def test_the_header_is_added_after_the_jobs_own_git_config(runner_env: dict[str, str]) -> None:
    job = {**runner_env, "GITHUB_TOKEN": "ghs_x", "GIT_CONFIG_COUNT": "1",
           "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"}  # fmt: skip
    env = git_environment(job, has_identity=True)
    assert env["GIT_CONFIG_COUNT"] == "2"
    assert (env["GIT_CONFIG_KEY_0"], env["GIT_CONFIG_VALUE_0"]) == ("safe.directory", "*")
    assert env["GIT_CONFIG_KEY_1"] == "http.https://github.com/.extraheader"  # github.com


def test_without_an_identity_git_author_and_committer_are_the_bot() -> None:
    env = git_environment({"HOME": "/nowhere"}, has_identity=False)
    assert {k: v for k, v in env.items() if k.startswith("GIT_")} == {
        "GIT_AUTHOR_NAME": BOT[0],
        "GIT_AUTHOR_EMAIL": BOT[1],
        "GIT_COMMITTER_NAME": BOT[0],
        "GIT_COMMITTER_EMAIL": BOT[1],
    }  # no token: no header either


@pytest.mark.parametrize(("repository", "image"), [("Acme/Bike-Demand", "ghcr.io/acme/bike-demand"),
                                                   ("team/proj", "ghcr.io/team/proj")])  # fmt: skip
def test_the_image_name_is_lowercase(repository: str, image: str) -> None:
    assert image_name({"GITHUB_REPOSITORY": repository}) == image


def test_the_image_goes_to_the_registry_named_in_the_environment() -> None:
    env = {"GITHUB_REPOSITORY": "team/proj", "REGISTRY": "registry.example:5000"}
    assert image_name(env) == "registry.example:5000/team/proj"


def test_an_image_name_needs_the_repository() -> None:
    with pytest.raises(registry.RegistryError) as err:
        image_name({"REGISTRY": "ghcr.io"})
    assert str(err.value) == "GITHUB_REPOSITORY is not set: the image is named after it"


def test_a_projects_pre_push_hook_never_blocks_a_tag_push(
    origin: Path, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = checkout(origin, "job", runner_env)
    hook = work / ".git" / "hooks" / "pre-push"  # as `make setup` installs dvc's outside CI
    hook.write_text("#!/bin/sh\necho 'dvc push: no credentials' >&2\nexit 1\n")
    hook.chmod(0o755)
    monkeypatch.chdir(work)
    assert record(["register", "model"], "model", push=True, env=runner_env) == "model@v0.0.1"
    assert git("tag", "--list", cwd=origin) == "model@v0.0.1"


def test_make_knows_the_registered_version_not_a_tag_name(
    origin: Path, runner_env: dict[str, str]
) -> None:
    work = checkout(origin, "job", runner_env)
    subprocess.run(["git", "-c", "user.name=D", "-c", "user.email=d@e", "tag", "-a",
                    "model@v1.2.3", "-m", "r"], cwd=work, check=True)  # fmt: skip
    result = subprocess.run(
        ["make", "-s", "-f", str(PROJ_ROOT / "Makefile"), "release-version", "MODEL_NAME=model",
         f"VENV={PROJ_ROOT / '.venv'}", "UV=/bin/true"],
        cwd=work, env={**runner_env, "GITHUB_REPOSITORY": "Team/Proj", "CI": "true"},
        capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "version=v1.2.3\nimage=ghcr.io/team/proj" in result.stdout


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-in `gto` and `docker` first on PATH (the real ones need the repository's tags and
    a registry); each records its arguments and prints what the real one would."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    answers = {
        "gto": json.dumps({"tag": "bike-demand#production#4", "event": "assignment",
                           "stage": "production", "version": "v0.0.2"}),
        "docker": json.dumps({"digest": "sha256:" + "ab" * 32, "mediaType": "x"}),
    }  # fmt: skip
    for name, answer in answers.items():
        script = bin_dir / name
        script.write_text(
            f"#!/bin/sh\necho \"{name} $*\" >> {calls}\ncat <<'JSON'\n{answer}\nJSON\n"
        )
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_from_tag_prints_stage_version_and_the_pushed_digest(
    stand_ins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    repo = tmp_path / "repo"  # the checkout holds the version tag the stage tag names
    identity = ["-c", "user.name=D", "-c", "user.email=d@e"]
    git("init", "-q", str(repo), cwd=tmp_path)
    git(*identity, "commit", "-q", "--allow-empty", "-m", "one", cwd=repo)
    git(*identity, "tag", "-a", "bike-demand@v0.0.2", "-m", "r", cwd=repo)
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(
        app, ["from-tag", "--tag", "bike-demand#production#4", "--name", "bike-demand",
              "--image", "ghcr.io/Team/gitml"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    commit = git("rev-parse", "HEAD", cwd=repo)
    expected = ["stage=production", "version=v0.0.2", f"commit={commit}",
                "image=ghcr.io/team/gitml", "digest=sha256:" + "ab" * 32]  # fmt: skip
    assert result.output.splitlines() == expected
    assert outputs.read_text().splitlines() == expected
    assert stand_ins.read_text().splitlines() == [
        "gto check-ref bike-demand#production#4 --json",
        "docker buildx imagetools inspect ghcr.io/team/gitml:v0.0.2 --format {{json .Manifest}}",
    ]


@pytest.mark.parametrize(
    ("said", "code"),
    [("gto: not a tag", 0),
     ("Unexpected error: . is not a git repository", 1)],  # gto outside a checkout
)  # fmt: skip
def test_from_tag_refuses_a_tag_that_is_not_a_stage_assignment(
    stand_ins: Path, tmp_path: Path, said: str, code: int
) -> None:
    (tmp_path / "bin" / "gto").write_text(f'#!/bin/sh\necho "{said}" >&2\nexit {code}\n')
    result = CliRunner(mix_stderr=False).invoke(
        app, ["from-tag", "--tag", "v1", "--name", "v1", "--image", "x"]
    )
    assert result.exit_code == 1
    # gto printed no JSON: no tag, no assignment
    assert result.stderr == f"registry: None does not assign one of {registry.STAGES} {said}\n"
    assert not stand_ins.exists()  # no digest asked (the stand-in gto records nothing)


@pytest.mark.parametrize(
    "tag", ["other-model#production#4", "bike-demand-v2#staging#1", "#production#1"]
)
def test_from_tag_refuses_another_models_stage_tag(stand_ins: Path, tag: str) -> None:
    # release.yml starts on any NAME#STAGE#N tag: the model's name is checked here
    result = CliRunner(mix_stderr=False).invoke(
        app, ["from-tag", "--tag", tag, "--name", "bike-demand", "--image", "x"]
    )
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        f"registry: {tag!r} is not a stage tag of the model 'bike-demand' (dvc.yaml artifacts)\n"
    )
    assert not stand_ins.exists()  # neither gto nor the registry asked


def test_a_failing_registry_lookup_is_an_error(stand_ins: Path, tmp_path: Path) -> None:
    (tmp_path / "bin" / "docker").write_text("#!/bin/sh\necho 'manifest unknown' >&2\nexit 1\n")
    with pytest.raises(registry.RegistryError) as err:
        image_digest("ghcr.io/team/gitml", "v9.9.9")
    assert str(err.value) == (
        "ghcr.io/team/gitml:v9.9.9 is not in the registry (manifest unknown): only versions "
        "that a release built can be deployed"
    )


@pytest.fixture
def job(origin: Path, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's process environment: a runner's, in a fresh checkout of origin."""
    for name, value in runner_env.items():
        monkeypatch.setenv(name, value)
    for name in ("GITHUB_TOKEN", "GIT_CONFIG_COUNT"):
        monkeypatch.delenv(name, raising=False)
    work = checkout(origin, "job", runner_env)
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize(("push", "said"), [(True, "registry: model@v0.0.1 (pushed to origin)\n"),
                                           (False, "registry: model@v0.0.1\n")])  # fmt: skip
def test_register_says_the_tag_it_made(job: Path, origin: Path, push: bool, said: str) -> None:
    args = ["register", "--name", "model", *(["--push"] if push else [])]
    result = CliRunner(mix_stderr=False).invoke(app, args)
    assert (result.exit_code, result.stdout, result.stderr) == (0, said, "")
    assert git("tag", "--list", cwd=origin) == ("model@v0.0.1" if push else "")


@pytest.mark.parametrize("push", [True, False])
def test_assign_says_the_stage_tag_it_made(job: Path, origin: Path, push: bool) -> None:
    registered = CliRunner(mix_stderr=False).invoke(app, ["register", "--name", "model", "--push"])
    assert registered.exit_code == 0, registered.stderr
    args = ["assign", "--name", "model", "--stage", "production", "--version", "v0.0.1"]
    result = CliRunner(mix_stderr=False).invoke(app, [*args, *(["--push"] if push else [])])
    said = "registry: model#production#1" + (" (pushed to origin)" if push else "")
    assert (result.exit_code, result.stdout, result.stderr) == (0, f"{said}\n", "")
    assert git("tag", "--list", "model#*", cwd=job) == "model#production#1"
    assert git("tag", "--list", "model#*", cwd=origin) == ("model#production#1" if push else "")


def test_assign_fails_with_the_reason_on_stderr(job: Path) -> None:
    result = CliRunner(mix_stderr=False).invoke(
        app, ["assign", "--name", "model", "--stage", "production", "--version", "v9.9.9"]
    )
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(
        "registry: gto assign model --stage production --version v9.9.9 --force failed: "
    )
