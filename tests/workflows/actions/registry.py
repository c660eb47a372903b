"""The Docker actions' side, for the stand-in docker/metadata-action and
docker/build-push-action: the image is really built from the Dockerfile and pushed, by buildah as
root (on GitHub the Docker daemon builds as root; here the runner's passwordless sudo, as GitHub
grants it), to the registry the harness runs on loopback (GITML_REGISTRY) standing in for ghcr.io.
A reference with capitals is refused as Docker refuses it ("repository name must be lowercase").
A push first asks GHCR's token service (served by the GitHub stand-in) whether the credentials
that `docker login` stored may push that image: a job token needs `packages: write`, and an
organisation's package policy can refuse it, as on GHCR.
"""

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

GHCR = "ghcr.io/"


def output(name: str, value: str) -> None:
    with open(os.environ["GITHUB_OUTPUT"], "a") as out:
        if "\n" in value:
            out.write(f"{name}<<EOF_{name}\n{value}\nEOF_{name}\n")
        else:
            out.write(f"{name}={value}\n")


def check_reference(ref: str) -> None:
    name = ref.split("@")[0].rsplit(":", 1)[0] if "/" in ref else ref
    if name != name.lower():
        sys.exit(f"invalid reference format: repository name ({name}) must be lowercase")


DOCKER_CONFIG = Path(os.environ.get("HOME", "/nonexistent")) / ".docker" / "config.json"


def login() -> None:
    user, password = os.environ["USERNAME"], os.environ["PASSWORD"]
    if not user or not password:
        sys.exit("::error::username and password required")
    config = json.loads(DOCKER_CONFIG.read_text()) if DOCKER_CONFIG.exists() else {}
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config.setdefault("auths", {})[os.environ["REGISTRY"] or "docker.io"] = {"auth": auth}
    DOCKER_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    DOCKER_CONFIG.write_text(json.dumps(config))
    print(f"Login Succeeded ({os.environ['REGISTRY']})")


def authorize_push(tag: str) -> None:
    """GHCR's answer to `docker push`: a token for repository:NAME:push, or a refusal."""
    registry, name = tag.split("/", 1)[0], tag.split("/", 1)[1].rsplit(":", 1)[0]
    auths = json.loads(DOCKER_CONFIG.read_text())["auths"] if DOCKER_CONFIG.exists() else {}
    if registry not in auths:
        sys.exit(f"ERROR: failed to push {tag}: unauthorized: authentication required")
    scope = quote(f"repository:{name}:pull,push")
    request = urllib.request.Request(
        f"{os.environ['GITHUB_SERVER_URL']}/token?service={registry}&scope={scope}",
        headers={"Authorization": f"Basic {auths[registry]['auth']}"},
    )
    try:
        urllib.request.urlopen(request, timeout=30).close()
    except urllib.error.HTTPError as err:
        reason = json.loads(err.read() or b"{}").get("errors", [{}])[0].get("message", "")
        sys.exit(f"ERROR: failed to push {tag}: denied: {reason}")


def metadata() -> None:
    images = [i.strip().lower() for i in os.environ["IMAGES"].splitlines() if i.strip()]
    tags = []
    for spec in filter(None, (t.strip() for t in os.environ["TAGS"].splitlines())):
        fields = dict(part.split("=", 1) for part in spec.split(","))
        value = (
            fields.get("value") if fields["type"] == "raw" else f"sha-{os.environ['GITHUB_SHA']}"
        )
        tags += [f"{image}:{value}" for image in images]
    output("tags", "\n".join(tags))
    output("labels", f"org.opencontainers.image.revision={os.environ['GITHUB_SHA']}")


def as_root(*command: str) -> str:
    sudo = [] if os.getuid() == 0 else ["sudo", "-n"]
    # root's bytecode never lands in the runner's checkout
    command = ("env", "PYTHONDONTWRITEBYTECODE=1", *command)
    done = subprocess.run([*sudo, *command], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[2:7])} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done.stdout


def build_push() -> None:
    context = Path(os.environ["CONTEXT"])
    for needed in ("requirements.txt", "wheels", "dist", "model"):
        if not (context / needed).exists():
            sys.exit(f"build context {context} lacks {needed}: run make image-context first")
    if not Path(os.environ["FILE"]).is_file():
        sys.exit(f"no Dockerfile at {os.environ['FILE']}")
    tags = [t.strip() for t in os.environ["TAGS"].splitlines() if t.strip()]
    for tag in tags:
        check_reference(tag)
        if not tag.startswith(GHCR):
            sys.exit(f"{tag}: the harness's registry stands in for {GHCR} only")
    # the checkout's own environment (make image-context made it) runs gitml's image commands
    gitml = [str(Path(".venv/bin/python").absolute()), "-m", "gitml", "image"]
    build_args = [a for line in os.environ["BUILD_ARGS"].splitlines() if line.strip()
                  for a in ("--build-arg", line.strip())]  # fmt: skip
    # root's image store is the machine's: another fork's job (make test runs the harness in two
    # processes) may build the same ghcr.io name meanwhile, so this build gets a name of its own
    built = f"localhost/gitml-harness-build:{os.environ.get('GITHUB_RUN_ID', '0')}-{os.getpid()}"
    as_root(*gitml, "build", "--context", str(context.resolve()), "--file",
            str(Path(os.environ["FILE"]).resolve()), "--tag", built, *build_args)  # fmt: skip
    digests = set()
    if os.environ.get("PUSH") == "true":
        for tag in tags:
            authorize_push(tag)
        for tag in tags:
            destination = f"{os.environ['GITML_REGISTRY']}/{tag.removeprefix(GHCR)}"
            digests.add(as_root(*gitml, "push", "--tag", built, "--destination",
                                destination).split()[-1])  # fmt: skip
    if len(digests) > 1:
        sys.exit(f"the tags of one image got different digests: {sorted(digests)}")
    output("digest", digests.pop() if digests else "")


if __name__ == "__main__":
    {"metadata": metadata, "build-push": build_push, "login": login}[sys.argv[1]]()
