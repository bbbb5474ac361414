#!/usr/bin/env bash
# Run ferryman's benchmarks: bash bench/run.sh [--size N] [--quick] [any python -m bench option]
# Installs ferryman (editable) and the baselines, then runs `python3 -m bench` from the repo root.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e . -r bench/requirements.txt
exec python3 -m bench "$@"
