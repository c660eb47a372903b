"""Releases: the image and its audit, GTO versions and stages, deploys, smoke checks."""
