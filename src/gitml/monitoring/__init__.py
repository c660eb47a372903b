"""Monitoring: production traffic replayed, drift and quality reports, logs fetched, alarms."""
