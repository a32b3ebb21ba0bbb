#!/usr/bin/env bash
# Create .venv with a Python >= 3.12 and install bayeslmm with its test dependencies.
# Usage: bash scripts/setup.sh            (idempotent; re-running only updates the install)
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  local c
  for c in python3.12 python3.13 python3 python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  # pyenv installs that are not on PATH
  for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
    if [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
  py=$(find_python) || { echo "setup: no Python >= 3.12 found (pymc 6 and arviz 1 need it); install one and retry" >&2; exit 1; }
  echo "setup: creating .venv with $py ($("$py" --version))"
  rm -rf .venv
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
echo "setup: bayeslmm installed in .venv ($(.venv/bin/python --version))"
