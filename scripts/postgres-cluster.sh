#!/usr/bin/env bash
# A private PostgreSQL cluster for tests and benchmarks, in a folder of its own:
#   postgres-cluster.sh start DIR PORT [tls] [ADDRESS]
#                                        initdb into DIR/data, start on 127.0.0.1:PORT, create database "gateway"
#                                        (with tls: TLS on, with a self-signed certificate for localhost;
#                                        with ADDRESS: listening there too, trusting its subnet's clients)
#   postgres-cluster.sh stop DIR         stop it at once (the folder is left for the caller to remove)
#   postgres-cluster.sh kill DIR         SIGKILL the server (a crash), for the tests of an outage
# PostgreSQL refuses to run as root: as root, the cluster belongs to the user postgres.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "PostgreSQL is not installed (scripts/install-deps.sh test installs it)" >&2; exit 1; }
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
dir=$2
case "$1" in
  start)
    port=$3
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    if [ ! -d "$dir/data" ]; then
      as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1
    fi
    listen=127.0.0.1
    if [ -n "${5:-}" ]; then
      listen="127.0.0.1,$5"
      grep -q "^host all all samenet trust" "$dir/data/pg_hba.conf" || echo "host all all samenet trust" >>"$dir/data/pg_hba.conf"
    fi
    options="-p $port -k $dir -c listen_addresses=$listen -c fsync=off -c max_connections=200"
    if [ "${4:-}" = tls ]; then
      if [ ! -f "$dir/data/server.crt" ]; then
        as_owner openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
          -keyout "$dir/data/server.key" -out "$dir/data/server.crt" >"$dir/openssl.log" 2>&1
        chmod 600 "$dir/data/server.key"
      fi
      options="$options -c ssl=on"
    fi
    # fsync off: a test's database need not survive a power cut (it does survive a killed server).
    # The server must not hold the caller's stdout or stderr open (a reader would wait forever).
    # After a kill, the old server's children may hold its shared memory for a moment: try again.
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
      as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "$options" \
        start </dev/null >"$dir/pg_ctl.log" 2>&1 && break
      if [ $attempt = 10 ]; then cat "$dir/pg_ctl.log" "$dir/server.log" >&2 2>/dev/null || true; exit 1; fi
      sleep 0.5
    done
    as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qAt -c "SELECT 1 FROM pg_database WHERE datname = 'gateway'" | grep -q 1 \
      || as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres gateway
    ;;
  stop)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    ;;
  kill)
    # The server and its backends at once: a backend outlives its postmaster for a moment and
    # would still answer a query on its connection.
    pid=$(head -1 "$dir/data/postmaster.pid")
    kill -9 "$pid" $(pgrep -P "$pid") 2>/dev/null || true
    ;;
  *) echo "usage: $0 start DIR PORT [tls] [ADDRESS] | stop DIR | kill DIR" >&2; exit 64 ;;
esac
