#!/usr/bin/env bash
# The test command: set up what is missing (deploy/setup.sh), then the checks and the tests:
# ruff format --check, ruff check, mypy --strict, pytest (real Mosquitto, real TimescaleDB).
# Extra arguments go to pytest, e.g. deploy/check.sh tests/unit -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
echo "== ruff format --check"; .venv/bin/ruff format --check .
echo "== ruff check"; .venv/bin/ruff check .
echo "== mypy --strict"; .venv/bin/mypy
echo "== pytest"; exec .venv/bin/pytest "$@"
