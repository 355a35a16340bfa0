#!/usr/bin/env bash
# Deploys a new version of one service: its migration, then its replicas one at a time, while
# every other container keeps running.
#
# Usage: deploy/rollout.sh [-f COMPOSE_FILE] [--env-file FILE] [-p PROJECT] SERVICE TAG
#   -f COMPOSE_FILE   default: deploy/compose/compose.yaml beside this script
#   --env-file FILE   default: .env beside the Compose file
#   -p PROJECT        the Compose project (default: Compose's own choice)
#   SERVICE TAG       e.g. orders 0.2.0: the image agora/orders:0.2.0 must exist
# Environment: COMPOSE (default: `docker compose` when it works, else docker-compose), DOCKER
# (default docker), ROLLOUT_TIMEOUT (seconds a replica may take to turn healthy, default 180).
#
# The tag is written to the env file (AGORA_<SERVICE>_TAG), so it stays: a later `up` runs the
# same version. Each replica is recreated with `up -d --no-deps <service>-<n>`: Compose stops the
# old container (SIGTERM, an ordered stop within stop_grace_period: its callers go to the other
# replicas) and starts the new one; the next replica is replaced only once this one is healthy.
set -euo pipefail
source "$(dirname "$0")/common.sh"

docker="${DOCKER:-docker}"
timeout="${ROLLOUT_TIMEOUT:-180}"
compose_file="$(cd "$(dirname "$0")" && pwd)/compose/compose.yaml"
env_file=""
project=()

while (($#)); do
    case "$1" in
        -f) compose_file="${2:?-f needs a Compose file}"; shift 2 ;;
        --env-file) env_file="${2:?--env-file needs a file}"; shift 2 ;;
        -p) project=(-p "${2:?-p needs a project name}"); shift 2 ;;
        -h | --help) usage 12 ;;
        -*) fail "unknown option $1 (see --help)" ;;
        *) break ;;
    esac
done
(($# == 2)) || fail "usage: $0 [-f COMPOSE_FILE] [--env-file FILE] [-p PROJECT] SERVICE TAG"
service="$1"
tag="$2"
[[ "$service" =~ ^[a-z][a-z0-9-]*$ ]] || fail "$service is not a service name"
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || fail "$tag is not an image tag"
[[ -f "$compose_file" ]] || fail "no Compose file at $compose_file"
env_file="${env_file:-$(dirname "$compose_file")/.env}"
[[ -f "$env_file" ]] || fail "no env file at $env_file (see deploy/compose/.env.example)"

if [[ -n "${COMPOSE:-}" ]]; then
    read -r -a compose <<<"$COMPOSE"
elif "$docker" compose version >/dev/null 2>&1; then
    compose=("$docker" compose)
else
    compose=(docker-compose)
fi
compose+=(--env-file "$env_file" "${project[@]}" -f "$compose_file")

variable="AGORA_$(tr 'a-z-' 'A-Z_' <<<"$service")_TAG"
image="agora/$service:$tag"
"$docker" image inspect "$image" >/dev/null 2>&1 || fail "no image $image: build it first"

mapfile -t replicas < <("${compose[@]}" config --services | grep -E "^$service-[0-9]+\$" | sort -t- -k2 -n)
((${#replicas[@]})) || fail "the Compose file has no replicas of $service ($service-0, ...)"

# The tag, kept in the env file: replaced when set, added otherwise.
if grep -q "^$variable=" "$env_file"; then
    sed -i "s|^$variable=.*|$variable=$tag|" "$env_file"
else
    printf '%s=%s\n' "$variable" "$tag" >>"$env_file"
fi
say "$variable=$tag in $env_file"

health() { # the container's health, or its state when it has stopped
    "$docker" inspect -f '{{if eq .State.Status "running"}}{{if .State.Health}}{{.State.Health.Status}}{{else}}running{{end}}{{else}}{{.State.Status}}{{end}}' "$1"
}

wait_healthy() { # wait_healthy SERVICE: until its container is healthy, within the bound
    local name="$1" container state deadline=$((SECONDS + timeout))
    container="$("${compose[@]}" ps -q "$name")"
    [[ -n "$container" ]] || fail "$name has no container"
    while true; do
        state="$(health "$container")"
        case "$state" in
            healthy) return ;;
            unhealthy | exited | dead | restarting)
                "${compose[@]}" logs --no-color --tail 40 "$name" >&2 || true
                fail "$name is $state" ;;
        esac
        ((SECONDS < deadline)) || fail "$name was not healthy after $timeout s (it is $state)"
        sleep 1
    done
}

started=$SECONDS
say "migrating $service with $image"
"${compose[@]}" run --rm -T --no-deps "$service-migrate" >&2 || fail "the migration of $service failed"
for replica in "${replicas[@]}"; do
    say "replacing $replica"
    "${compose[@]}" up -d --no-deps "$replica"
    wait_healthy "$replica"
    say "$replica runs $image and is healthy"
done
say "rolled out $image to ${#replicas[@]} replica(s) in $((SECONDS - started)) s"
