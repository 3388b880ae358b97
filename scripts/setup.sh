#!/usr/bin/env bash
# Create .venv and install the package (editable) with its training and development extras.
# Dependencies are declared once, in pyproject.toml (CPU PyTorch; see README).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[train,dev]"
