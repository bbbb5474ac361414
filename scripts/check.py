"""ferryman's checks, in the environment they run in: ``python scripts/check.py [pytest args...]``.

Runs, in this order, ``mypy`` (strict on ``ferryman/``, as ``[tool.mypy]`` in pyproject.toml
says), ``ruff check`` and ``pytest`` with the given arguments, each as ``python -m`` of this
interpreter, so the tools of the environment that runs this file are the ones used. Every check
runs even when one before it failed, so one run shows everything; the exit status is 0 only when
all passed. pytest collecting no tests counts as a failure. ``scripts/test.sh`` runs this file
after provisioning servers and a browser (``scripts/provision.sh``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_TESTS_COLLECTED = 5


def run(name: str, *args: str) -> int:
    print(f"[check] {name}: python -m {' '.join(args)}", flush=True)
    started = time.monotonic()
    code = subprocess.call([sys.executable, "-m", *args], cwd=ROOT)
    print(f"[check] {name}: exit {code} ({time.monotonic() - started:.1f}s)", flush=True)
    return code


def main(pytest_args: list[str]) -> int:
    results = {
        "mypy": run("mypy", "mypy", "ferryman"),
        "ruff": run("ruff", "ruff", "check", "--output-format=concise"),
        "pytest": run("pytest", "pytest", *pytest_args),
    }
    if results["pytest"] == NO_TESTS_COLLECTED:
        print("[check] pytest collected no tests; treating that as a failure", flush=True)
    failed = [name for name, code in results.items() if code != 0]
    print(f"[check] {'failed: ' + ', '.join(failed) if failed else 'all passed'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
