"""A registry on loopback for the session, holding the serving image as two releases pushed it:
two digests (the second release pushed as an OCI manifest: the same layers, another manifest,
so no second build is needed for a second digest)."""

from collections.abc import Iterator

import pytest

from gitml.release import image
from gitml.release.cluster import registry as oci


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    started = oci.start(tmp_path_factory.mktemp("registry"))
    yield started.address
    started.stop()


@pytest.fixture(scope="session")
def released(
    built_image: str, registry: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """version -> the image its release pushed, by digest (name@sha256:...)."""
    name = f"{registry}/acme/bike-demand"
    pushed = {"v1": f"{name}@{image.push(built_image, f'{name}:v1')}"}
    digest_file = tmp_path_factory.mktemp("push") / "digest"
    image.buildah(image.storage_driver(), "push", "--quiet", "--tls-verify=false", "--format",
                  "oci", "--digestfile", str(digest_file), built_image,
                  f"docker://{name}:v2")  # fmt: skip
    pushed["v2"] = f"{name}@{digest_file.read_text().strip()}"
    assert pushed["v1"] != pushed["v2"]
    return pushed
