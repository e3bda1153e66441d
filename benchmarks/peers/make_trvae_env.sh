#!/usr/bin/env bash
# Create the virtual environment in which benchmarks/peers.py runs scArches TRVAE.
# Usage: bash benchmarks/peers/make_trvae_env.sh [VENV]   (default: benchmarks/.venv-trvae)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-$here/../.venv-trvae}"
python="${PYTHON:-python3.11}"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
# the CPU torch wheel first, so that the rest does not pull a CUDA build
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q -r "$here/requirements-trvae.txt"
"$venv/bin/python" -c "import scarches; print('scarches ready in $venv')"
