#!/usr/bin/env bash
# Provisions what ferryman's tests need, then runs a command in it:
#
#   bash scripts/provision.sh COMMAND [ARGS...]       (scripts/test.sh runs the checks this way)
#
# 1. Makes (or reuses) a virtual environment, $FERRYMAN_TEST_VENV (default:
#    .venv in the checkout), and pip-installs the project with its test extra
#    into it, with scripts/venv.sh (which installs Debian's python3-venv when
#    venv needs it); the system's Python is left alone (a Debian or Ubuntu
#    python3 refuses pip installs: PEP 668).
# 2. Finds the database servers: PostgreSQL at $FERRYMAN_TEST_PG_URL
#    (default postgresql+psycopg://postgres@127.0.0.1:5432/test) and MariaDB/MySQL at
#    $FERRYMAN_TEST_MYSQL_URL (default mysql+pymysql://root@127.0.0.1:3306/test).
#    A server that does not answer a real query is replaced by one this script
#    starts itself (installing Debian's postgresql / mariadb-server if the
#    binaries are missing) in a temp directory, on loopback, on free ports; it is
#    stopped and deleted when the script exits.
# 3. Installs Debian's chromium if /usr/bin/chromium is missing.
# 4. Exports FERRYMAN_TEST_PG_URL / FERRYMAN_TEST_MYSQL_URL for the servers in use,
#    puts the environment's bin/ first on PATH, runs COMMAND and exits with its
#    status (the servers it started are stopped first).
#
# Why bash: this is machine provisioning, a sequence of system tools (apt-get,
# initdb and pg_ctl run as another user, mariadbd as a background process) whose
# lifetimes must end with the script however it exits (traps on EXIT, INT and
# TERM), and it has to run before any Python environment exists. What runs in the
# environment once it is ready (type checks, lint, pytest) is Python:
# scripts/check.py.
#
# Environment:
#   FERRYMAN_TEST_OWN_SERVERS=1   always start private servers on free ports,
#                                 even if the usual ones are reachable.
#   FERRYMAN_TEST_KEEP_LOG=1      keep the setup log even when everything passes.
#   FERRYMAN_TEST_VENV=DIR        the virtual environment to use (made if missing).
#
# Setup output goes to a log file (its path is printed); each step prints one
# line, and a failing step prints the tail of the log.
set -euo pipefail
(($#)) || { echo "usage: bash scripts/provision.sh COMMAND [ARGS...]" >&2; exit 2; }

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)

VENV=${FERRYMAN_TEST_VENV:-$REPO/.venv}
PY=$VENV/bin/python
DEFAULT_PG_URL="postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_MYSQL_URL="mysql+pymysql://root@127.0.0.1:3306/test"
OWN_SERVERS=${FERRYMAN_TEST_OWN_SERVERS:-0}

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export DEBIAN_FRONTEND=noninteractive

# /tmp rather than $TMPDIR: the postgres user must be able to reach it, and
# unix-socket paths must stay short.
LOG=$(mktemp /tmp/ferryman-test-setup.XXXXXX.log)
WORK=""          # temp dir for private servers (created on demand)
PG_BIN=""        # dir with initdb/pg_ctl of a private PostgreSQL
PG_DATA=""       # set once a private PostgreSQL was started
PG_RUNAS=()      # command prefix to run PostgreSQL tools as a non-root user
MY_PID=""        # pid of a private mariadbd
POLICY_RC_CREATED=0
T0=$EPOCHREALTIME

say() { printf '[provision] %s\n' "$*"; }
elapsed() { # elapsed seconds since $1 (an $EPOCHREALTIME value)
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'
}
log_tail() {
    echo "----- last 40 lines of $LOG -----"
    tail -n 40 "$LOG" || true
    echo "----- end of log -----"
}
die() {
    say "ERROR: $*"
    log_tail
    exit 1
}
# step "description" cmd args...  — runs cmd with output to $LOG, prints one line.
step() {
    local desc=$1 t rc
    shift
    t=$EPOCHREALTIME
    printf '\n===== %s: %s\n' "$desc" "$*" >>"$LOG"
    set +e
    ("$@") >>"$LOG" 2>&1
    rc=$?
    set -e
    if [[ $rc -ne 0 ]]; then
        say "$desc ... FAILED (exit $rc, $(elapsed "$t"))"
        log_tail
        exit 1
    fi
    say "$desc ... ok ($(elapsed "$t"))"
}

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo -n "$@"
    else echo "need root for: $*" >&2; return 1
    fi
}

