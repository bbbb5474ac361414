#!/usr/bin/env bash
# ferryman's one test command (CI runs it through .ci/run):
#
#   bash scripts/test.sh [pytest args...]
#
# Provisions the environment, servers and browser the tests need (scripts/provision.sh),
# then runs the checks in it (scripts/check.py): mypy --strict on ferryman/, ruff, and
# pytest with the given arguments. Exits non-zero when any of them fails.
#
# Without provisioning, in an environment that has the test extra installed:
#
#   python scripts/check.py -m "not postgres and not mysql and not browser"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec bash scripts/provision.sh python scripts/check.py "$@"
