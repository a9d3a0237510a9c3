"""Shared fixtures: real TimescaleDB (fix_db), real Mosquitto (fix_broker), the real ingest
service as a process (fix_ingest)."""

pytest_plugins = ["tests.fix_db", "tests.fix_broker", "tests.fix_ingest"]
