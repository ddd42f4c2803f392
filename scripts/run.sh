#!/usr/bin/env bash
# Run freshen on this machine (after scripts/services.sh): one beat, one worker per queue,
# Flower on http://127.0.0.1:5555, /metrics on 127.0.0.1:9808 and the notifier, in the
# foreground; Ctrl-C stops them all.
# Settings come from FRESHEN_* variables (see .env.example); a .env file here is read first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .env ]; then set -a; . ./.env; set +a; fi
export FRESHEN_GIT_WORKDIR=${FRESHEN_GIT_WORKDIR:-$PWD/.freshen/git}
# The registry of scripts/services.sh: the credentials it generated (unless set here) for the
# processes that push, and its read-only anonymous view (127.0.0.1:5001) for the ones that hold
# none. FRESHEN_PULL_REGISTRY= (empty) reads the push registry instead.
state=${FRESHEN_DEV_STATE:-/var/lib/freshen-dev}
unset FRESHEN_DEV_STATE  # not a freshen setting: an unknown FRESHEN_* name stops the workers
if [ "${FRESHEN_PUSH_REGISTRY:-127.0.0.1:5000}" = 127.0.0.1:5000 ]; then
  if [ -z "${FRESHEN_REGISTRY_PASSWORD:-}" ] && [ -r "$state/registry.env" ]; then
    set -a; . "$state/registry.env"; set +a
  fi
  export FRESHEN_PULL_REGISTRY=${FRESHEN_PULL_REGISTRY-127.0.0.1:5001}
fi
mkdir -p .freshen
celery=.venv/bin/celery
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
# Each process gets only the secrets it uses: the git token only the promote worker, the AWS
# test secret only the test worker (Flower not even the key id), the registry credentials only
# the workers that push (build, promote). The check worker holds none:
# it reads base images anonymously (bases must be public, or on 127.0.0.1:5001 here) and its
# audit reads freshen's own tags through FRESHEN_PULL_REGISTRY.
without() {  # without VAR... -- COMMAND...: COMMAND with the named variables removed
  local drop=()
  while [ "$1" != "--" ]; do drop+=(-u "$1"); shift; done
  shift
  env "${drop[@]}" "$@"
}
no_git=FRESHEN_GIT_TOKEN no_aws=FRESHEN_AWS_SECRET_ACCESS_KEY no_aws_id=FRESHEN_AWS_ACCESS_KEY_ID
no_registry=(FRESHEN_REGISTRY_USERNAME FRESHEN_REGISTRY_PASSWORD)
no_notify=FRESHEN_NOTIFY_URLS  # the Apprise URLs: the notifier's only
# Checks wait on the network: four batches at a time check 10,000 idle images in about 20 s
# (BENCHMARKS.md § 2).
without "$no_notify" "$no_git" "$no_aws" "${no_registry[@]}" -- \
  "$celery" -A workers.app worker -Q check -n "check@%h" -c 4 -E &
pids+=($!)
without "$no_notify" "$no_git" "$no_aws" -- "$celery" -A workers.app worker -Q build -n "build@%h" -c 1 -E &
pids+=($!)
without "$no_notify" "$no_git" "${no_registry[@]}" -- \
  "$celery" -A workers.app worker -Q test -n "test@%h" -c 1 -E &
pids+=($!)
without "$no_notify" "$no_aws" -- "$celery" -A workers.app worker -Q promote -n "promote@%h" -c 1 -E &
pids+=($!)
without "$no_notify" "$no_git" "$no_aws" "${no_registry[@]}" -- "$celery" -A workers.app beat -s .freshen/beat-schedule &
pids+=($!)
# Prometheus /metrics on 127.0.0.1:9808 (FRESHEN_METRICS_ADDRESS, FRESHEN_METRICS_PORT); it reads
# Redis only.
without "$no_notify" "$no_git" "$no_aws" "$no_aws_id" "${no_registry[@]}" -- .venv/bin/python -m shared.metrics &
pids+=($!)
# Notifications to FRESHEN_NOTIFY_URLS (none: it sends nothing); it reads Redis only.
without "$no_git" "$no_aws" "$no_aws_id" "${no_registry[@]}" -- .venv/bin/python -m shared.notify &
pids+=($!)
# Flower's login comes from FLOWER_PASSWORD, else one generated on first start and kept in a
# file only root reads; it reaches Flower through its environment, never a command line.
if [ -z "${FLOWER_PASSWORD:-}" ]; then
  secret=.freshen/flower-password
  [ -s "$secret" ] || (umask 077 && .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))' >"$secret")
  FLOWER_PASSWORD=$(cat "$secret")
  echo "Flower: http://127.0.0.1:5555, user ${FLOWER_USER:-admin}, password in $PWD/$secret"
fi
# Its task list shows each task's image and run ("image=awscli run=8a14…", the task's args).
FLOWER_TASKS_COLUMNS=${FLOWER_TASKS_COLUMNS:-name,args,state,received,started,runtime,worker,uuid} \
FLOWER_BASIC_AUTH="${FLOWER_USER:-admin}:$FLOWER_PASSWORD" \
  without "$no_notify" "$no_git" "$no_aws" "$no_aws_id" "${no_registry[@]}" -- "$celery" -A workers.app flower \
  --address=127.0.0.1 --port=5555 &
pids+=($!)
wait -n
