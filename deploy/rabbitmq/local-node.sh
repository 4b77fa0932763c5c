#!/usr/bin/env bash
# Start/stop/query a private RabbitMQ node on loopback for development, tests and `fl-broker poc`.
#   deploy/rabbitmq/local-node.sh start|stop|status --dir DIR [--port N] [--fast (stop: kill it at once)]
#   deploy/rabbitmq/local-node.sh cluster start|stop --dir DIR [--nodes 3] [--fast]   (prints URL1,URL2,...)
# Installs Debian's rabbitmq-server first if it is missing (needs root). The node runs from
# /usr/lib/rabbitmq/bin directly with all its files under DIR; see fl_broker/ops/localnode.py.
set -euo pipefail

if [[ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "rabbitmq-server is not installed; run this script as root to install it" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends rabbitmq-server
    # The package starts a system node; the private node does not need it.
    if command -v systemctl >/dev/null && systemctl is-active --quiet rabbitmq-server 2>/dev/null; then
        systemctl stop rabbitmq-server || true
    fi
fi

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"
# The virtualenv of scripts/setup.sh has fl-broker's dependencies (a bare python3 may lack numpy).
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
if [[ "${1:-}" == cluster ]]; then
    shift
    exec "$python" -m fl_broker.ops.cluster "$@"
fi
exec "$python" -m fl_broker.ops.localnode "$@"
