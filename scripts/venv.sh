#!/usr/bin/env bash
# Makes the virtual environment ferryman runs in, and installs ferryman into it:
#
#   bash scripts/venv.sh            # ferryman with the PostgreSQL and MariaDB/MySQL drivers
#   bash scripts/venv.sh test       # ferryman with another extra: .[test]
#
# The environment is $FERRYMAN_VENV (default: .venv in the checkout), made with
# `python3 -m venv` and kept for the next call. Debian and Ubuntu refuse
# `pip install` into the system's Python (PEP 668) and keep venv's pip in a
# package of their own: when python3 or its venv module is missing, Debian's
# python3 and python3-venv are installed first (as root, or with sudo).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${FERRYMAN_VENV:-$PWD/.venv}
SPEC=".[${1:-postgres,mysql}]"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore DEBIAN_FRONTEND=noninteractive

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "need root for: $*" >&2; return 1
    fi
}
usable() { [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }

if ! usable; then
    rm -rf "$VENV"
    if ! command -v python3 >/dev/null || ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        if ! command -v apt-get >/dev/null; then
            echo "python3 -m venv $VENV failed: install Python 3.11 or later with its venv module" >&2
            exit 1
        fi
        echo "installing Debian's python3 and python3-venv, which python3 -m venv needs"
        as_root apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 update -q
        as_root apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 install -y -q python3 python3-venv
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    fi
fi
echo "installing ferryman ($SPEC) into $VENV"
"$VENV/bin/python" -m pip install -q -e "$SPEC"
