#!/usr/bin/env bash
# Idempotent set-up of a development machine: Debian's rabbitmq-server (if missing) and a virtualenv in
# .venv with fl-broker installed in editable mode, with its dev/test extra and the optional extras named in
# FL_EXTRAS (comma-separated, e.g. FL_EXTRAS=secagg,pt).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    echo "setup: installing Debian's rabbitmq-server" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
fi
# Debian starts a system-wide node on install where it can; fl-broker runs its own private node instead.

# Tools some tests drive: tmux (the admin console in a real terminal), openssl (a throwaway CA for the TLS
# test), systemd-analyze (verifying the units).
missing=""
command -v tmux >/dev/null || missing="$missing tmux"
command -v openssl >/dev/null || missing="$missing openssl"
command -v systemd-analyze >/dev/null || missing="$missing systemd"
if [ -n "$missing" ]; then
    echo "setup: installing$missing" >&2
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
        # Debian's own python3 ships venv separately
        echo "setup: installing python3-venv" >&2
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
        rm -rf .venv
        "$PYTHON" -m venv .venv
    fi
fi
EXTRAS="dev${FL_EXTRAS:+,$FL_EXTRAS}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]"
echo "setup: ready (.venv)" >&2
