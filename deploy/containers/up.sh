#!/bin/sh
# docker-compose.yml brought up with podman-compose, in the order Docker Compose follows by itself.
# podman-compose 1.0 ignores `condition: service_healthy`/`service_completed_successfully` and
# fails on a two-deep depends_on chain, and podman without systemd never runs a HEALTHCHECK by
# itself; so each stage is started with --no-deps and its condition is waited for here:
#   1. postgres, nats, idp          healthy (their own HEALTHCHECK, run by `podman healthcheck run`)
#   2. migrate                      exited 0
#   3. sandbox                      healthy
#   4. the four services            /readyz 200 on their published ports
#   5. the console                  /readyz 200 on 8105 (its sessions table migrated)
# Usage: deploy/containers/up.sh   (from anywhere; images built beforehand, see ci.sh)
set -eu
cd "$(dirname "$0")/../.."
project=bangfu
wait_for=${BANGFU_UP_TIMEOUT:-180}
# podman-compose is chatty (and, without systemd, warns of every healthcheck timer it cannot
# add): its output goes to a log, shown when a stage fails.
log=${BANGFU_UP_LOG:-${TMPDIR:-/tmp}/bangfu-up.log}
: > "$log"
compose() { podman-compose -p $project -f docker-compose.yml "$@" >>"$log" 2>&1 || { cat "$log" >&2; return 1; }; }

healthy() {  # NAME: until its healthcheck passes, or give up after $wait_for seconds
  deadline=$(($(date +%s) + wait_for))
  until podman healthcheck run "${project}_$1_1" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "up: $1 not healthy after ${wait_for}s" >&2; return 1; }
    sleep 1
  done
  echo "up: $1 healthy"
}

ready() {  # NAME PORT: until http://127.0.0.1:PORT/readyz answers 200
  deadline=$(($(date +%s) + wait_for))
  until curl -fs -o /dev/null "http://127.0.0.1:$2/readyz"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "up: $1 not ready after ${wait_for}s" >&2; return 1; }
    sleep 1
  done
  echo "up: $1 ready"
}

compose up -d --no-deps --no-build postgres nats idp
healthy postgres
healthy nats
healthy idp

compose up -d --no-deps --no-build migrate
status=$(podman wait "${project}_migrate_1")
[ "$status" = 0 ] || { podman logs "${project}_migrate_1" >&2; echo "up: migrate exited $status" >&2; exit 1; }
echo "up: migrations applied"

compose up -d --no-deps --no-build sandbox
healthy sandbox

compose up -d --no-deps --no-build registry verification benefits notifications
ready registry 8101
ready verification 8102
ready benefits 8103
ready notifications 8104

compose up -d --no-deps --no-build console
ready console 8105