# ---------------------------------------------------------------- cleanup
stop_postgres() {
    [[ -n $PG_DATA ]] || return 0
    "${PG_RUNAS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >>"$LOG" 2>&1 || {
        # last resort: kill the postmaster by the pid in its pid file
        local pid
        pid=$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)
        [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true
    }
    PG_DATA=""
}
stop_mariadb() {
    [[ -n $MY_PID ]] || return 0
    kill -TERM "$MY_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$MY_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$MY_PID" 2>/dev/null || true
    wait "$MY_PID" 2>/dev/null || true
    MY_PID=""
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local t=$EPOCHREALTIME stopped=""
    [[ -n $PG_DATA ]] && stopped+=" postgresql"
    [[ -n $MY_PID ]] && stopped+=" mariadb"
    stop_postgres
    stop_mariadb
    [[ -n $stopped ]] && say "stopped private servers:$stopped ($(elapsed "$t"))"
    [[ $POLICY_RC_CREATED -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
    [[ -n $WORK && -d $WORK ]] && rm -rf "$WORK"
    if [[ $rc -eq 0 && ${FERRYMAN_TEST_KEEP_LOG:-0} != 1 ]]; then
        rm -f "$LOG"
    else
        say "setup log kept: $LOG"
    fi
    say "total $(elapsed "$T0"), exit $rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "setup log: $LOG"

# ---------------------------------------------------------------- 1. venv and pip
step "virtual environment $VENV with .[test]" env FERRYMAN_VENV="$VENV" bash "$REPO/scripts/venv.sh" test
say "python: $($PY --version 2>&1)"

probe() { "$PY" "$REPO/tests/helpers.py" probe "$@"; }

# ---------------------------------------------------------------- 2. servers: reachable?
PG_URL=${FERRYMAN_TEST_PG_URL:-$DEFAULT_PG_URL}
MY_URL=${FERRYMAN_TEST_MYSQL_URL:-$DEFAULT_MYSQL_URL}
NEED_PG=1 NEED_MY=1
if [[ $OWN_SERVERS == 1 ]]; then
    say "FERRYMAN_TEST_OWN_SERVERS=1: starting private servers"
else
    t=$EPOCHREALTIME
    if v=$(probe "$PG_URL" --create-db 2>>"$LOG"); then
        NEED_PG=0
        say "postgresql reachable: ${v%% on *} ($(elapsed "$t"))"
    else
        say "postgresql not reachable at the configured URL; will start a private one"
    fi
    t=$EPOCHREALTIME
    if v=$(probe "$MY_URL" --create-db 2>>"$LOG"); then
        NEED_MY=0
        say "mysql reachable: $v ($(elapsed "$t"))"
    else
        say "mysql not reachable at the configured URL; will start a private one"
    fi
fi

# ---------------------------------------------------------------- 3. apt packages
find_pg_bin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    [[ -n $d && -x $d/initdb && -x $d/pg_ctl ]] && echo "$d"
}
find_mariadbd() {
    local c
    for c in /usr/sbin/mariadbd /usr/sbin/mysqld "$(command -v mariadbd || true)" "$(command -v mysqld || true)"; do
        [[ -n $c && -x $c ]] && { echo "$c"; return 0; }
    done
    return 1
}
find_install_db() {
    command -v mariadb-install-db || command -v mysql_install_db
}

APT_PKGS=()
[[ $NEED_PG == 1 ]] && ! find_pg_bin >/dev/null && APT_PKGS+=(postgresql)
[[ $NEED_MY == 1 ]] && ! { find_mariadbd && find_install_db; } >/dev/null && APT_PKGS+=(mariadb-server)
[[ -x /usr/bin/chromium ]] || APT_PKGS+=(chromium)

apt_install() {
    local apt=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
    as_root "${apt[@]}" update -q
    as_root "${apt[@]}" install -y -q "$@"
}
if ((${#APT_PKGS[@]})); then
    command -v apt-get >/dev/null || die "missing ${APT_PKGS[*]} and no apt-get here: install them yourself"
    # Don't let package scripts start system-wide services: this script runs
    # its own servers and must leave nothing running behind.
    if [[ ! -e /usr/sbin/policy-rc.d && $EUID -eq 0 ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    step "apt-get install ${APT_PKGS[*]}" apt_install "${APT_PKGS[@]}"
    if [[ $POLICY_RC_CREATED -eq 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=0
    fi
else
    say "apt packages: nothing to install"
fi
[[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium still missing after install"

# ---------------------------------------------------------------- 4. private servers
if [[ $NEED_PG == 1 || $NEED_MY == 1 ]]; then
    WORK=$(mktemp -d /tmp/ferryman-test.XXXXXX)
    chmod 755 "$WORK"
    read -r PG_PORT MY_PORT < <("$PY" "$REPO/tests/helpers.py" free-ports 2)
fi

# start_postgres / start_mariadb run in the main shell (so PG_DATA / MY_PID
# survive for cleanup) with errexit off, hence the explicit `|| return`.
start_postgres() {
    PG_BIN=$(find_pg_bin) || { echo "no /usr/lib/postgresql/*/bin/initdb"; return 1; }
    local user=""
    if [[ $EUID -eq 0 ]]; then
        # initdb refuses to run as root
        if id postgres >/dev/null 2>&1; then user=postgres; else user=nobody; fi
        if command -v runuser >/dev/null; then
            PG_RUNAS=(runuser -u "$user" --)
        else
            PG_RUNAS=(su -s /bin/sh "$user" -c '"$0" "$@"')
        fi
    fi
    mkdir -p "$WORK/pg" "$WORK/pgsock" || return
    if [[ -n $user ]]; then chown "$user" "$WORK/pg" "$WORK/pgsock" || return; fi
    (cd / && "${PG_RUNAS[@]}" "$PG_BIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust \
        -E UTF8 --locale=C --no-sync) || return
    PG_DATA="$WORK/pg/data"   # from here on, cleanup stops it
    (cd / && "${PG_RUNAS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$WORK/pg/server.log" -w -t 60 \
        -o "-p $PG_PORT -k $WORK/pgsock -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=200" \
        start) || { cat "$WORK/pg/server.log"; return 1; }
    probe "postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/test" --create-db --wait 30
}

start_mariadb() {
    local mariadbd install_db userarg=() deadline
    mariadbd=$(find_mariadbd) || { echo "no mariadbd/mysqld"; return 1; }
    install_db=$(find_install_db) || { echo "no mariadb-install-db/mysql_install_db"; return 1; }
    [[ $EUID -eq 0 ]] && userarg=(--user=root)
    mkdir -p "$WORK/my" || return
    "$install_db" --no-defaults --datadir="$WORK/my/data" "${userarg[@]}" \
        --auth-root-authentication-method=normal --skip-test-db || return
    echo "starting $mariadbd on 127.0.0.1:$MY_PORT"
    "$mariadbd" --no-defaults --datadir="$WORK/my/data" "${userarg[@]}" \
        --socket="$WORK/my/mysqld.sock" --pid-file="$WORK/my/mysqld.pid" \
        --log-error="$WORK/my/server.log" --tmpdir="$WORK/my" \
        --port="$MY_PORT" --bind-address=127.0.0.1 \
        --innodb-flush-log-at-trx-commit=2 --max-connections=300 \
        </dev/null >>"$WORK/my/server.log" 2>&1 &
    MY_PID=$!   # from here on, cleanup stops it
    echo "mariadbd pid $MY_PID"
    deadline=$((SECONDS + 90))
    while ((SECONDS < deadline)); do
        kill -0 "$MY_PID" 2>/dev/null || { echo "mariadbd exited"; cat "$WORK/my/server.log"; return 1; }
        # the TCP port opens only once InnoDB is up; probe once it does
        if "$PY" -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' \
            "$MY_PORT" 2>/dev/null; then
            probe "mysql+pymysql://root@127.0.0.1:$MY_PORT/test" --create-db --wait 10 && return 0
            break
        fi
        sleep 0.2
    done
    echo "mariadbd did not answer within 90s"
    cat "$WORK/my/server.log"
    return 1
}

# Like step, but runs in the main shell (so variables set survive).
run_in_shell_step() {
    local desc=$1 t rc
    shift
    t=$EPOCHREALTIME
    printf '\n===== %s\n' "$desc" >>"$LOG"
    set +e
    "$@" >>"$LOG" 2>&1
    rc=$?
    set -e
    if [[ $rc -ne 0 ]]; then
        say "$desc ... FAILED ($(elapsed "$t"))"
        log_tail
        exit 1
    fi
    say "$desc ... ok ($(elapsed "$t"))"
}
if [[ $NEED_PG == 1 ]]; then
    run_in_shell_step "start private postgresql on 127.0.0.1:$PG_PORT" start_postgres
    PG_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/test"
fi
if [[ $NEED_MY == 1 ]]; then
    run_in_shell_step "start private mariadb on 127.0.0.1:$MY_PORT" start_mariadb
    MY_URL="mysql+pymysql://root@127.0.0.1:$MY_PORT/test"
fi

export FERRYMAN_TEST_PG_URL=$PG_URL FERRYMAN_TEST_MYSQL_URL=$MY_URL
say "FERRYMAN_TEST_PG_URL=$FERRYMAN_TEST_PG_URL"
say "FERRYMAN_TEST_MYSQL_URL=$FERRYMAN_TEST_MYSQL_URL"
say "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo '?')"
say "setup done in $(elapsed "$T0"); running: $*"

# ---------------------------------------------------------------- 5. the command
export PATH="$VENV/bin:$PATH"
t=$EPOCHREALTIME
set +e
"$@"
rc=$?
set -e
say "$1 exit $rc ($(elapsed "$t"))"
exit "$rc"
