#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite. The suite starts its own private RabbitMQ node.
set -euo pipefail
cd "$(dirname "$0")/.."
# The suite covers the optional features too, so it installs their extras.
FL_EXTRAS="${FL_EXTRAS:-secagg,metrics,pt}" bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
