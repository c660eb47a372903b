"""The model registry is Git: GTO tags name versions (`bike-demand@v1.2.0`) and stages
(`bike-demand#production#7`). This records them (GTO, then a push to origin that survives a
concurrent run taking the same number) and turns a moved stage tag into what to deploy.

On a runner there is no git identity and the checkout keeps no credentials: tags are made as
GitHub's bot, and pushed with the job's GITHUB_TOKEN (tags pushed with it start no workflow,
so recording a deploy never deploys again)."""

import base64
import json
import os
import subprocess
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from gitml.github import step_outputs

STAGES = ("staging", "production")
BOT = ("github-actions[bot]", "41898282+github-actions[bot]@users.noreply.github.com")
ATTEMPTS = 5


class RegistryError(RuntimeError):
    """A tag could not be recorded or pushed; the message says why."""


def git_environment(env: Mapping[str, str], has_identity: bool) -> dict[str, str]:
    """The environment for git and GTO: the bot's identity when git has none, and the job
    token as an HTTP header for origin (as actions/checkout passes it) when there is one."""
    out = dict(env)
    if not has_identity:
        for role in ("AUTHOR", "COMMITTER"):
            out[f"GIT_{role}_NAME"], out[f"GIT_{role}_EMAIL"] = BOT
    if env.get("GITHUB_TOKEN"):
        server = env.get("GITHUB_SERVER_URL") or "https://github.com"
        basic = base64.b64encode(f"x-access-token:{env['GITHUB_TOKEN']}".encode()).decode()
        count = int(env.get("GIT_CONFIG_COUNT", "0"))
        out.update({"GIT_CONFIG_COUNT": str(count + 1),
                    f"GIT_CONFIG_KEY_{count}": f"http.{server}/.extraheader",
                    f"GIT_CONFIG_VALUE_{count}": f"AUTHORIZATION: basic {basic}"})  # fmt: skip
    return out


def checkout_git_environment(env: Mapping[str, str]) -> dict[str, str]:
    """git_environment for the checkout in the working directory, asking git for an identity."""
    identity = bool(run(["git", "config", "user.email"], env).stdout.strip())
    return git_environment(env, identity)


def run(command: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, env=dict(env), check=False)


def tags(env: Mapping[str, str], pattern: str) -> set[str]:
    return set(run(["git", "tag", "--list", pattern], env).stdout.split())


def fetch_tags(name: str, env: Mapping[str, str]) -> None:
    fetched = run(["git", "fetch", "--quiet", "origin", f"refs/tags/{name}*:refs/tags/{name}*"],
                  env)  # fmt: skip
    if fetched.returncode != 0:
        raise RegistryError(f"git fetch of origin's tags failed: {fetched.stderr.strip()}")


def record(gto_args: list[str], name: str, push: bool, env: Mapping[str, str]) -> str:
    """Run a GTO command that makes one tag and, with `push`, push it to origin. When the push
    is refused because a concurrent run pushed the same tag first, fetch origin's tags and let
    GTO pick the next number: no registration or assignment is lost."""
    git_env = checkout_git_environment(env)
    for _ in range(ATTEMPTS):
        if push:  # GTO numbers from the tags it sees: see origin's, not only the checkout's
            fetch_tags(name, git_env)
        before = tags(git_env, f"{name}*")
        made = run(["gto", *gto_args], git_env)
        if made.returncode != 0:
            raise RegistryError(f"gto {' '.join(gto_args)} failed: {made.stderr.strip()}")
        new = sorted(tags(git_env, f"{name}*") - before)
        if len(new) != 1:
            raise RegistryError(f"gto {gto_args[0]} made {new or 'no tag'}, expected one tag")
        if not push:
            return new[0]
        # --no-verify: a project's pre-push hook (dvc push) is no business of a tag push
        pushed = run(["git", "push", "--no-verify", "origin", f"refs/tags/{new[0]}"], git_env)
        if pushed.returncode == 0:
            return new[0]
        # only a tag that origin already has means a concurrent run; a refusal by origin
        # (a protected tag, a hook: "[remote rejected]") or no access is not retried
        if "(already exists)" not in pushed.stderr:
            raise RegistryError(f"git push of {new[0]} failed: {pushed.stderr.strip()}")
        run(["git", "tag", "--delete", new[0]], git_env)
    raise RegistryError(f"{new[0]} was taken {ATTEMPTS} times by concurrent runs; run it again")


