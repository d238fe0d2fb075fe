#!/usr/bin/env bash
# Set up everything vault-relayer needs on a machine with only Python 3.11+ and Node 20:
# a virtualenv in .venv with the package (editable) and its dev tools, the pinned npm packages in
# node_modules (solc, anvil, cast; viem and ethers for the signing interop tests), and the PostgreSQL server
# binaries the stores' tests start a cluster from (Debian's `postgresql` package, installed when root), and
# the Chromium the console's browser test drives (Debian's `chromium`, installed when root).
# It leaves the checkout as it found it (`npm ci` never rewrites package-lock.json), and a re-run is a no-op:
# each step is skipped while its inputs are unchanged.
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

# The stamp covers what decides the installed tree: both npm files (which `npm ci` only reads, so the stamp
# taken before the install still holds after it) and the Node version and platform (which pick the optional
# prebuilt anvil/cast binary package).
npm_stamp=$({ cat package.json package-lock.json; node -p 'process.version + process.platform + process.arch'; } \
  | sha256sum | cut -d' ' -f1)
# `npm ls` (read-only, under a second) also catches a package removed by hand since the last install.
if [ "$(cat node_modules/.setup-stamp 2>/dev/null)" != "$npm_stamp" ] || ! npm ls --depth=0 >/dev/null 2>&1; then
  # The lockfile lists every platform's optional anvil/cast binary package, so `npm ci` installs exactly it
  # (integrity-checked) and fails, rather than silently re-resolving, if package.json and it disagree.
  npm ci --no-audit --no-fund --loglevel=error
  echo "$npm_stamp" > node_modules/.setup-stamp
fi
# The npm packages ship anvil and cast as prebuilt binaries inside the registry package; fail early if not.
node_modules/.bin/anvil --version >/dev/null

# The stores' tests run on a real PostgreSQL server. tests/pg.py starts a throwaway cluster of its own from the
# server binaries (initdb, pg_ctl), so only the binaries are needed: the cluster the package creates is never
# used and need not run. As root the server runs as the `postgres` user (initdb refuses root), via runuser.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    # Debian's package, from the package lists already on the machine; refreshing them (slow, and a change to
    # the machine beyond this one package) only when they are too old to have it.
    export DEBIAN_FRONTEND=noninteractive
    install_postgresql() { apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }
    install_postgresql || { apt-get update -qq && install_postgresql; }
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null
  else
    echo "setup.sh: the PostgreSQL server is not installed; install the Debian package 'postgresql'" \
      "(as root: apt-get install --no-install-recommends postgresql), then run this again" >&2
    exit 1
  fi
fi
# The operator console's browser test drives Debian's Chromium (the `playwright` pip package only talks to it;
# it never downloads a browser of its own). Installed like PostgreSQL: as root, only when missing.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    install_chromium() { apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
    install_chromium || { apt-get update -qq && install_chromium; }
    /usr/bin/chromium --version >/dev/null
  else
    echo "setup.sh: Chromium is not installed; install the Debian package 'chromium'" \
      "(as root: apt-get install --no-install-recommends chromium), then run this again" >&2
    exit 1
  fi
fi
if [ "$(id -u)" -eq 0 ] && ! command -v runuser >/dev/null; then
  echo "setup.sh: running as root, the tests start PostgreSQL through runuser; install 'util-linux'" >&2
  exit 1
fi
