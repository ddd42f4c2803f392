#!/usr/bin/env bash
# Install (when missing) and start what freshen and its tests need on one Debian 12 machine, as
# root: the Docker Engine, an OCI registry on 127.0.0.1:5000, Redis on 127.0.0.1:6379, moto
# server on 127.0.0.1:5050, the local Debian + Python base image, and the project's virtual
# environment in .venv. Idempotent: whatever already runs is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
state=${FRESHEN_DEV_STATE:-/var/lib/freshen-dev}
mkdir -p "$state/redis" "$state/registry"
log() { printf '[services] %s\n' "$*"; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$((limit * 4))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  log "$what did not come up in ${limit}s"; return 1
}

packages=(docker.io docker-registry redis-server debootstrap git curl ca-certificates docker-compose chromium)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  # Default networking: builds use the bridge (egress to package indexes through NAT, no way to
  # the host's loopback services); each test gets an --internal network of its own (no egress).
  log "starting dockerd (default networking)"
  nohup dockerd >"$state/dockerd.log" 2>&1 &
  wait_for 60 dockerd docker info
fi

# A second, independent engine for the two-engine scale-out test (tests/faults/test_scaleout.py):
# its own socket, data root, exec root (and so its own containerd), pid file, config file and
# identity key. Its default bridge is its own (freshen2br: `--bridge=none` would delete the first
# engine's docker0) and it writes no iptables rules (the first engine owns them), so its
# containers have no egress; its networks come from a pool the first engine does not use.
# It shares only the registry, which it reaches on 127.0.0.1 (insecure by default on loopback).
docker2=unix:///run/freshen-docker2.sock
if ! DOCKER_HOST=$docker2 docker info >/dev/null 2>&1; then
  log "starting a second dockerd on $docker2 (data root /var/lib/freshen-docker2)"
  mkdir -p /var/lib/freshen-docker2
  echo '{"deprecated-key-path": "/var/lib/freshen-docker2/key.json"}' >"$state/docker2.json"
  if ! ip link show freshen2br >/dev/null 2>&1; then
    ip link add freshen2br type bridge
    ip addr add 10.230.0.1/24 dev freshen2br
  fi
  ip link set freshen2br up
  nohup dockerd --host "$docker2" --data-root /var/lib/freshen-docker2 \
    --exec-root /run/freshen-docker2 --pidfile /run/freshen-docker2.pid \
    --config-file "$state/docker2.json" \
    --iptables=false --ip-forward=false --bridge=freshen2br \
    --default-address-pool base=10.231.0.0/16,size=24 >"$state/dockerd2.log" 2>&1 &
  wait_for 60 "second dockerd" env DOCKER_HOST=$docker2 docker info
fi

if ! curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1; then
  log "starting the registry on 127.0.0.1:5000"
  cat >"$state/registry.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $state/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YAML
  nohup docker-registry serve "$state/registry.yml" >"$state/registry.log" 2>&1 &
  wait_for 30 registry curl -fsS http://127.0.0.1:5000/v2/
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting redis on 127.0.0.1:6379 (durability from deploy/redis.conf)"
  redis-server "$PWD/deploy/redis.conf" --bind 127.0.0.1 --port 6379 \
    --dir "$state/redis" --daemonize yes --logfile "$state/redis.log"
  wait_for 30 redis redis-cli -h 127.0.0.1 -p 6379 ping
fi

stamp=.venv/.freshen-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing the project into .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q -e '.[test]'
  echo "$want" >"$stamp"
fi

if ! curl -fsS -o /dev/null http://127.0.0.1:5050/moto-api/ 2>/dev/null; then
  log "starting moto server on 127.0.0.1:5050"
  nohup .venv/bin/moto_server -H 127.0.0.1 -p 5050 >"$state/moto.log" 2>&1 &
  wait_for 30 moto curl -fsS -o /dev/null http://127.0.0.1:5050/moto-api/
fi

bash scripts/base-image.sh
log "ready: docker, registry 127.0.0.1:5000, redis 127.0.0.1:6379, moto 127.0.0.1:5050"