def version_at_head(name: str, env: Mapping[str, str]) -> str:
    """The version tag HEAD already has (GTO registers one version per commit), or ""."""
    found = run(["git", "tag", "--points-at", "HEAD", "--list", f"{name}@v*",
                 "--sort=-version:refname"], env).stdout.split()  # fmt: skip
    return found[0] if found else ""


def register(
    name: str, version: str, message: str, push: bool, env: Mapping[str, str]
) -> tuple[str, bool]:
    """Register HEAD as the next (or the given) version of `name`; or, when HEAD already has a
    version (origin's included, with `push`), reuse it: a re-run of a release that failed
    after registering (GTO 1.8 raises VersionExistsForCommit) then carries on with the same
    version, and a second registration of one commit never happens. (tag, whether reused)"""
    git_env = checkout_git_environment(env)
    if push:
        fetch_tags(name, git_env)
    existing = version_at_head(name, git_env)
    if existing and version and existing != f"{name}@{version}":
        raise RegistryError(f"HEAD is already {existing}: GTO registers one version per "
                            f"commit, so it cannot also be {version}")  # fmt: skip
    if existing:
        if push:  # made here by an earlier attempt that did not push it: push it now
            pushed = run(["git", "push", "--no-verify", "origin", f"refs/tags/{existing}"],
                         git_env)  # fmt: skip
            if pushed.returncode != 0:
                raise RegistryError(f"git push of {existing} failed: {pushed.stderr.strip()}")
        return existing, True
    args = ["register", name, *(["--version", version] if version else [])]
    return record([*args, *(["--message", message] if message else [])], name, push, env), False


def image_name(env: Mapping[str, str]) -> str:
    """The registry image of this repository: GHCR, lowercase (GitHub keeps the owner's case,
    image references must not have capitals)."""
    registry = env.get("REGISTRY") or "ghcr.io"
    if not env.get("GITHUB_REPOSITORY"):
        raise RegistryError("GITHUB_REPOSITORY is not set: the image is named after it")
    return f"{registry}/{env['GITHUB_REPOSITORY']}".lower()


def stage_assignment(check_ref: dict[str, Any]) -> tuple[str, str]:
    """(stage, version) of a GTO stage assignment, as `gto check-ref --json` describes it."""
    if check_ref.get("event") != "assignment" or check_ref.get("stage") not in STAGES:
        raise ValueError(f"{check_ref.get('tag')!r} does not assign one of {STAGES}")
    return str(check_ref["stage"]), str(check_ref["version"])


