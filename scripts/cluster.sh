# Sourced by scripts/demo, scripts/test and benches/run: throwaway
# PostgreSQL clusters under target/, run by a non-root user (Postgres
# refuses to run as root). Set CLUSTER_DIR and CLUSTER_PORT before use.

PG_MAJOR=${PG_MAJOR:-15}
PG_BINDIR=${PG_BINDIR:-$(/usr/lib/postgresql/$PG_MAJOR/bin/pg_config --bindir)}
# the user clusters run as: ourselves, or `postgres` when we are root
if [ "$(id -u)" -eq 0 ]; then PG_RUNAS=${PG_RUNAS:-postgres}; else PG_RUNAS=${PG_RUNAS:-$(id -un)}; fi

as_pg() {
  if [ "$(id -un)" = "$PG_RUNAS" ]; then "$@"; else runuser -u "$PG_RUNAS" -- "$@"; fi
}

# Makes every directory from / to $1 traversable by the cluster user.
open_path_for_pg() {
  local d
  d=$(readlink -f "$1")
  while [ "$d" != "/" ]; do
    if [ "$(id -u)" -eq 0 ] && ! runuser -u "$PG_RUNAS" -- test -x "$d" 2>/dev/null; then chmod o+x "$d"; fi
    d=$(dirname "$d")
  done
}

# cluster_init DIR PORT [extra postgresql.conf lines...]: a fresh cluster
# with pg_warden preloaded and a key file generated for it.
cluster_init() {
  local dir port=$2
  dir=$(realpath -m "$1"); shift 2
  cluster_stop "$dir" 2>/dev/null || true
  rm -rf "$dir"
  mkdir -p "$dir"
  open_path_for_pg "$(dirname "$dir")"
  [ "$(id -u)" -eq 0 ] && chown "$PG_RUNAS" "$dir"
  as_pg "$PG_BINDIR/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }
  # a fresh root key for this cluster (used by the keyring subsystem)
  as_pg sh -c "umask 077; printf 'v1:%s\n' \$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') > '$dir/data/warden.key'"
  {
    echo "port = $port"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$dir'"
    echo "shared_preload_libraries = 'pg_warden'"
    echo "warden.key_file = 'warden.key'"
    echo "max_worker_processes = 16"
    echo "logging_collector = off"
    echo "log_line_prefix = '%m [%p] %b '"
    for line in "$@"; do echo "$line"; done
  } | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
}

cluster_start() {
  local dir
  dir=$(realpath -m "$1")
  # RUST_BACKTRACE would put Rust backtraces into error details
  as_pg env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { tail -50 "$dir/server.log" >&2; return 1; }
}

cluster_stop() {
  local dir
  dir=$(realpath -m "$1")
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_pg "$PG_BINDIR/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
}

cluster_psql() {
  local dir port=$2
  dir=$(realpath -m "$1"); shift 2
  "$PG_BINDIR/psql" -X -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres "$@"
}
