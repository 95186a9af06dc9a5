#!/usr/bin/env bash
# Makes sure Docker Engine answers: installs what is missing of Debian's docker.io,
# debootstrap and docker-compose (as root, or with sudo without a password), and starts
# dockerd in the background when no daemon answers (log: /tmp/notifyhub-dockerd.log).
# Used by `make image-test` and `make compose-test`.
set -euo pipefail

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo -n)
else
    sudo=(false)
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
# compose_check.py drives `docker compose` (the plugin) or else Debian's docker-compose.
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 \
    || missing+=(docker-compose)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing Debian's ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # One retry: a mirror hiccup should not fail the whole run.
    for attempt in 1 2; do
        if "${sudo[@]}" apt-get update -q \
            && "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
            break
        fi
        [ "$attempt" -eq 2 ] && exit 1
        echo "==> apt-get failed; retrying in 10 s"
        sleep 10
    done
fi

if docker info >/dev/null 2>&1; then
    exit 0
fi
echo "==> starting dockerd (log: /tmp/notifyhub-dockerd.log)"
"${sudo[@]}" sh -c 'setsid dockerd >/tmp/notifyhub-dockerd.log 2>&1 < /dev/null &'
for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 1
done
echo "dockerd did not answer within 60 s; see /tmp/notifyhub-dockerd.log" >&2
exit 1
