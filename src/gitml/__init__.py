"""gitml: a Git-driven ML project template (DVC pipeline, CML reports, MLEM serving, evidently)."""
