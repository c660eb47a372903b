"""The container registry's side, for the stand-in Docker actions and the `docker` stand-in.

Pushed tags are kept in $GITML_RECORDINGS/registry.json ({"name:tag": digest}); a reference
with capitals is refused as Docker refuses it ("repository name must be lowercase"). A push
first asks GHCR's token service (served by the GitHub stand-in) whether the credentials that
`docker login` stored may push that image: a job token needs `packages: write`, and an
organisation's package policy can refuse it, as on GHCR."""

import base64
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

REGISTRY = Path(os.environ["GITML_RECORDINGS"]) / "registry.json"


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


def build_push() -> None:
    context = Path(os.environ["CONTEXT"])
    for needed in ("requirements.txt", "wheels", "dist", "model"):
        if not (context / needed).exists():
            sys.exit(f"build context {context} lacks {needed}: run make image-context first")
    if not Path(os.environ["FILE"]).is_file():
        sys.exit(f"no Dockerfile at {os.environ['FILE']}")
    tags = [t for t in os.environ["TAGS"].splitlines() if t.strip()]
    for tag in tags:
        check_reference(tag)
    content = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        content.update(path.read_bytes())
    content.update(os.environ["BUILD_ARGS"].encode())
    digest = f"sha256:{content.hexdigest()}"
    if os.environ.get("PUSH") == "true":
        for tag in tags:
            authorize_push(tag)
        pushed = json.loads(REGISTRY.read_text()) if REGISTRY.exists() else {}
        pushed.update({tag: digest for tag in tags})
        REGISTRY.write_text(json.dumps(pushed, indent=1))
    output("digest", digest)


def inspect(ref: str) -> None:
    check_reference(ref)
    pushed = json.loads(REGISTRY.read_text()) if REGISTRY.exists() else {}
    if ref not in pushed:
        sys.exit(f"ERROR: {ref}: not found")
    print(
        json.dumps({"digest": pushed[ref], "mediaType": "application/vnd.oci.image.index.v1+json"})
    )


if __name__ == "__main__":
    {"metadata": metadata, "build-push": build_push, "login": login}.get(
        sys.argv[1], lambda: inspect(sys.argv[2])
    )()
