#!/bin/sh
# Initialises $PGDATA on first start (superuser $POSTGRES_USER with $POSTGRES_PASSWORD,
# database $POSTGRES_DB, password logins from any address), then runs postgres.
set -eu
: "${POSTGRES_USER:=notifyhub}" "${POSTGRES_DB:=notifyhub}"
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=peer \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "CREATE DATABASE \"$POSTGRES_DB\"" | postgres --single -D "$PGDATA" postgres >/dev/null
fi
exec postgres -c listen_addresses='*' -c unix_socket_directories=/tmp "$@"