def checked_stage_tag(tag: str) -> tuple[str, str]:
    """(stage, version) of a pushed stage tag, as GTO reads it; ValueError says why not."""
    check = subprocess.run(["gto", "check-ref", tag, "--json"], capture_output=True, text=True,
                           check=False)  # fmt: skip
    try:
        return stage_assignment(json.loads(check.stdout or "{}"))
    except (ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{err} {check.stderr.strip()}") from None


def image_digest(image: str, version: str) -> str:
    """The digest the registry holds for IMAGE:VERSION (the image the release pushed)."""
    inspected = subprocess.run(
        ["docker", "buildx", "imagetools", "inspect", f"{image}:{version}",
         "--format", "{{json .Manifest}}"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    if inspected.returncode != 0:
        raise RegistryError(
            f"{image}:{version} is not in the registry ({inspected.stderr.strip()}): only "
            "versions that a release built can be deployed"
        )
    return str(json.loads(inspected.stdout)["digest"])


app = typer.Typer(add_completion=False)


def outputs(values: dict[str, str]) -> None:
    """Print KEY=VALUE lines, and append them to the step's outputs on GitHub."""
    typer.echo("\n".join(f"{key}={value}" for key, value in values.items()))
    step_outputs(values)


def recorded(gto_args: list[str], name: str, push: bool) -> None:
    try:
        tag = record(gto_args, name, push, os.environ)
    except RegistryError as err:
        typer.echo(f"registry: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"registry: {tag}" + (" (pushed to origin)" if push else ""))


@app.command("register")
def register_command(
    name: Annotated[str, typer.Option(help="Artifact name.")],
    version: Annotated[str, typer.Option(help="Version; default: GTO's next.")] = "",
    push: Annotated[bool, typer.Option(help="Push the tag to origin.")] = False,
    message: Annotated[
        str,
        typer.Option(envvar="REGISTER_MESSAGE", help="Annotate the tag (a gate override)."),
    ] = "",
) -> None:
    """Register HEAD as a version of NAME (a tag NAME@vX.Y.Z); reuse the one HEAD has."""
    try:
        tag, reused = register(name, version, message, push, os.environ)
    except RegistryError as err:
        typer.echo(f"registry: {err}", err=True)
        raise typer.Exit(1) from None
    if reused:
        typer.echo(f"registry: HEAD is already {tag} (an earlier attempt of this release "
                   "registered it): reused")  # fmt: skip
    else:
        typer.echo(f"registry: {tag}" + (" (pushed to origin)" if push else ""))
    step_outputs({"version": tag.split("@", 1)[1]})


@app.command("assign")
def assign_command(
    name: Annotated[str, typer.Option(help="Artifact name.")],
    stage: Annotated[str, typer.Option(help="staging or production.")],
    version: Annotated[str, typer.Option(help="The version now in STAGE.")],
    push: Annotated[bool, typer.Option(help="Push the tag to origin.")] = False,
) -> None:
    """Record that VERSION is in STAGE (a tag NAME#STAGE#N)."""
    # --force: a rollback assigns a stage to a version it held before, which GTO refuses
    # without it
    args = ["assign", name, "--stage", stage, "--version", version, "--force"]
    recorded(args, name, push)


@app.command("release-info")
def release_info(
    name: Annotated[str, typer.Option(help="Artifact name.")],
    version: Annotated[str, typer.Option(help="The version being released.")],
) -> None:
    """Print the version and the image name as step outputs."""
    try:
        outputs({"version": version, "image": image_name(os.environ)})
    except RegistryError as err:
        typer.echo(f"registry: {err}", err=True)
        raise typer.Exit(1) from None


@app.command("from-tag")
def from_tag(
    tag: Annotated[str, typer.Option(help="A GTO stage tag.")],
    name: Annotated[str, typer.Option(help="This repository's model: another's tag is refused.")],
    image: Annotated[str, typer.Option(help="Registry image; default: this repository's.")] = "",
) -> None:
    """Print stage, version, its commit, image and digest as GitHub step outputs."""
    # release.yml starts on any stage tag (`*#production#*`), whatever the model's name
    if tag.split("#")[0] != name:
        typer.echo(f"registry: {tag!r} is not a stage tag of the model {name!r} "
                   "(dvc.yaml artifacts)", err=True)  # fmt: skip
        raise typer.Exit(1)
    try:
        stage, version = checked_stage_tag(tag)
    except ValueError as err:
        typer.echo(f"registry: {err}", err=True)
        raise typer.Exit(1) from None
    version_tag = f"{tag.split('#')[0]}@{version}"
    commit = run(["git", "rev-list", "-n", "1", version_tag], os.environ)
    try:
        if commit.returncode != 0:
            raise RegistryError(f"the version tag {version_tag} is not in this checkout "
                                "(check out with fetch-depth: 0)")  # fmt: skip
        image = image.lower() or image_name(os.environ)
        digest = image_digest(image, version)
    except RegistryError as err:
        typer.echo(f"registry: {err}", err=True)
        raise typer.Exit(1) from None
    outputs({"stage": stage, "version": version, "commit": commit.stdout.strip(),
             "image": image, "digest": digest})  # fmt: skip


if __name__ == "__main__":
    app()
