#!/usr/bin/env bash
# Makes sure the PostgreSQL server binaries (initdb, pg_ctl, postgres) are installed, for
# the PostgreSQL store's tests and benchmarks. They start throw-away clusters of their own
# (tests/stores/pg_support.py); nothing is started here. Installs only when missing.
set -euo pipefail

found() {
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null
}

if found; then
  echo "postgresql: server binaries present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "postgresql: server binaries missing; run as root: apt-get install -y postgresql" >&2
  exit 1
fi
echo "postgresql: installing Debian's postgresql package"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
found || { echo "postgresql: installed, but initdb is still not found" >&2; exit 1; }
# The package may start a cluster of its own; the tests use none of it.
echo "postgresql: server binaries installed"
