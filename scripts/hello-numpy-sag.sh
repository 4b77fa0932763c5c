#!/usr/bin/env bash
# Set up (idempotent) and run hello-numpy-sag end to end: a private RabbitMQ node, the server and two
# client workers as separate processes, 10 Scatter-and-Gather rounds, then everything is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fl-broker poc apps/hello-numpy-sag --clients 2 --workspace workspace "$@"
