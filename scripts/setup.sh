#!/usr/bin/env bash
# Set up everything vault-relayer needs on a machine with only Python 3.11+ and Node 20:
# a virtualenv in .venv with the package (editable) and its dev tools, and the pinned npm tools
# (solc, anvil, cast) in node_modules. Re-running is cheap: each step is skipped while its inputs are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi

py_stamp=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$py_stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  echo "$py_stamp" > .venv/.setup-stamp
fi

npm_stamp=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
if [ "$(cat node_modules/.setup-stamp 2>/dev/null)" != "$npm_stamp" ]; then
  # `npm ci` rejects this lockfile: npm records only this platform's optional anvil/cast binary packages.
  # Every version is pinned exactly in package.json and checked against the lockfile's integrity hashes.
  npm install --no-audit --no-fund --loglevel=error
  echo "$npm_stamp" > node_modules/.setup-stamp
fi
# The npm packages ship anvil and cast as prebuilt binaries inside the registry package; fail early if not.
node_modules/.bin/anvil --version >/dev/null
