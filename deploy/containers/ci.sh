#!/bin/sh
# The container proof CI runs (.ci/run): build the suite's image and the provider's with podman,
# start docker-compose.yml (in stages, up.sh), wait for every /readyz, file a household with a
# token from the provider and see its event on the stream inside the stack, see the console
# send an unsigned visitor to the provider's sign-in, then tear it all
# down, volumes included. Prints the image sizes and the build and start-up times.
# Needs root on Debian bookworm (podman from apt; stand-in base images, see build-bases.sh) and
# the project's .venv (its python reads the JSON answers).
set -eu
cd "$(dirname "$0")/../.."
here=deploy/containers
project=bangfu
ca=/etc/ssl/certs/ca-certificates.crt
compose="podman-compose -p $project -f docker-compose.yml"

down() {
  $compose down -v >/dev/null 2>&1 || true
  podman volume ls -q | grep "^${project}_" | xargs -r podman volume rm -f >/dev/null 2>&1 || true
}

failed() {
  echo "containers: FAILED; the last lines of each container's log:" >&2
  for name in $(podman ps -a --format '{{.Names}}' | grep "^${project}_"); do
    echo "--- $name" >&2
    podman logs --tail 30 "$name" >&2 2>&1 || true
  done
  down
}

seconds() { date +%s; }

sh $here/setup-podman.sh >/dev/null
sh $here/build-bases.sh >/dev/null
down  # a stack left over from an interrupted run

start=$(seconds)
podman build -q --format docker -v "$ca:$ca:ro" -t bangfu:latest -f deploy/Dockerfile . >/dev/null
built=$(seconds)
podman build -q --format docker -v "$ca:$ca:ro" -t bangfu-idp:latest deploy/idp >/dev/null
idp_built=$(seconds)
echo "containers: bangfu image built in $((built - start)) s," \
  "$(podman image inspect bangfu:latest --format '{{.Size}}' | awk '{printf "%d MB", $1 / 1e6}');" \
  "provider image in $((idp_built - built)) s," \
  "$(podman image inspect bangfu-idp:latest --format '{{.Size}}' | awk '{printf "%d MB", $1 / 1e6}')"

trap failed EXIT
sh $here/up.sh
up=$(seconds)
echo "containers: every service ready $((up - idp_built)) s after the first container started"

# A department system's call: a token from the provider (client credentials; the token
# endpoint asked directly, as docs/identity.md shows for a host without an `idp` hosts entry),
# then a filing.
token=$(curl -sS --fail-with-body -u dept-4113:dev-only-dept-4113-secret \
  -d grant_type=client_credentials http://127.0.0.1:8180/token \
  | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
filed=$(curl -sS --fail-with-body -X POST http://127.0.0.1:8101/v1/households \
  -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"location": {"region": "411302", "address": "建设路12号"},
       "category": "dibao", "causes": ["illness"],
       "members": [{"name": "张三明", "identity_number": "411302198005171232", "relation": "head"}]}')
household=$(printf '%s' "$filed" | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["id"])')
echo "containers: filed household $household"

# Its event, read from JetStream inside the stack (NATS is not published outside it).
event=$(timeout 60 podman exec "${project}_registry_1" \
  bangfu events tail --region 411302 --since 10m --count 1)
printf '%s' "$event" | .venv/bin/python -c '
import json, sys
event = json.loads(sys.stdin.read())
assert event["type"] == "cn.bangfu.registry.household.applied.v1", event["type"]
assert sys.argv[1] in json.dumps(event), event
print("containers: saw", event["type"], "for", sys.argv[1])
' "$household"

# The console answers, shows an unsigned visitor the sign-in, sends a page that needs one to
# it, and the sign-in to the provider under its compose issuer (its discovery read inside the
# stack).
home=$(curl -sS --fail-with-body http://127.0.0.1:8105/)
case $home in *'href="/auth/login"'*) ;; *) echo "containers: the console's home has no sign-in" >&2; exit 1 ;; esac
to_login=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' http://127.0.0.1:8105/households)
[ "$to_login" = "303 http://127.0.0.1:8105/auth/login?next=/households" ] \
  || { echo "containers: /households answered $to_login, not the sign-in" >&2; exit 1; }
to_idp=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' http://127.0.0.1:8105/auth/login)
case $to_idp in "303 http://idp:8180/"*) ;; *) echo "containers: sign-in went to $to_idp" >&2; exit 1 ;; esac
echo "containers: the console sends an unsigned visitor to sign in at the provider"

trap - EXIT
down
echo "containers: passed in $(($(seconds) - start)) s; stack and volumes removed"
