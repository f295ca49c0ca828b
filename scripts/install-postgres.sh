#!/usr/bin/env bash
# Installs what the platform needs from PostgreSQL: the server binaries (initdb, pg_ctl),
# the server headers and the pgvector extension. Idempotent: every step checks first.
# Run as root or with sudo. On Debian 12 pgvector has no binary package for PostgreSQL 15,
# so it is built from Debian's own source package (trixie deb-src).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-postgres: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

updated=0
apt_update() {
  if [ "$updated" = 0 ]; then $SUDO apt-get update -qq; updated=1; fi
}
apt_install() {
  apt_update
  $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The highest PostgreSQL version whose server binaries are installed. A directory under
# /usr/lib/postgresql can hold the client alone (psql, pg_config), which is not enough.
pg_version() {
  local v
  for v in $(ls /usr/lib/postgresql 2>/dev/null | sort -V -r); do
    if [ -x "/usr/lib/postgresql/$v/bin/initdb" ]; then echo "$v"; return; fi
  done
}

# 1. Server binaries.
if [ -z "$(pg_version)" ]; then
  echo "install-postgres: installing the PostgreSQL server"
  apt_install postgresql postgresql-contrib
fi
PGVER="$(pg_version)"
[ -n "$PGVER" ] || { echo "install-postgres: no PostgreSQL server after install" >&2; exit 1; }
PG_CONFIG="/usr/lib/postgresql/$PGVER/bin/pg_config"

# 2. Server headers. pg_config comes with the client package, so its presence says nothing
# about them: look for postgres.h where pg_config says the server headers live.
have_headers() {
  [ -x "$PG_CONFIG" ] && [ -f "$("$PG_CONFIG" --includedir-server)/postgres.h" ]
}
if ! have_headers; then
  echo "install-postgres: installing the PostgreSQL $PGVER server headers"
  apt_install "postgresql-server-dev-$PGVER"
  have_headers || { echo "install-postgres: server headers still missing after install" >&2; exit 1; }
fi

# 3. pgvector.
have_vector() {
  [ -f "$("$PG_CONFIG" --sharedir)/extension/vector.control" ] &&
    [ -f "$("$PG_CONFIG" --pkglibdir)/vector.so" ]
}
if have_vector; then
  echo "install-postgres: PostgreSQL $PGVER with pgvector is present"
  exit 0
fi

apt_update
if apt-cache show "postgresql-$PGVER-pgvector" >/dev/null 2>&1; then
  echo "install-postgres: installing postgresql-$PGVER-pgvector"
  apt_install "postgresql-$PGVER-pgvector"
else
  echo "install-postgres: building pgvector from Debian's source package for PostgreSQL $PGVER"
  apt_install "postgresql-server-dev-$PGVER" build-essential dpkg-dev ca-certificates
  src_list=/etc/apt/sources.list.d/pgvector-trixie-src.sources
  if [ ! -f "$src_list" ]; then
    printf '%s\n' \
      'Types: deb-src' \
      'URIs: http://deb.debian.org/debian' \
      'Suites: trixie' \
      'Components: main' \
      'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' | $SUDO tee "$src_list" >/dev/null
    $SUDO apt-get update -qq
  fi
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (
    cd "$work"
    apt-get source -qq pgvector >/dev/null 2>&1 || apt-get source pgvector
    cd "$(find . -maxdepth 1 -type d -name 'pgvector-*' | head -n 1)"
    # OPTFLAGS without -march=native: the build must run on any machine of this kind.
    make -s PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null
    $SUDO make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
  )
fi

have_vector || { echo "install-postgres: pgvector still missing after install" >&2; exit 1; }
echo "install-postgres: PostgreSQL $PGVER with pgvector installed"
