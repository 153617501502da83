#!/usr/bin/env bash
# Installs the PraisonAI gateway peer (praisonai-bot 0.1.16, praisonaiagents 1.7.17, websockets<14)
# into $PEER_VENV (default $HOME/.cache/tether-peer/venv) if it is not there yet, and prints the
# venv's python. Exit code non-zero if PyPI cannot be reached or the install fails.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# run-python-gateway.sh owns the install recipe; `--help`-free path: source its ensure_venv.
eval "$(sed -n '/^ensure_venv() {/,/^}/p' "$HERE/run-python-gateway.sh")"
VENV="${PEER_VENV:-$HOME/.cache/tether-peer/venv}"
WHEELS="${PEER_WHEELS:-}"
PY="${PEER_PYTHON:-python3}"
ensure_venv
echo "$VENV/bin/python"
