"""Shared fixtures: real TimescaleDB (fix_db), real Mosquitto (fix_broker), the real ingest
service as a process (fix_ingest).

Hypothesis runs without its timing checks (generation speed, per-example deadline): on a
shared 2-core machine a stall of a second or two says nothing about the code, and failed a
clean-clone CI run once (`Input generation is slow`). Properties are still checked in full.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("tungku", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("tungku")

pytest_plugins = ["tests.fix_db", "tests.fix_broker", "tests.fix_ingest", "tests.fix_api"]
