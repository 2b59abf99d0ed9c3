#!/bin/sh
# Entry point of the hoplink images: refuse the placeholder control token of docker-compose.yml
# when the channel's control API is reachable beyond this host's loopback, then run the command.
#
# Inside a container the channel binds 0.0.0.0 (HOPLINK_HOST) so that the port can be published;
# who can reach it is decided by where compose publishes it, HOPLINK_PUBLISH (default 127.0.0.1).
set -eu
PLACEHOLDER=hoplink-change-me

is_loopback() {
    case "$1" in
        127.* | localhost | ::1 | "[::1]") return 0 ;;
        *) return 1 ;;
    esac
}

if [ "${HOPLINK_CONTROL_TOKEN:-}" = "$PLACEHOLDER" ] \
    && ! is_loopback "${HOPLINK_HOST:-127.0.0.1}" \
    && ! is_loopback "${HOPLINK_PUBLISH:-0.0.0.0}"; then
    echo "hoplink: refusing the placeholder HOPLINK_CONTROL_TOKEN=$PLACEHOLDER with the control" \
        "API published on ${HOPLINK_PUBLISH:-every interface} (HOPLINK_HOST=${HOPLINK_HOST:-}):" \
        "set your own token (HOPLINK_CONTROL_TOKEN=... docker compose up) or publish on" \
        "127.0.0.1" >&2
    exit 64
fi
exec "$@"
