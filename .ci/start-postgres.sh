#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster on 127.0.0.1 for the tests marked `postgres`, and print its URL.
#
#   export NANOBANANA_TEST_POSTGRES_URL="$(.ci/start-postgres.sh)"
#   .venv/bin/python -m pytest -m postgres tests/
#
# Installs Debian's `postgresql` with apt-get when it is missing. Everything else goes to stderr; stdout
# carries only the URL. The cluster lives in a temporary folder; `<folder>/stop.sh` stops and removes it.
set -euo pipefail

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing postgresql (apt-get)..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
fi
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
PORT="${NANOBANANA_PG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
DIR="$(mktemp -d /tmp/nanobanana-pg.XXXXXX)"

# PostgreSQL refuses to run as root: run the server as the `postgres` user when we are root.
AS=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$DIR"
  AS=(runuser -u postgres --)
fi

"${AS[@]}" "$BIN/initdb" -D "$DIR/data" -U nanobanana --auth=trust -E UTF8 --no-sync >&2
"${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c synchronous_commit=off -c max_connections=200" \
  start >&2
"$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U nanobanana nanobanana_test >&2

cat >"$DIR/stop.sh" <<STOP
#!/usr/bin/env bash
${AS[*]} "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >&2 || true
rm -rf "$DIR"
STOP
chmod +x "$DIR/stop.sh"
echo "postgres on 127.0.0.1:$PORT; stop it with $DIR/stop.sh" >&2
echo "postgresql+psycopg://nanobanana@127.0.0.1:$PORT/nanobanana_test"
