"""Serving: the MLEM-packaged model, its HTTP server, metrics, prediction log, batch predict."""
