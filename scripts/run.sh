#!/usr/bin/env bash
# Run freshen on this machine (after scripts/services.sh): one beat, one worker per queue and
# Flower on http://127.0.0.1:5555, in the foreground; Ctrl-C stops them all.
# Settings come from FRESHEN_* variables (see .env.example); a .env file here is read first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .env ]; then set -a; . ./.env; set +a; fi
export FRESHEN_GIT_WORKDIR=${FRESHEN_GIT_WORKDIR:-$PWD/.freshen/git}
mkdir -p .freshen
celery=.venv/bin/celery
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
# Checks wait on the network: two at a time keep 1000 idle images inside 10 s (BENCHMARKS.md).
"$celery" -A workers.app worker -Q check -n "check@%h" -c 2 -E &
pids+=($!)
for queue in build test promote; do
  "$celery" -A workers.app worker -Q "$queue" -n "$queue@%h" -c 1 -E &
  pids+=($!)
done
"$celery" -A workers.app beat -s .freshen/beat-schedule &
pids+=($!)
"$celery" -A workers.app flower --address=127.0.0.1 --port=5555 \
  --basic-auth="${FLOWER_USER:-admin}:${FLOWER_PASSWORD:-change-me}" &
pids+=($!)
wait -n
