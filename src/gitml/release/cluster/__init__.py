"""A local cluster that runs what is applied: the release's Kubernetes objects under podman,
images pulled by digest from a real registry on loopback (docs/releases.md says what it proves
and what only a real API server can)."""
